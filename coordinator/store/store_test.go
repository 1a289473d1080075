package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

// shortWait bounds how long a test waits for a lock that must not come.
const shortWait = 100 * time.Millisecond

func openT(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open store in %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// at is a wall-clock time that survives a JSON round trip unchanged.
func at(sec int) time.Time { return time.Date(2025, 3, 4, 5, 6, sec, 123456789, time.UTC) }

func testMeta() Meta {
	return Meta{
		MigrationID: "mig-1",
		Source:      Identity{SystemID: "7310000000000000001", Database: "shop", ServerVersion: 160004},
		Target:      Identity{SystemID: "7310000000000000002", Database: "shop copy", ServerVersion: 170002},
		Options:     plan.Options{BinaryCopy: true, LargeObjectsPerUnit: 500, NoOwner: true, NoACL: true},
		Phase:       PhaseCopy,
		Snapshot:    "00000003-00000002-1",
		StartedAt:   at(1),
		Warnings:    []string{"table \"we\"\"ird\" has no replica identity"},
		Skipped:     []string{"s.remote: foreign table"},
		Timings:     []Timing{{Name: "snapshot and catalog", Millis: 12}, {Name: "schema dump", Millis: 345}},
	}
}

func testPlan() plan.Plan {
	return plan.Plan{
		Tables: []plan.Table{
			// Out of OID order, and OIDs whose decimal and byte orders
			// differ (256 sorts after 3 only as big-endian bytes).
			{OID: 70000, Schema: "s", Name: "big", RelKind: "r", Columns: []string{"id", "Größe"}, BinarySafe: true, EstRows: 10, Bytes: 8192},
			{OID: 256, Schema: "Sch ema", Name: `we"ird`, RelKind: "r", Columns: []string{"a"}, Bytes: 1},
			{OID: 3, Schema: "s", Name: "parted", RelKind: "p", Columns: []string{}},
			{OID: 4, Schema: "s", Name: "mv", RelKind: "m", Columns: []string{"n"}, Populated: true},
		},
		Units: []plan.Unit{
			{ID: 256, Kind: plan.KindVacuum, TableOID: 70000, Table: "s.big", Description: "analyze",
				SQL: `ANALYZE "s"."big";`, Transactional: true, DependsOn: []uint64{1, 2}, Size: 8192},
			{ID: 1, Kind: plan.KindCopy, TableOID: 70000, Table: "s.big", Description: "whole table",
				Copy:          &plan.Copy{Schema: "s", Table: "big", Columns: []string{"id", "Größe"}, Format: plan.FormatBinary, TruncateFreeze: true, StartBlock: 10, EndBlock: 20},
				Transactional: true, NeedsSnapshot: true, Size: 8192},
			{ID: 2, Kind: plan.KindIndex, TableOID: 70000, Table: "s.big", Description: "big_pkey",
				DumpIDs: []int{301, 302}, Transactional: true, DependsOn: []uint64{1}, Size: 8192},
			{ID: 3, Kind: plan.KindLargeObjects, Description: "large objects 5-9",
				LargeObjects: &plan.LargeObjects{FirstOID: 5, LastOID: 9, Count: 3, NoOwner: true}, Transactional: true, NeedsSnapshot: true, Size: 3},
		},
		Skipped: []string{"ignored by the store"},
	}
}

func stateByDeps(u plan.Unit) State {
	if len(u.DependsOn) == 0 {
		return StateReady
	}
	return StateBlocked
}

func TestFreshStoreHasNoMigration(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "dir")
	s := openT(t, dir, Options{})
	if _, err := s.Meta(); !errors.Is(err, ErrNoMigration) {
		t.Errorf("Meta on a fresh store: %v, want ErrNoMigration", err)
	}
	called := false
	if err := s.UpdateMeta(func(*Meta) { called = true }); !errors.Is(err, ErrNoMigration) {
		t.Errorf("UpdateMeta on a fresh store: %v, want ErrNoMigration", err)
	}
	if called {
		t.Error("UpdateMeta called fn without a migration")
	}
	tables, err := s.Tables()
	if err != nil || len(tables) != 0 {
		t.Errorf("Tables = %v, %v; want none", tables, err)
	}
	units, err := s.Units()
	if err != nil || len(units) != 0 {
		t.Errorf("Units = %v, %v; want none", units, err)
	}
	workers, err := s.Workers()
	if err != nil || len(workers) != 0 {
		t.Errorf("Workers = %v, %v; want none", workers, err)
	}
	epochs, err := s.Epochs()
	if err != nil || len(epochs) != 0 {
		t.Errorf("Epochs = %v, %v; want none", epochs, err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatalf("store file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("store file mode %v: readable by others", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("created directory mode %v, want 0700", perm)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	want := testMeta()
	if err := s.PutMeta(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Meta()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Meta after PutMeta:\n got %+v\nwant %+v", got, want)
	}

	err = s.UpdateMeta(func(m *Meta) {
		if !reflect.DeepEqual(*m, want) {
			t.Errorf("UpdateMeta fn saw %+v, want %+v", *m, want)
		}
		m.Phase = PhaseDone
		m.Snapshot = ""
		m.FinishedAt = at(59)
		m.Warnings = append(m.Warnings, "second")
	})
	if err != nil {
		t.Fatal(err)
	}
	want.Phase, want.Snapshot, want.FinishedAt = PhaseDone, "", at(59)
	want.Warnings = append(want.Warnings, "second")
	if got, err = s.Meta(); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Meta after UpdateMeta = %+v, %v\nwant %+v", got, err, want)
	}

	// PutMeta replaces the whole migration.
	if err := s.PutMeta(Meta{MigrationID: "mig-2"}); err != nil {
		t.Fatal(err)
	}
	if got, err = s.Meta(); err != nil || !reflect.DeepEqual(got, Meta{MigrationID: "mig-2"}) {
		t.Errorf("Meta after a second PutMeta = %+v, %v", got, err)
	}
}

func TestSavePlanRoundTrip(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	p := testPlan()
	epoch := Epoch{ID: 7, Snapshot: "00000003-0000001A-1", LSN: "0/1A2B3C4D", CreatedAt: at(2)}
	var seen []uint64
	err := s.SavePlan(p, epoch, func(u plan.Unit) State {
		seen = append(seen, u.ID)
		return stateByDeps(u)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{256, 1, 2, 3}; !reflect.DeepEqual(seen, want) {
		t.Errorf("state fn called for %v, want every unit once %v", seen, want)
	}

	tables, err := s.Tables()
	if err != nil {
		t.Fatal(err)
	}
	wantTables := []Table{{p.Tables[2], 7}, {p.Tables[3], 7}, {p.Tables[1], 7}, {p.Tables[0], 7}}
	if !reflect.DeepEqual(tables, wantTables) {
		t.Errorf("Tables (want OID order with the epoch):\n got %+v\nwant %+v", tables, wantTables)
	}

	units, err := s.Units()
	if err != nil {
		t.Fatal(err)
	}
	wantUnits := []Unit{
		{Unit: p.Units[1], State: StateReady},
		{Unit: p.Units[2], State: StateBlocked},
		{Unit: p.Units[3], State: StateReady},
		{Unit: p.Units[0], State: StateBlocked},
	}
	if !reflect.DeepEqual(units, wantUnits) {
		t.Errorf("Units (want ID order):\n got %+v\nwant %+v", units, wantUnits)
	}

	epochs, err := s.Epochs()
	if err != nil || !reflect.DeepEqual(epochs, []Epoch{epoch}) {
		t.Errorf("Epochs = %+v, %v; want %+v", epochs, err, epoch)
	}
	// The plan is not the migration: Meta stays absent.
	if _, err := s.Meta(); !errors.Is(err, ErrNoMigration) {
		t.Errorf("Meta after SavePlan only: %v, want ErrNoMigration", err)
	}
}

func TestPutUnitsAndWorkers(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	p := testPlan()
	if err := s.SavePlan(p, Epoch{ID: 1}, stateByDeps); err != nil {
		t.Fatal(err)
	}
	units, err := s.Units()
	if err != nil {
		t.Fatal(err)
	}
	running := units[0]
	running.State, running.Attempts, running.WorkerID, running.Token = StateRunning, 2, "w1", "tok"
	running.LeaseExpiry, running.NotBefore, running.StartedAt = at(30), at(20), at(25)
	running.Rows, running.Bytes = 1000, 65536
	failed := units[2]
	failed.State, failed.Attempts, failed.LastError, failed.FinishedAt = StateFailed, 5, `ERROR: relation "x" does not exist`, at(40)
	if err := s.PutUnits(running, failed); err != nil {
		t.Fatal(err)
	}
	got, err := s.Units()
	if err != nil {
		t.Fatal(err)
	}
	want := []Unit{running, units[1], failed, units[3]}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Units after PutUnits:\n got %+v\nwant %+v", got, want)
	}

	w1 := Worker{ID: "w1", Name: "host-a", Jobs: 4, RegisteredAt: at(1), LastSeen: at(9)}
	w2 := Worker{ID: "w0", Name: "host-b", Jobs: 1, RegisteredAt: at(2), LastSeen: at(3)}
	for _, w := range []Worker{w1, w2} {
		if err := s.PutWorker(w); err != nil {
			t.Fatal(err)
		}
	}
	w1.LastSeen = at(10)
	if err := s.PutWorker(w1); err != nil {
		t.Fatal(err)
	}
	workers, err := s.Workers()
	if err != nil || !reflect.DeepEqual(workers, []Worker{w2, w1}) {
		t.Errorf("Workers = %+v, %v; want %+v (by ID, updated in place)", workers, err, []Worker{w2, w1})
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := testPlan()
	epoch := Epoch{ID: 1, Snapshot: "snap", LSN: "0/16B3748", CreatedAt: at(5)}
	worker := Worker{ID: "w1", Name: "n", Jobs: 2, RegisteredAt: at(1), LastSeen: at(2)}
	if err := s.PutMeta(testMeta()); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePlan(p, epoch, stateByDeps); err != nil {
		t.Fatal(err)
	}
	if err := s.PutWorker(worker); err != nil {
		t.Fatal(err)
	}
	wantTables, _ := s.Tables()
	wantUnits, _ := s.Units()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for _, opts := range []Options{{}, {ReadOnly: true}} {
		s := openT(t, dir, opts)
		if m, err := s.Meta(); err != nil || !reflect.DeepEqual(m, testMeta()) {
			t.Errorf("%+v: Meta after reopen = %+v, %v", opts, m, err)
		}
		if tables, err := s.Tables(); err != nil || !reflect.DeepEqual(tables, wantTables) {
			t.Errorf("%+v: Tables after reopen = %+v, %v", opts, tables, err)
		}
		if units, err := s.Units(); err != nil || !reflect.DeepEqual(units, wantUnits) {
			t.Errorf("%+v: Units after reopen = %+v, %v", opts, units, err)
		}
		if ws, err := s.Workers(); err != nil || !reflect.DeepEqual(ws, []Worker{worker}) {
			t.Errorf("%+v: Workers after reopen = %+v, %v", opts, ws, err)
		}
		if es, err := s.Epochs(); err != nil || !reflect.DeepEqual(es, []Epoch{epoch}) {
			t.Errorf("%+v: Epochs after reopen = %+v, %v", opts, es, err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

func TestReadOnly(t *testing.T) {
	t.Run("missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "never-created")
		s, err := Open(dir, Options{ReadOnly: true})
		if !errors.Is(err, ErrNoMigration) {
			t.Errorf("read-only open of a missing dir: %v, want ErrNoMigration", err)
		}
		if s != nil {
			s.Close()
			t.Error("read-only open of a missing dir returned a store")
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("read-only open created %s (stat: %v)", dir, err)
		}
	})

	t.Run("directory without a store file", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Open(dir, Options{ReadOnly: true}); !errors.Is(err, ErrNoMigration) {
			t.Errorf("read-only open of an empty dir: %v, want ErrNoMigration", err)
		}
		if _, err := os.Stat(filepath.Join(dir, FileName)); !os.IsNotExist(err) {
			t.Errorf("read-only open created the store file (stat: %v)", err)
		}
	})

	t.Run("writes are refused", func(t *testing.T) {
		dir := t.TempDir()
		w := openT(t, dir, Options{})
		if err := w.PutMeta(testMeta()); err != nil {
			t.Fatal(err)
		}
		w.Close()
		r := openT(t, dir, Options{ReadOnly: true})
		if err := r.PutMeta(Meta{MigrationID: "other"}); err == nil {
			t.Error("PutMeta on a read-only store succeeded")
		}
		if m, err := r.Meta(); err != nil || m.MigrationID != "mig-1" {
			t.Errorf("Meta = %+v, %v", m, err)
		}
	})

	t.Run("readers share the file", func(t *testing.T) {
		dir := t.TempDir()
		openT(t, dir, Options{}).Close()
		r1 := openT(t, dir, Options{ReadOnly: true, Timeout: shortWait})
		r2 := openT(t, dir, Options{ReadOnly: true, Timeout: shortWait})
		if _, err := r1.Units(); err != nil {
			t.Error(err)
		}
		if _, err := r2.Units(); err != nil {
			t.Error(err)
		}
	})
}

func TestSecondWriterIsLocked(t *testing.T) {
	dir := t.TempDir()
	first := openT(t, dir, Options{})
	if err := first.PutMeta(testMeta()); err != nil {
		t.Fatal(err)
	}

	for _, opts := range []Options{
		{Timeout: shortWait},
		// status reads with a read-only open while a coordinator runs.
		{ReadOnly: true, Timeout: shortWait},
	} {
		done := make(chan error, 1)
		go func() {
			s, err := Open(dir, opts)
			if err == nil {
				s.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrLocked) {
				t.Errorf("Open(%+v) while a writer has the store: %v, want ErrLocked", opts, err)
			}
			if err != nil && !strings.Contains(err.Error(), dir) {
				t.Errorf("Open error %q does not name the store", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%+v) still waiting for the lock after 5s with a %v timeout", opts, opts.Timeout)
		}
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := openT(t, dir, Options{Timeout: shortWait})
	if m, err := second.Meta(); err != nil || m.MigrationID != "mig-1" {
		t.Errorf("Meta through the second writer = %+v, %v", m, err)
	}
}

// setSchemaVersion rewrites the version key of a closed store file with
// bbolt directly, as another pgcaravan version would have written it.
func setSchemaVersion(t *testing.T, dir string, version []byte) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if version == nil {
			return tx.Bucket(bucketMeta).Delete(keySchemaVersion)
		}
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, version)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaVersionMismatch(t *testing.T) {
	for _, version := range []string{"2", "0", "", "1 "} {
		t.Run("version "+version, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			if err := s.PutMeta(testMeta()); err != nil {
				t.Fatal(err)
			}
			s.Close()
			setSchemaVersion(t, dir, []byte(version))

			s, err := Open(dir, Options{Timeout: shortWait})
			if !errors.Is(err, ErrVersion) {
				t.Fatalf("writable Open of a version %q file: %v, want ErrVersion", version, err)
			}
			if s != nil {
				t.Error("writable Open returned a store with ErrVersion")
			}
			if !strings.Contains(err.Error(), `"`+version+`"`) {
				t.Errorf("error %q does not say which version the file has", err)
			}
			// The refused writer released the file: the version is untouched
			// and the file can be opened again.
			s, err = Open(dir, Options{Timeout: shortWait})
			if !errors.Is(err, ErrVersion) {
				t.Errorf("second writable Open: %v, want ErrVersion (not ErrLocked)", err)
			}
			if s != nil {
				s.Close()
			}

			s, err = Open(dir, Options{ReadOnly: true, Timeout: shortWait})
			if !errors.Is(err, ErrVersion) {
				t.Errorf("read-only Open of a version %q file: %v, want ErrVersion", version, err)
			}
			// Open returns the store along with the error here; close it so
			// the file is released (see the report on the read-only path).
			if s != nil {
				s.Close()
			}
		})
	}
}

func TestMatchingVersionIsAccepted(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, Options{}).Close()
	setSchemaVersion(t, dir, []byte(SchemaVersion))
	s := openT(t, dir, Options{})
	if _, err := s.Meta(); !errors.Is(err, ErrNoMigration) {
		t.Errorf("Meta: %v, want ErrNoMigration", err)
	}
}

func TestNotAStoreFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("this is not a bbolt file, it is a text file of some length"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{Timeout: shortWait}, {ReadOnly: true, Timeout: shortWait}} {
		s, err := Open(dir, opts)
		if err == nil {
			s.Close()
			t.Errorf("Open(%+v) of a text file succeeded", opts)
			continue
		}
		if errors.Is(err, ErrLocked) || errors.Is(err, ErrNoMigration) {
			t.Errorf("Open(%+v) of a text file: %v, want a file error", opts, err)
		}
		if s != nil {
			s.Close()
		}
	}
}
