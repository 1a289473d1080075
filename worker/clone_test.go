package worker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/testlog"
	"github.com/pgcaravan/pgcaravan/worker"
)

// rolesSQL runs on both servers: roles belong to a server, not a database.
const rolesSQL = `
CREATE ROLE "lo owner";
CREATE ROLE "lo reader";
CREATE ROLE lo_writer;`

// trickySQL is data that breaks naive copies: escapes, NULL markers, binary
// values, arrays, JSON, 40-digit numerics, odd timestamps, generated and
// identity columns, a table without columns, inheritance, partitions, an
// unlogged table, a name that needs quoting, materialized views, sequences
// and large objects with owners and grants.
const trickySQL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);

CREATE TABLE tricky (
	id int PRIMARY KEY,
	t text, bin bytea, ints int[], texts text[], matrix int[][], doc jsonb, js json,
	big numeric, num40 numeric(50, 10), ts timestamptz, d date, iv interval, u uuid, ip inet,
	f8 float8, f4 real, tsv tsvector, m mood, moods mood[], p pair, r int4range, pi posint,
	bits varbit, ch char(5), b bool);
INSERT INTO tricky VALUES
	(1, E'tab\there\nnewline\\backslash\rcarriage "double" ''single'' |pipe|', '\x00ff0a0d5c09'::bytea,
	 '{1,NULL,3}', '{"a,b","c\"d",NULL,"NULL","",x\\y}', '{{1,2},{3,4}}',
	 '{"k": [1, 2.50, "ü"], "nested": {"x": null, "tab": "\t"}}', '{"dup": 1, "dup": 2}',
	 1234567890123456789012345678901234567890, 1234567890123456789012345678901234567890.0123456789,
	 '2024-02-29 23:59:59.999999+05:30', '4713-01-01 BC', '1 year 2 mons -3 days 04:05:06.789',
	 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001:db8::1/64', 1e308, 3.4e38,
	 to_tsvector('english', 'The fat cats ate the rats'), 'happy', '{sad,happy}', ROW(1, 'x,y'), '[1,10)', 5,
	 B'10101', 'ab', true),
	(2, E'\\N', '\x'::bytea, '{}', '{}', '{}', '[]', 'null', 'NaN', -0.0000000001, 'infinity', 'infinity',
	 '0', '00000000-0000-0000-0000-000000000000', '0.0.0.0', 'NaN', '-Infinity', '', 'sad', '{}', ROW(NULL, NULL),
	 'empty', 1, B'', '     ', false),
	(3, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-infinity', NULL, NULL, NULL, NULL, '-0', NULL, NULL,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
	(4, E'emoji 🐘 café नमस्ते 日本語 zero\u200bwidth combining e\u0301', NULL, NULL, '{"🐘"}', NULL,
	 '{"🐘": "\u00e9"}', NULL, 1e-30, NULL, '1999-12-31 23:59:60+00', NULL, NULL, NULL, NULL, 1.0000000000000002,
	 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO tricky (id, t, bin, doc, num40, ts)
	SELECT g, md5(g::text) || E'\t\\' || g, decode(md5(g::text), 'hex'), jsonb_build_object('g', g),
	       g * 1.0000000001, '2000-01-01'::timestamptz + g * interval '1 minute'
	FROM generate_series(5, 3000) g;

CREATE TABLE gen (
	id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	a int,
	dropme text,
	doubled int GENERATED ALWAYS AS (a * 2) STORED,
	label text);
ALTER TABLE gen DROP COLUMN dropme;
INSERT INTO gen (a, label) VALUES (1, 'one'), (2, 'two');
INSERT INTO gen (id, a, label) OVERRIDING SYSTEM VALUE VALUES (1000, 7, 'far');

CREATE TABLE z ();
INSERT INTO z DEFAULT VALUES;
INSERT INTO z DEFAULT VALUES;
INSERT INTO z DEFAULT VALUES;

CREATE TABLE parent (id int, v text);
CREATE TABLE child (extra int) INHERITS (parent);
INSERT INTO parent VALUES (1, 'parent 1'), (2, 'parent 2');
INSERT INTO child VALUES (10, 'child 10', 100), (11, 'child 11', 110), (12, 'child 12', 120);

CREATE TABLE measurement (id int, region text NOT NULL, at date NOT NULL) PARTITION BY LIST (region);
CREATE TABLE measurement_east PARTITION OF measurement FOR VALUES IN ('east');
CREATE TABLE measurement_west PARTITION OF measurement FOR VALUES IN ('west') PARTITION BY RANGE (at);
CREATE TABLE measurement_west_2024 PARTITION OF measurement_west FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO measurement SELECT g, CASE WHEN g % 2 = 0 THEN 'east' ELSE 'west' END, '2024-01-01'::date + g % 300
	FROM generate_series(1, 500) g;

CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
INSERT INTO scratch SELECT g, repeat('u', g % 50) FROM generate_series(1, 200) g;

CREATE SCHEMA "Sch ema";
CREATE TABLE "Sch ema"."we""ird.T" ("Col ""1""" int PRIMARY KEY, "ü" text, "select" text);
CREATE INDEX "i x" ON "Sch ema"."we""ird.T" ("ü");
INSERT INTO "Sch ema"."we""ird.T" VALUES (1, 'one', 'from'), (2, NULL, E'a\tb');

CREATE MATERIALIZED VIEW gen_total AS SELECT sum(doubled) AS total FROM gen;
CREATE MATERIALIZED VIEW gen_later AS SELECT id FROM gen WITH NO DATA;

CREATE SEQUENCE seq_called;
SELECT setval('seq_called', 42);
CREATE SEQUENCE seq_fresh START 100;

SELECT lo_create(5001);
SELECT lo_from_bytea(5002, '\x41');
SELECT lo_from_bytea(5003, (SELECT decode(string_agg(md5(g::text), '' ORDER BY g), 'hex') FROM generate_series(1, 589824) g));
ALTER LARGE OBJECT 5002 OWNER TO "lo owner";
GRANT SELECT ON LARGE OBJECT 5002 TO "lo reader";
GRANT UPDATE ON LARGE OBJECT 5002 TO lo_writer WITH GRANT OPTION;
ALTER LARGE OBJECT 5003 OWNER TO lo_writer;
GRANT SELECT ON LARGE OBJECT 5003 TO PUBLIC;
-- Many small objects, one of them exactly at and one just past the size
-- that arrives with the listing (64 KiB), owned by someone else.
SELECT lo_from_bytea(g, convert_to('small ' || g, 'UTF8')) FROM generate_series(20001, 30000) g;
SELECT lo_from_bytea(30001, decode(repeat('ab', 65536), 'hex'));
SELECT lo_from_bytea(30002, decode(repeat('cd', 65537), 'hex'));
ALTER LARGE OBJECT 20001 OWNER TO "lo owner";
`

// copiedTables are the tables with rows of their own, compared row by row.
var copiedTables = []string{
	"public.tricky", "public.gen", "public.z", "public.parent", "public.child",
	"public.measurement_east", "public.measurement_west_2024", "public.scratch",
	`"Sch ema"."we""ird.T"`, "public.gen_total", "public.gen_later",
}

// contents is a table's row count and an order-independent checksum of its
// rows as text. FROM ONLY keeps a parent's checksum to its own rows.
func contents(t *testing.T, uri, table string) []string {
	t.Helper()
	if table == "public.gen_later" {
		// Not populated: it cannot be scanned; compare the flag.
		return queryRow(t, uri, `SELECT relispopulated::text FROM pg_class WHERE oid = 'public.gen_later'::regclass`)
	}
	return queryRow(t, uri, `SELECT count(*)::text, coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), 'empty') FROM ONLY `+table+` x`)
}

// TestCloneData clones tricky data with an in-process coordinator and
// worker (same major version, so binary COPY) and compares the two sides
// row by row.
func TestCloneData(t *testing.T) {
	ctx := t.Context()
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.Exec(ctx, "postgres", rolesSQL); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := dst.CreateDatabase(ctx, "app copy"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", trickySQL); err != nil {
		t.Fatal(err)
	}
	srcURI, dstURI := src.URI("app"), dst.URI("app copy")

	dir := clone(t, srcURI, dstURI)

	t.Run("rows", func(t *testing.T) {
		for _, table := range copiedTables {
			s, d := contents(t, srcURI, table), contents(t, dstURI, table)
			if !slices.Equal(s, d) {
				t.Errorf("%s: source %v, target %v", table, s, d)
			}
		}
		if got := queryRow(t, dstURI, `SELECT count(*)::text FROM ONLY parent`); got[0] != "2" {
			t.Errorf("parent has %s rows of its own on the target, want 2: child rows were copied into it", got[0])
		}
		if got := queryRow(t, dstURI, `SELECT count(*)::text FROM parent`); got[0] != "5" {
			t.Errorf("parent with children has %s rows on the target, want 5", got[0])
		}
		if got := queryRow(t, dstURI, `SELECT count(*)::text FROM z`); got[0] != "3" {
			t.Errorf("the table without columns has %s rows on the target, want 3", got[0])
		}
		// A few values spelled out, so a failure says what broke.
		for _, q := range []string{
			`SELECT t FROM tricky WHERE id = 1`,
			`SELECT t FROM tricky WHERE id = 2`,
			`SELECT t FROM tricky WHERE id = 4`,
			`SELECT encode(bin, 'hex') FROM tricky WHERE id = 1`,
			`SELECT num40::text || ' ' || big::text FROM tricky WHERE id = 1`,
			`SELECT ts::text || ' ' || d::text FROM tricky WHERE id = 1`,
			`SELECT texts::text || ' ' || matrix::text || ' ' || doc::text || ' ' || js::text FROM tricky WHERE id = 1`,
			`SELECT (t IS NULL)::text || (bin IS NULL)::text || (t = '')::text FROM tricky WHERE id = 3`,
		} {
			if s, d := queryRow(t, srcURI, q), queryRow(t, dstURI, q); !slices.Equal(s, d) {
				t.Errorf("%s: source %q, target %q", q, s, d)
			}
		}
	})

	t.Run("generated and identity columns", func(t *testing.T) {
		want := [][]string{{"1", "1", "2"}, {"2", "2", "4"}, {"1000", "7", "14"}}
		if got := queryRows(t, dstURI, `SELECT id, a, doubled FROM gen ORDER BY id`); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("gen on the target = %v, want %v", got, want)
		}
		if got := queryRow(t, dstURI, `SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'gen'::regclass AND attname = 'doubled'`); got[0] != "s" {
			t.Errorf("doubled is not a stored generated column on the target: %q", got[0])
		}
		// The identity sequence was set from the source: the next id follows
		// the source's last one.
		if got := queryRow(t, dstURI, `INSERT INTO gen (a) VALUES (10) RETURNING id::text, doubled::text`); !slices.Equal(got, []string{"3", "20"}) {
			t.Errorf("new row on the target = %v, want id 3, doubled 20", got)
		}
	})

	t.Run("relations", func(t *testing.T) {
		if got := queryRow(t, dstURI, `SELECT relpersistence::text FROM pg_class WHERE oid = 'scratch'::regclass`); got[0] != "u" {
			t.Errorf("scratch persistence on the target = %q, want unlogged", got[0])
		}
		q := `SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY indexrelid::regclass::text) FROM pg_index
			WHERE indrelid = '"Sch ema"."we""ird.T"'::regclass`
		if s, d := queryRow(t, srcURI, q), queryRow(t, dstURI, q); !slices.Equal(s, d) {
			t.Errorf("indexes of the quoted table: source %v, target %v", s, d)
		}
		if got := queryRow(t, dstURI, `SELECT total::text FROM gen_total`); got[0] != "20" {
			t.Errorf("gen_total on the target = %q, want 20 (refreshed)", got[0])
		}
		seq := `SELECT last_value::text, is_called::text FROM `
		for _, s := range []string{"seq_called", "seq_fresh"} {
			if a, b := queryRow(t, srcURI, seq+s), queryRow(t, dstURI, seq+s); !slices.Equal(a, b) {
				t.Errorf("sequence %s: source %v, target %v", s, a, b)
			}
		}
	})

	t.Run("large objects", func(t *testing.T) {
		q := `SELECT oid::text, pg_get_userbyid(lomowner), coalesce(lomacl::text, '<none>'),
			length(lo_get(oid))::text, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid`
		s, d := queryRows(t, srcURI, q), queryRows(t, dstURI, q)
		if !slices.EqualFunc(s, d, slices.Equal) {
			t.Errorf("large objects differ:\nsource %q\ntarget %q", s, d)
		}
		sizes := map[string]string{}
		for _, r := range d {
			sizes[r[0]] = r[3]
		}
		if len(d) != 10005 {
			t.Errorf("target has %d large objects, want 10005", len(d))
		}
		for oid, want := range map[string]string{"5001": "0", "5002": "1", "5003": "9437184", "20001": "11", "30000": "11", "30001": "65536", "30002": "65537"} {
			if sizes[oid] != want {
				t.Errorf("large object %s on the target has %q bytes, want %s", oid, sizes[oid], want)
			}
		}
	})

	t.Run("done", func(t *testing.T) {
		// The coordinator drops its done-markers with their schema.
		if got := queryRow(t, dstURI, `SELECT count(*)::text FROM pg_namespace WHERE nspname = 'pgcaravan'`); got[0] != "0" {
			t.Errorf("the pgcaravan schema is still on the target")
		}
		st, err := coordinator.ReadStatus(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetPhase() != pb.Phase_PHASE_DONE {
			t.Errorf("phase = %s, want done", st.GetPhase())
		}
		for _, c := range st.GetUnits() {
			if c.GetState() != pb.UnitState_UNIT_STATE_DONE && c.GetCount() != 0 {
				t.Errorf("%d units %s", c.GetCount(), c.GetState())
			}
		}
		for _, tb := range st.GetTables() {
			if tb.GetSchema() == "public" && tb.GetName() == "tricky" && tb.GetRows() != 3000 {
				t.Errorf("tricky: %d rows reported, want 3000", tb.GetRows())
			}
		}
		// Same major version on both sides: every copy was binary, and
		// every table with rows of its own had one.
		s, err := store.Open(dir, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		units, err := s.Units()
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		var copied []string
		for _, u := range units {
			if u.Kind != plan.KindCopy {
				continue
			}
			copied = append(copied, u.Table)
			if u.Copy.Format != plan.FormatBinary {
				t.Errorf("copy of %s was %s, want binary", u.Table, u.Copy.Format)
			}
		}
		slices.Sort(copied)
		want := []string{`Sch ema.we"ird.T`, "public.child", "public.gen", "public.measurement_east",
			"public.measurement_west_2024", "public.parent", "public.scratch", "public.tricky", "public.z"}
		if !slices.Equal(copied, want) {
			t.Errorf("copy units for %q, want %q", copied, want)
		}
	})
}

// TestWorkerRefusesWrongDatabase: a worker whose --source or --target is
// not the coordinator's database stops with ErrWrongDatabase before it
// takes a unit; a right worker then finishes the migration.
func TestWorkerRefusesWrongDatabase(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	other := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"src", "dst"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	// Same database name, other server: only the system identifier differs.
	if err := other.CreateDatabase(ctx, "dst"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "src", `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)`); err != nil {
		t.Fatal(err)
	}
	srcURI, dstURI := c.URI("src"), c.URI("dst")
	rc := startCoordinator(t, srcURI, dstURI)

	for _, tt := range []struct {
		name, src, dst, flag string
	}{
		{"target is the source", srcURI, srcURI, "--target"},
		{"source is the target", dstURI, dstURI, "--source"},
		{"target on another server", srcURI, other.URI("dst"), "--target"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := runWorker(t, workerConfig(rc.addr, tt.src, tt.dst))
			if !errors.Is(err, worker.ErrWrongDatabase) {
				t.Fatalf("worker Run: %v, want ErrWrongDatabase", err)
			}
			if !strings.Contains(err.Error(), "fix "+tt.flag) {
				t.Errorf("error does not say to fix %s: %v", tt.flag, err)
			}
		})
	}
	if got := queryRow(t, srcURI, `SELECT count(*)::text FROM t`); got[0] != "10" {
		t.Errorf("the source table has %s rows after the refused workers, want 10", got[0])
	}

	if err := runWorker(t, workerConfig(rc.addr, srcURI, dstURI)); err != nil {
		t.Fatalf("right worker: %v", err)
	}
	if err := rc.wait(); err != nil {
		t.Fatalf("coordinator: %v", err)
	}
	if got := queryRow(t, dstURI, `SELECT count(*)::text FROM t`); got[0] != "10" {
		t.Errorf("target has %s rows, want 10", got[0])
	}
}

// TestWorkerStopsWithItsContext: a worker asked to stop before it reached
// its coordinator returns nil.
func TestWorkerStopsWithItsContext(t *testing.T) {
	cfg := workerConfig("127.0.0.1:1", "postgres://postgres@127.0.0.1:1/a", "postgres://postgres@127.0.0.1:1/b")
	w, err := worker.New(cfg, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Errorf("Run with a cancelled context: %v, want nil", err)
	}
}
