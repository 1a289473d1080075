package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// markerSQL is the done-marker table as execute uses it: the columns its
// queries name. The coordinator creates the real one.
const markerSQL = `CREATE SCHEMA pgcaravan;
CREATE TABLE pgcaravan.unit_done (migration_id text NOT NULL, unit_id bigint NOT NULL, PRIMARY KEY (migration_id, unit_id));`

const execTableSQL = `CREATE TABLE items (id int, t text, bin bytea, a text[], n numeric, doubled int GENERATED ALWAYS AS (id * 2) STORED);`

// execFixture is a source and a target database on one server, with the
// items table on both and the done-marker table on the target, and a
// worker that is never Run: the tests call execute with leases they make.
type execFixture struct {
	c        *pgtest.Cluster
	src, dst string
	w        *Worker
}

func newExecFixture(t *testing.T) *execFixture {
	t.Helper()
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"src", "dst"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, db, execTableSQL); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Exec(ctx, "src", `INSERT INTO items (id, t, bin, a, n)
		SELECT g, E'row\t' || g || E'\n\\N\\', decode(md5(g::text), 'hex'), ARRAY[g::text, NULL, 'a"b'],
		       1234567890123456789012345678901234567890.5 + g
		FROM generate_series(1, 2000) g;
		INSERT INTO items (id) VALUES (0);`)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "dst", markerSQL); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Coordinator = "unused:1"
	cfg.SourceURI, cfg.TargetURI = c.URI("src"), c.URI("dst")
	cfg.TargetSettings = map[string]string{"maintenance_work_mem": "64MB"}
	w, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return &execFixture{c: c, src: c.URI("src"), dst: c.URI("dst"), w: w}
}

func copyLease(id uint64, format pb.CopyFormat, mutate func(*pb.CopySpec)) *pb.Lease {
	spec := &pb.CopySpec{Schema: "public", Table: "items", Columns: []string{"id", "t", "bin", "a", "n"},
		Format: format, TruncateFreeze: true}
	if mutate != nil {
		mutate(spec)
	}
	return &pb.Lease{MigrationId: "m1", Token: "tok", Unit: &pb.Unit{Id: id, Kind: pb.UnitKind_UNIT_KIND_COPY,
		Table: "public.items", Description: "whole table", Copy: spec, Transactional: true}}
}

func one(t *testing.T, uri, sql string) string {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

const checksum = `SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM ONLY items x`

// TestExecuteCopyFormats copies the same table in text and in binary: both
// give the source's rows, once each (TRUNCATE in the unit's transaction),
// and report the rows they copied.
func TestExecuteCopyFormats(t *testing.T) {
	f := newExecFixture(t)
	want := one(t, f.src, checksum)
	for i, format := range []pb.CopyFormat{pb.CopyFormat_COPY_FORMAT_TEXT, pb.CopyFormat_COPY_FORMAT_BINARY, pb.CopyFormat_COPY_FORMAT_TEXT} {
		t.Run(format.String(), func(t *testing.T) {
			var prog progress
			res, err := f.w.execute(t.Context(), copyLease(uint64(i+1), format, nil), &prog)
			if err != nil {
				t.Fatalf("execute: %v", err)
			}
			if res.alreadyDone || res.rows != 2001 || res.bytes <= 0 {
				t.Errorf("result = %+v, want 2001 rows, some bytes, not already done", res)
			}
			if prog.bytes.Load() != res.bytes {
				t.Errorf("progress bytes %d, result bytes %d", prog.bytes.Load(), res.bytes)
			}
			if prog.rows.Load() != 2001 {
				t.Errorf("%s progress rows = %d, want 2001", format, prog.rows.Load())
			}
			if got := one(t, f.dst, checksum); got != want {
				t.Errorf("target items = %s, source %s", got, want)
			}
			if got := one(t, f.dst, `SELECT bool_and(doubled = id * 2)::text FROM items`); got != "true" {
				t.Errorf("generated column not recomputed on the target")
			}
		})
	}
}

// TestExecuteProgressRows: the rows a copy reports as it goes match the
// rows it copied, in both formats, for an empty range too (whose binary
// stream is the header and the trailer in one message).
func TestExecuteProgressRows(t *testing.T) {
	f := newExecFixture(t)
	ranges := map[int64]func(*pb.CopySpec){
		0:    func(s *pb.CopySpec) { s.KeyLower, s.KeyUpperUnbounded = 1_000_000, true },
		1:    func(s *pb.CopySpec) { s.KeyLower, s.KeyUpper = 7, 8 },
		1000: func(s *pb.CopySpec) { s.KeyLower, s.KeyUpper = 1000, 2000 },
	}
	id := uint64(200)
	for _, format := range []pb.CopyFormat{pb.CopyFormat_COPY_FORMAT_BINARY, pb.CopyFormat_COPY_FORMAT_TEXT} {
		for want, r := range ranges {
			id++
			l := copyLease(id, format, func(s *pb.CopySpec) {
				s.TruncateFreeze, s.KeyColumn = false, "id"
				r(s)
			})
			var prog progress
			res, err := f.w.execute(t.Context(), l, &prog)
			if err != nil {
				t.Fatalf("%s, %d rows: %v", format, want, err)
			}
			if res.rows != want || prog.rows.Load() != want || prog.bytes.Load() != res.bytes {
				t.Errorf("%s: copied %d rows, progress %d rows and %d of %d bytes; want %d rows", format,
					res.rows, prog.rows.Load(), prog.bytes.Load(), res.bytes, want)
			}
		}
	}
}

// TestExecuteExactlyOnce: a unit whose done-marker is on the target only
// reports done, whatever its kind; a failed unit leaves neither rows nor a
// marker.
func TestExecuteExactlyOnce(t *testing.T) {
	f := newExecFixture(t)
	ctx := t.Context()
	want := one(t, f.src, checksum)

	// Without TRUNCATE, a second run would duplicate every row.
	l := copyLease(7, pb.CopyFormat_COPY_FORMAT_BINARY, func(s *pb.CopySpec) { s.TruncateFreeze = false })
	if _, err := f.w.execute(ctx, l, &progress{}); err != nil {
		t.Fatal(err)
	}
	res, err := f.w.execute(ctx, l, &progress{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.alreadyDone || res.rows != 0 {
		t.Errorf("second run of unit 7 = %+v, want already done", res)
	}
	if got := one(t, f.dst, checksum); got != want {
		t.Errorf("target after a redelivered copy = %s, want %s", got, want)
	}
	// The marker belongs to a migration: another migration's unit 7 runs.
	other := copyLease(7, pb.CopyFormat_COPY_FORMAT_BINARY, nil)
	other.MigrationId = "m2"
	if res, err := f.w.execute(ctx, other, &progress{}); err != nil || res.alreadyDone {
		t.Errorf("unit 7 of another migration: %+v, %v; want it run", res, err)
	}

	// SQL units: the second delivery would fail with "already exists".
	idx := &pb.Lease{MigrationId: "m1", Unit: &pb.Unit{Id: 8, Kind: pb.UnitKind_UNIT_KIND_INDEX, Description: "items_id_idx",
		Sql: "CREATE INDEX items_id_idx ON public.items (id);\nCOMMENT ON INDEX items_id_idx IS 'x';", Transactional: true}}
	for i := 0; i < 2; i++ {
		res, err := f.w.execute(ctx, idx, &progress{})
		if err != nil {
			t.Fatalf("index unit, delivery %d: %v", i+1, err)
		}
		if res.alreadyDone != (i == 1) {
			t.Errorf("index unit, delivery %d: already done = %t", i+1, res.alreadyDone)
		}
	}
	// Statements that cannot run in a transaction block.
	vacuum := &pb.Lease{MigrationId: "m1", Unit: &pb.Unit{Id: 9, Kind: pb.UnitKind_UNIT_KIND_VACUUM, Description: "vacuum",
		Sql: "VACUUM public.items", Transactional: false}}
	if _, err := f.w.execute(ctx, vacuum, &progress{}); err != nil {
		t.Fatalf("non-transactional unit: %v", err)
	}

	// A failing SQL unit rolls back whole and leaves no marker.
	bad := &pb.Lease{MigrationId: "m1", Unit: &pb.Unit{Id: 10, Kind: pb.UnitKind_UNIT_KIND_CONSTRAINT, Description: "bad constraint",
		Sql: "CREATE INDEX half_done ON public.items (t);\nALTER TABLE public.items ADD CONSTRAINT nope CHECK (id < 0);", Transactional: true}}
	_, err = f.w.execute(ctx, bad, &progress{})
	if err == nil || !strings.Contains(err.Error(), "bad constraint") {
		t.Errorf("failing unit: %v, want an error naming the unit", err)
	}
	if got := one(t, f.dst, `SELECT count(*)::text FROM pg_class WHERE relname = 'half_done'`); got != "0" {
		t.Errorf("a failed unit left its first statement's index")
	}
	// A failing copy (the target lacks a column) leaves the committed rows.
	badCopy := copyLease(11, pb.CopyFormat_COPY_FORMAT_TEXT, func(s *pb.CopySpec) { s.Columns = append(s.Columns, "missing") })
	if _, err := f.w.execute(ctx, badCopy, &progress{}); err == nil {
		t.Errorf("copy with a missing column succeeded")
	}
	if got := one(t, f.dst, checksum); got != want {
		t.Errorf("target after a failed copy = %s, want %s", got, want)
	}
	markers := one(t, f.dst, `SELECT string_agg(migration_id || ':' || unit_id, ',' ORDER BY migration_id, unit_id) FROM pgcaravan.unit_done`)
	if markers != "m1:7,m1:8,m1:9,m2:7" {
		t.Errorf("done-markers = %s, want m1:7,m1:8,m1:9,m2:7", markers)
	}

	if _, err := f.w.execute(ctx, &pb.Lease{MigrationId: "m1", Unit: &pb.Unit{Id: 12}}, &progress{}); err == nil {
		t.Errorf("a unit without a kind ran")
	}
}

// TestExecuteSnapshotAndRanges: a copy reads the source under the lease's
// snapshot, and block ranges split a table without losing or repeating rows.
func TestExecuteSnapshotAndRanges(t *testing.T) {
	f := newExecFixture(t)
	ctx := t.Context()
	want := one(t, f.src, checksum)

	conn, err := pgx.Connect(ctx, f.src)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	var snapshot string
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Exec(ctx, "src", `INSERT INTO items (id) SELECT generate_series(5000, 5099); DELETE FROM items WHERE id < 10`); err != nil {
		t.Fatal(err)
	}

	pages := one(t, f.src, `SELECT (pg_relation_size('items') / current_setting('block_size')::int)::text`)
	if pages == "0" || pages == "1" {
		t.Fatalf("items has %s pages; the range test needs several", pages)
	}
	ranges := []func(*pb.CopySpec){
		func(s *pb.CopySpec) { s.StartBlock, s.EndBlock = 0, 1 },
		func(s *pb.CopySpec) { s.StartBlock, s.EndBlock = 1, 3 },
		func(s *pb.CopySpec) { s.StartBlock, s.EndBlock = 3, 0 },
	}
	var rows int64
	for i, r := range ranges {
		l := copyLease(uint64(20+i), pb.CopyFormat_COPY_FORMAT_BINARY, func(s *pb.CopySpec) {
			s.TruncateFreeze = false
			r(s)
		})
		l.Snapshot = snapshot
		res, err := f.w.execute(ctx, l, &progress{})
		if err != nil {
			t.Fatalf("range %d: %v", i, err)
		}
		if res.rows == 0 {
			t.Errorf("range %d copied no rows", i)
		}
		rows += res.rows
	}
	if rows != 2001 {
		t.Errorf("ranges copied %d rows, want 2001", rows)
	}
	if got := one(t, f.dst, checksum); got != want {
		t.Errorf("target = %s, want the snapshot's rows %s", got, want)
	}

	// A snapshot nobody holds any more is an error that says so.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	l := copyLease(30, pb.CopyFormat_COPY_FORMAT_BINARY, nil)
	l.Snapshot = snapshot
	_, err = f.w.execute(ctx, l, &progress{})
	if err == nil || !strings.Contains(err.Error(), "import snapshot") {
		t.Errorf("copy under a released snapshot: %v, want an import snapshot error", err)
	}
}

// TestExecuteKeyRanges: key ranges with open ends split a table without
// losing or repeating rows, in both formats, and a redelivered part only
// reports done.
func TestExecuteKeyRanges(t *testing.T) {
	f := newExecFixture(t)
	ctx := t.Context()
	want := one(t, f.src, checksum)
	ranges := []func(*pb.CopySpec){
		func(s *pb.CopySpec) { s.KeyUpper, s.KeyLowerUnbounded = 500, true },
		func(s *pb.CopySpec) { s.KeyLower, s.KeyUpper = 500, 1500 },
		func(s *pb.CopySpec) { s.KeyLower, s.KeyUpperUnbounded = 1500, true },
	}
	for i, format := range []pb.CopyFormat{pb.CopyFormat_COPY_FORMAT_BINARY, pb.CopyFormat_COPY_FORMAT_TEXT} {
		if err := f.c.Exec(ctx, "dst", "TRUNCATE items"); err != nil {
			t.Fatal(err)
		}
		var rows int64
		for j, r := range ranges {
			l := copyLease(uint64(100+10*i+j), format, func(s *pb.CopySpec) {
				s.TruncateFreeze, s.KeyColumn = false, "id"
				r(s)
			})
			for delivery := 0; delivery < 2; delivery++ {
				res, err := f.w.execute(ctx, l, &progress{})
				if err != nil {
					t.Fatalf("%s range %d: %v", format, j, err)
				}
				if res.alreadyDone != (delivery == 1) {
					t.Errorf("%s range %d delivery %d: already done = %t", format, j, delivery+1, res.alreadyDone)
				}
				rows += res.rows
			}
		}
		if rows != 2001 {
			t.Errorf("%s: ranges copied %d rows, want 2001", format, rows)
		}
		if got := one(t, f.dst, checksum); got != want {
			t.Errorf("%s: target = %s, want %s", format, got, want)
		}
	}
}

func TestRangeWhere(t *testing.T) {
	for _, tc := range []struct {
		spec *pb.CopySpec
		want string
	}{
		{&pb.CopySpec{}, ""},
		{&pb.CopySpec{StartBlock: 0, EndBlock: 10}, ` WHERE ctid >= '(0,0)'::tid AND ctid < '(10,0)'::tid`},
		{&pb.CopySpec{StartBlock: 10}, ` WHERE ctid >= '(10,0)'::tid`},
		{&pb.CopySpec{KeyColumn: `I"d`, KeyLower: -9223372036854775808, KeyUpper: 7},
			` WHERE "I""d" >= '-9223372036854775808'::int8 AND "I""d" < '7'::int8`},
		{&pb.CopySpec{KeyColumn: "id", KeyLowerUnbounded: true, KeyUpper: 7}, ` WHERE "id" < '7'::int8`},
		{&pb.CopySpec{KeyColumn: "id", KeyLower: 7, KeyUpperUnbounded: true}, ` WHERE "id" >= '7'::int8`},
	} {
		if got := rangeWhere(tc.spec); got != tc.want {
			t.Errorf("rangeWhere(%v) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

// TestExecuteLargeObjectOptions: --no-owner and --no-acl leave large
// objects to the worker's role with default privileges.
func TestExecuteLargeObjectOptions(t *testing.T) {
	f := newExecFixture(t)
	ctx := t.Context()
	err := f.c.Exec(ctx, "src", `
CREATE ROLE lo_owner_x;
SELECT lo_from_bytea(7001, 'abc');
SELECT lo_create(7002);
SELECT lo_create(7999);
ALTER LARGE OBJECT 7001 OWNER TO lo_owner_x;
GRANT SELECT ON LARGE OBJECT 7001 TO PUBLIC;`)
	if err != nil {
		t.Fatal(err)
	}
	l := &pb.Lease{MigrationId: "m1", Unit: &pb.Unit{Id: 40, Kind: pb.UnitKind_UNIT_KIND_LARGE_OBJECTS, Description: "large objects",
		LargeObjects: &pb.LargeObjectRange{FirstOid: 7001, LastOid: 7002, NoOwner: true, NoAcl: true}, Transactional: true}}
	res, err := f.w.execute(ctx, l, &progress{})
	if err != nil {
		t.Fatal(err)
	}
	if res.rows != 2 || res.bytes != 3 {
		t.Errorf("result = %+v, want 2 objects, 3 bytes", res)
	}
	got := one(t, f.dst, `SELECT string_agg(oid || ' ' || pg_get_userbyid(lomowner) || ' ' || coalesce(lomacl::text, '-') || ' ' || encode(lo_get(oid), 'escape'), ',' ORDER BY oid) FROM pg_largeobject_metadata`)
	if got != "7001 postgres - abc,7002 postgres - " {
		t.Errorf("large objects on the target = %q", got)
	}
}
