package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

var (
	// ErrNoMigration means the store holds no migration yet.
	ErrNoMigration = errors.New("store: no migration in this directory")
	// ErrLocked means another process has the store open for writing.
	ErrLocked = errors.New("store: the store is in use by a running coordinator")
	// ErrVersion means the file was written by an incompatible version.
	ErrVersion = errors.New("store: unsupported store schema version")
)

// State is where a unit is in its life.
type State string

const (
	StateBlocked State = "blocked"
	StateReady   State = "ready"
	StateRunning State = "running"
	StateDone    State = "done"
	StateFailed  State = "failed"
)

// Phase is where the migration is.
type Phase string

const (
	PhaseSchema   Phase = "schema"
	PhaseCopy     Phase = "copy"
	PhaseFinalize Phase = "finalize"
	PhaseDone     Phase = "done"
	PhaseFailed   Phase = "failed"
	// PhaseFollow: the backfill is complete and changes are applied.
	PhaseFollow Phase = "follow"
	// PhaseCutover: a cutover is applying up to its endpos.
	PhaseCutover Phase = "cutover"
)

// Identity names one database of one cluster.
type Identity struct {
	SystemID      string `json:"system_id"`
	Database      string `json:"database"`
	ServerVersion int    `json:"server_version"`
}

// Timing is how long a named step took.
type Timing struct {
	Name   string `json:"name"`
	Millis int64  `json:"millis"`
}

// Meta is the migration as a whole.
type Meta struct {
	MigrationID string       `json:"migration_id"`
	Source      Identity     `json:"source"`
	Target      Identity     `json:"target"`
	Options     plan.Options `json:"options"`
	Phase       Phase        `json:"phase"`
	// Snapshot is the exported snapshot while the coordinator holds it.
	Snapshot   string    `json:"snapshot,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitempty"`
	Warnings   []string  `json:"warnings,omitempty"`
	Skipped    []string  `json:"skipped,omitempty"`
	// Filters are what the clone was told to leave out.
	Filters *filter.Filter `json:"filters,omitempty"`
	// Timings are the coordinator's own steps (snapshot, dump, pre-data).
	Timings []Timing `json:"timings,omitempty"`
	// Follow is set for a live migration: the names of what it created on
	// the source and target, so cleanup can drop exactly those.
	Follow       bool     `json:"follow,omitempty"`
	Slot         string   `json:"slot,omitempty"`
	Publications []string `json:"publications,omitempty"`
	Origin       string   `json:"origin,omitempty"`
	// StartLSN is the slot's consistent point.
	StartLSN string `json:"start_lsn,omitempty"`
	// Endpos is the cutover's LSN once one was asked for.
	Endpos string      `json:"endpos,omitempty"`
	CDC    CDCProgress `json:"cdc,omitempty"`
	// Cleaned is set once cleanup has dropped everything.
	Cleaned bool `json:"cleaned,omitempty"`
}

// CDCProgress is the cdcnode's last report.
type CDCProgress struct {
	ReceivedLSN       string    `json:"received_lsn,omitempty"`
	FlushedLSN        string    `json:"flushed_lsn,omitempty"`
	AppliedLSN        string    `json:"applied_lsn,omitempty"`
	SpoolBytes        int64     `json:"spool_bytes,omitempty"`
	ChangesApplied    int64     `json:"changes_applied,omitempty"`
	AppliedCommitTime time.Time `json:"applied_commit_time,omitempty"`
	ReportedAt        time.Time `json:"reported_at,omitempty"`
}

// Unit is a planned unit and its runtime state.
type Unit struct {
	plan.Unit
	State       State     `json:"state"`
	Attempts    int       `json:"attempts"`
	WorkerID    string    `json:"worker_id,omitempty"`
	Token       string    `json:"token,omitempty"`
	LeaseExpiry time.Time `json:"lease_expiry,omitempty"`
	// NotBefore delays a redelivery.
	NotBefore  time.Time `json:"not_before,omitempty"`
	Rows       int64     `json:"rows"`
	Bytes      int64     `json:"bytes"`
	StartedAt  time.Time `json:"started_at,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	// Verify is set for KindVerify units.
	Verify *VerifyRange `json:"verify,omitempty"`
}

// KindVerify units count and checksum one range of one table on both
// sides for AdminService/Verify. They are not part of the plan: a Verify
// call adds them and removes them, and they only read.
const KindVerify plan.Kind = "verify"

// VerifyRange is what a KindVerify unit compares, and once done what it
// found.
type VerifyRange struct {
	Schema string `json:"schema"`
	Table  string `json:"table"`
	// Key is the integer key column; "" is the whole table. Lower and
	// Upper bound it, [Lower, Upper); nil is open.
	Key   string `json:"key,omitempty"`
	Lower *int64 `json:"lower,omitempty"`
	Upper *int64 `json:"upper,omitempty"`
	// SourceSnapshot and TargetSnapshot are the Verify's exported snapshots.
	SourceSnapshot string `json:"source_snapshot,omitempty"`
	TargetSnapshot string `json:"target_snapshot,omitempty"`
	// Source and Target are the counts and checksums of a done unit.
	Source *RangeSum `json:"source,omitempty"`
	Target *RangeSum `json:"target,omitempty"`
}

// RangeSum is one side's row count and checksum of a range.
type RangeSum struct {
	Rows int64  `json:"rows"`
	Sum  string `json:"sum"`
}

// Worker is a worker that registered.
type Worker struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Jobs         int       `json:"jobs"`
	RegisteredAt time.Time `json:"registered_at"`
	LastSeen     time.Time `json:"last_seen"`
}

// Epoch is a snapshot tables were copied under, and the LSN it is
// consistent at.
type Epoch struct {
	ID        uint32    `json:"id"`
	Snapshot  string    `json:"snapshot"`
	LSN       string    `json:"lsn"`
	CreatedAt time.Time `json:"created_at"`
}

// Table is a planned table and the epoch its rows were copied under.
type Table struct {
	plan.Table
	EpochID uint32 `json:"epoch_id"`
}

// Store is an open store file.
type Store struct {
	db *bolt.DB
}

// Options open a store.
type Options struct {
	// ReadOnly opens for reading only (status).
	ReadOnly bool
	// Timeout is how long to wait for the file lock; 0 waits one second.
	Timeout time.Duration
}

// Open opens (creating if needed, unless read-only) DIR/pgcaravan.db.
func Open(dir string, opts Options) (*Store, error) {
	path := filepath.Join(dir, FileName)
	if opts.ReadOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, ErrNoMigration)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create directory %s: %w", dir, err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db}
	check := s.checkVersion
	if !opts.ReadOnly {
		check = s.init
	}
	if err := check(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchemaVersion); v == nil {
			return meta.Put(keySchemaVersion, []byte(SchemaVersion))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("init store: %w", err)
	}
	return s.checkVersion()
}

func (s *Store) checkVersion() error {
	return s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return ErrNoMigration
		}
		if v := string(meta.Get(keySchemaVersion)); v != SchemaVersion {
			return fmt.Errorf("%w: file has %q, this binary reads %q", ErrVersion, v, SchemaVersion)
		}
		return nil
	})
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Meta returns the migration, or ErrNoMigration.
func (s *Store) Meta() (Meta, error) {
	var m Meta
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyMigration)
		if v == nil {
			return ErrNoMigration
		}
		return json.Unmarshal(v, &m)
	})
	return m, err
}

// PutMeta writes the migration.
func (s *Store) PutMeta(m Meta) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketMeta), keyMigration, m)
	})
}

// PendingCDC names what a --follow setup creates on the source (and the
// target's replication origin) before the store describes the migration.
// It is written before the first of them is made and removed once the
// migration is saved, so a coordinator that died in between leaves a record
// of what to drop instead of a slot that retains WAL with nobody to know.
type PendingCDC struct {
	MigrationID  string   `json:"migration_id"`
	Slot         string   `json:"slot"`
	Publications []string `json:"publications"`
	Origin       string   `json:"origin"`
}

// Meta is a migration with just the names, for dropping them.
func (p PendingCDC) Meta() Meta {
	return Meta{MigrationID: p.MigrationID, Slot: p.Slot, Publications: p.Publications, Origin: p.Origin}
}

// PutPendingCDC records a --follow setup in progress.
func (s *Store) PutPendingCDC(p PendingCDC) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketMeta), keyPendingCDC, p)
	})
}

// PendingCDC returns the record of a --follow setup that did not finish,
// or nil.
func (s *Store) PendingCDC() (*PendingCDC, error) {
	var p *PendingCDC
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyPendingCDC)
		if v == nil {
			return nil
		}
		p = &PendingCDC{}
		return json.Unmarshal(v, p)
	})
	return p, err
}

// ClearPendingCDC removes the record: the setup finished or was undone.
func (s *Store) ClearPendingCDC() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(keyPendingCDC)
	})
}

// UpdateMeta reads, changes and writes the migration in one transaction.
func (s *Store) UpdateMeta(fn func(*Meta)) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		var m Meta
		v := b.Get(keyMigration)
		if v == nil {
			return ErrNoMigration
		}
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		fn(&m)
		return putJSON(b, keyMigration, m)
	})
}

// SavePlan writes the tables and units of a new plan, with every unit in
// the given state function's state, and the epoch the tables are copied under.
func (s *Store) SavePlan(p plan.Plan, epoch Epoch, state func(plan.Unit) State) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx.Bucket(bucketEpochs), u32(epoch.ID), epoch); err != nil {
			return err
		}
		tables := tx.Bucket(bucketTables)
		for _, t := range p.Tables {
			if err := putJSON(tables, u32(t.OID), Table{Table: t, EpochID: epoch.ID}); err != nil {
				return err
			}
		}
		units := tx.Bucket(bucketUnits)
		for _, u := range p.Units {
			if err := putJSON(units, u64(u.ID), Unit{Unit: u, State: state(u)}); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutTables writes tables (their epochs change when they are recopied).
func (s *Store) PutTables(tables ...Table) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTables)
		for _, t := range tables {
			if err := putJSON(b, u32(t.OID), t); err != nil {
				return fmt.Errorf("put table %d: %w", t.OID, err)
			}
		}
		return nil
	})
}

// PutEpoch writes an epoch.
func (s *Store) PutEpoch(e Epoch) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketEpochs), u32(e.ID), e)
	})
}

// Tables returns every planned table in OID order.
func (s *Store) Tables() ([]Table, error) {
	var out []Table
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTables).ForEach(func(_, v []byte) error {
			var t Table
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// Units returns every unit in ID order.
func (s *Store) Units() ([]Unit, error) {
	var out []Unit
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUnits).ForEach(func(_, v []byte) error {
			var u Unit
			if err := json.Unmarshal(v, &u); err != nil {
				return err
			}
			out = append(out, u)
			return nil
		})
	})
	return out, err
}

// PutUnits writes units in one transaction.
func (s *Store) PutUnits(units ...Unit) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUnits)
		for _, u := range units {
			if err := putJSON(b, u64(u.ID), u); err != nil {
				return fmt.Errorf("put unit %d: %w", u.ID, err)
			}
		}
		return nil
	})
}

// DeleteUnits removes units in one transaction (verify units, once their
// Verify is over).
func (s *Store) DeleteUnits(ids ...uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUnits)
		for _, id := range ids {
			if err := b.Delete(u64(id)); err != nil {
				return fmt.Errorf("delete unit %d: %w", id, err)
			}
		}
		return nil
	})
}

// PutWorker writes a worker.
func (s *Store) PutWorker(w Worker) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketWorkers), []byte(w.ID), w)
	})
}

// Workers returns every worker that registered.
func (s *Store) Workers() ([]Worker, error) {
	var out []Worker
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWorkers).ForEach(func(_, v []byte) error {
			var w Worker
			if err := json.Unmarshal(v, &w); err != nil {
				return err
			}
			out = append(out, w)
			return nil
		})
	})
	return out, err
}

// Epochs returns every epoch.
func (s *Store) Epochs() ([]Epoch, error) {
	var out []Epoch
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEpochs).ForEach(func(_, v []byte) error {
			var e Epoch
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
