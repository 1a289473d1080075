package catalog_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/shared/ident"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// sourceSQL has a relation of every kind ReadTables sorts out, sequences in
// every state, large objects, and objects of every kind Objects lists.
const sourceSQL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE FUNCTION add_one(x integer) RETURNS integer LANGUAGE sql AS 'SELECT x + 1';

CREATE TABLE plain (id int PRIMARY KEY, name text);
INSERT INTO plain SELECT g, 'name ' || g FROM generate_series(1, 1000) g;

CREATE TABLE gen (
	id int GENERATED ALWAYS AS IDENTITY,
	a int,
	doubled int GENERATED ALWAYS AS (a * 2) STORED,
	dropme text,
	b text);
ALTER TABLE gen DROP COLUMN dropme;
INSERT INTO gen (a, b) VALUES (1, 'x'), (2, 'y');

CREATE UNLOGGED TABLE scratch (id int, v text);
INSERT INTO scratch SELECT g, repeat('v', 100) FROM generate_series(1, 100) g;

CREATE TABLE parent (id int, v text);
CREATE TABLE child (extra int) INHERITS (parent);
INSERT INTO parent VALUES (1, 'p');
INSERT INTO child VALUES (2, 'c', 3);
CREATE TABLE mixin (tag text);
CREATE TABLE grandchild () INHERITS (child, mixin);

CREATE TABLE measurement (id int, region text NOT NULL, at date NOT NULL) PARTITION BY LIST (region);
CREATE TABLE measurement_east PARTITION OF measurement FOR VALUES IN ('east');
CREATE TABLE measurement_west PARTITION OF measurement FOR VALUES IN ('west') PARTITION BY RANGE (at);
CREATE TABLE measurement_west_2024 PARTITION OF measurement_west FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO measurement VALUES (1, 'east', '2024-03-01'), (2, 'west', '2024-04-01');

CREATE MATERIALIZED VIEW plain_count AS SELECT count(*) AS n FROM plain;
CREATE MATERIALIZED VIEW plain_ids AS SELECT id FROM plain WITH NO DATA;
CREATE VIEW plain_view AS SELECT id FROM plain;

CREATE TABLE docs (id int, body tsvector, feeling mood, tags text[], moods mood[], n posint, r floatrange);
INSERT INTO docs VALUES (1, to_tsvector('simple', 'a fat cat'), 'ok', '{a,b}', '{sad,happy}', 3, '[1,2)');

-- aclitem has no binary send/receive; aclitem[] has them, but not its element.
CREATE TABLE no_binary (id int, acl aclitem);
CREATE TABLE no_binary_elem (id int, acls aclitem[]);

CREATE SCHEMA "Sch ema";
CREATE TABLE "Sch ema"."we""ird.T" ("Col ""1""" int PRIMARY KEY, "ü" text);
INSERT INTO "Sch ema"."we""ird.T" VALUES (1, 'one');
CREATE SEQUENCE "Sch ema"."se""q";
SELECT nextval('"Sch ema"."se""q"') FROM generate_series(1, 3);

CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;

CREATE SEQUENCE seq_called;
SELECT setval('seq_called', 42);
CREATE SEQUENCE seq_set_not_called;
SELECT setval('seq_set_not_called', 7, false);
CREATE SEQUENCE seq_fresh START 100;
CREATE SEQUENCE seq_negative INCREMENT -1 MINVALUE -1000 MAXVALUE -1 START -1;
SELECT nextval('seq_negative'), nextval('seq_negative');
CREATE SEQUENCE seq_big AS bigint START 9000000000000000000;
SELECT nextval('seq_big');

-- Objects that belong to an extension are the extension's to create.
CREATE TABLE ext_table (id int);
CREATE SEQUENCE ext_seq;
ALTER EXTENSION plpgsql ADD TABLE ext_table;
ALTER EXTENSION plpgsql ADD SEQUENCE ext_seq;

SELECT lo_create(424242);
SELECT lo_from_bytea(424243, 'hello');
SELECT lo_create(100);

ANALYZE;
`

// startSource starts a cluster with sourceSQL in database src and an empty
// database empty.
func startSource(t *testing.T) *pgtest.Cluster {
	t.Helper()
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"src", "empty"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Exec(ctx, "src", sourceSQL); err != nil {
		t.Fatal(err)
	}
	return c
}

// snapshotTx opens the transaction the coordinator reads the catalog in.
func snapshotTx(t *testing.T, uri string) pgx.Tx {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	var snapshot string
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snapshot); err != nil {
		t.Fatal(err)
	}
	return tx
}

func oidOf(t *testing.T, q catalog.Querier, regclass string) uint32 {
	t.Helper()
	var oid uint32
	if err := q.QueryRow(t.Context(), `SELECT $1::regclass::oid`, regclass).Scan(&oid); err != nil {
		t.Fatalf("oid of %s: %v", regclass, err)
	}
	return oid
}

func TestReadTables(t *testing.T) {
	c := startSource(t)
	tx := snapshotTx(t, c.URI("src"))
	// Made after the snapshot: the catalog must not see it.
	if err := c.Exec(t.Context(), "src", `CREATE TABLE after_snapshot (id int)`); err != nil {
		t.Fatal(err)
	}

	tables, err := catalog.ReadTables(t.Context(), tx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]plan.Table{}
	var names []string
	for _, tb := range tables {
		byName[tb.QualifiedName()] = tb
		names = append(names, tb.QualifiedName())
	}
	want := []string{
		`Sch ema.we"ird.T`,
		"public.child", "public.docs", "public.gen", "public.grandchild", "public.measurement", "public.measurement_east",
		"public.measurement_west", "public.measurement_west_2024", "public.mixin", "public.no_binary", "public.no_binary_elem",
		"public.no_columns", "public.parent", "public.plain", "public.plain_count", "public.plain_ids", "public.scratch",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("ReadTables names (in order) =\n  %q\nwant\n  %q", names, want)
	}
	if !sort.SliceIsSorted(tables, func(i, j int) bool {
		if tables[i].Schema != tables[j].Schema {
			return tables[i].Schema < tables[j].Schema
		}
		return tables[i].Name < tables[j].Name
	}) {
		t.Errorf("ReadTables is not ordered by schema and name")
	}

	oid := func(regclass string) uint32 { return oidOf(t, tx, regclass) }
	tests := []struct {
		name       string
		relkind    string
		parent     uint32
		columns    []string
		binarySafe bool
		hasBytes   bool
		populated  bool
	}{
		{"public.plain", "r", 0, []string{"id", "name"}, true, true, true},
		// Generated and dropped columns are not copied; identity columns are.
		{"public.gen", "r", 0, []string{"id", "a", "b"}, true, true, true},
		{"public.scratch", "r", 0, []string{"id", "v"}, true, true, true},
		{"public.parent", "r", 0, []string{"id", "v"}, true, true, true},
		// Inheritance is not partitioning: a child has no ParentOID.
		{"public.child", "r", 0, []string{"id", "v", "extra"}, true, true, true},
		{"public.measurement", "p", 0, []string{"id", "region", "at"}, true, false, true},
		{"public.measurement_east", "r", oid("public.measurement"), []string{"id", "region", "at"}, true, true, true},
		{"public.measurement_west", "p", oid("public.measurement"), []string{"id", "region", "at"}, true, false, true},
		{"public.measurement_west_2024", "r", oid("public.measurement_west"), []string{"id", "region", "at"}, true, true, true},
		{"public.plain_count", "m", 0, []string{"n"}, true, true, true},
		{"public.plain_ids", "m", 0, []string{"id"}, true, false, false},
		{"public.docs", "r", 0, []string{"id", "body", "feeling", "tags", "moods", "n", "r"}, true, true, true},
		{"public.no_binary", "r", 0, []string{"id", "acl"}, false, false, true},
		{"public.no_binary_elem", "r", 0, []string{"id", "acls"}, false, false, true},
		{"public.no_columns", "r", 0, []string{}, true, true, true},
		{`Sch ema.we"ird.T`, "r", 0, []string{`Col "1"`, "ü"}, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, ok := byName[tt.name]
			if !ok {
				t.Fatalf("not read")
			}
			if tb.RelKind != tt.relkind {
				t.Errorf("RelKind = %q, want %q", tb.RelKind, tt.relkind)
			}
			if tb.ParentOID != tt.parent {
				t.Errorf("ParentOID = %d, want %d", tb.ParentOID, tt.parent)
			}
			if !slices.Equal(tb.Columns, tt.columns) || tb.Columns == nil {
				t.Errorf("Columns = %q, want %q", tb.Columns, tt.columns)
			}
			if tb.BinarySafe != tt.binarySafe {
				t.Errorf("BinarySafe = %t, want %t", tb.BinarySafe, tt.binarySafe)
			}
			if tt.hasBytes && tb.Bytes <= 0 {
				t.Errorf("Bytes = %d, want > 0", tb.Bytes)
			}
			if tt.relkind == "p" && tb.Bytes != 0 {
				t.Errorf("Bytes = %d, want 0 for a partitioned table", tb.Bytes)
			}
			if tb.Populated != tt.populated {
				t.Errorf("Populated = %t, want %t", tb.Populated, tt.populated)
			}
			if tb.EstRows < 0 {
				t.Errorf("EstRows = %d, want >= 0", tb.EstRows)
			}
			if tb.OID != oid(ident.Qualified(tb.Schema, tb.Name)) {
				t.Errorf("OID = %d, want %d", tb.OID, oid(ident.Qualified(tb.Schema, tb.Name)))
			}
		})
	}
	// Inheritance, in declaration order; partitions are not inheritance.
	inherits := map[string][]uint32{
		"public.child":      {oid("public.parent")},
		"public.grandchild": {oid("public.child"), oid("public.mixin")},
	}
	for _, tb := range tables {
		if want := inherits[tb.QualifiedName()]; !slices.Equal(tb.InheritsFrom, want) {
			t.Errorf("%s InheritsFrom = %v, want %v", tb.QualifiedName(), tb.InheritsFrom, want)
		}
	}
	if got := byName["public.grandchild"].Columns; !slices.Equal(got, []string{"id", "v", "extra", "tag"}) {
		t.Errorf("grandchild Columns = %q", got)
	}

	if got := byName["public.plain"].EstRows; got != 1000 {
		t.Errorf("plain EstRows = %d, want 1000 after ANALYZE", got)
	}
}

func TestReadSequences(t *testing.T) {
	c := startSource(t)
	tx := snapshotTx(t, c.URI("src"))
	seqs, err := catalog.ReadSequences(t.Context(), tx)
	if err != nil {
		t.Fatal(err)
	}
	// OIDs vary from run to run: each must be the sequence's own.
	for i := range seqs {
		var name string
		if err := tx.QueryRow(t.Context(), `SELECT relname FROM pg_class WHERE oid = $1`, seqs[i].OID).Scan(&name); err != nil || name != seqs[i].Name {
			t.Errorf("sequence %s has OID %d, which is %q (%v)", seqs[i].Name, seqs[i].OID, name, err)
		}
		seqs[i].OID = 0
	}
	want := []plan.Sequence{
		{Schema: "Sch ema", Name: `se"q`, LastValue: 3, IsCalled: true},
		{Schema: "public", Name: "gen_id_seq", LastValue: 2, IsCalled: true},
		{Schema: "public", Name: "seq_big", LastValue: 9000000000000000000, IsCalled: true},
		{Schema: "public", Name: "seq_called", LastValue: 42, IsCalled: true},
		{Schema: "public", Name: "seq_fresh", LastValue: 100, IsCalled: false},
		{Schema: "public", Name: "seq_negative", LastValue: -2, IsCalled: true},
		{Schema: "public", Name: "seq_set_not_called", LastValue: 7, IsCalled: false},
	}
	if !slices.Equal(seqs, want) {
		t.Errorf("ReadSequences =\n  %+v\nwant\n  %+v", seqs, want)
	}
}

func TestReadLargeObjects(t *testing.T) {
	c := startSource(t)
	tx := snapshotTx(t, c.URI("src"))
	oids, err := catalog.ReadLargeObjects(t.Context(), tx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{100, 424242, 424243}; !slices.Equal(oids, want) {
		t.Errorf("ReadLargeObjects = %v, want %v", oids, want)
	}
	empty, err := catalog.ReadLargeObjects(t.Context(), snapshotTx(t, c.URI("empty")))
	if err != nil || len(empty) != 0 {
		t.Errorf("ReadLargeObjects of an empty database = %v, %v; want none", empty, err)
	}
}

func TestReadIdentity(t *testing.T) {
	c := startSource(t)
	ctx := t.Context()
	src, err := catalog.ReadIdentity(ctx, snapshotTx(t, c.URI("src")))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := catalog.ReadIdentity(ctx, snapshotTx(t, c.URI("empty")))
	if err != nil {
		t.Fatal(err)
	}
	if src.Database != "src" || empty.Database != "empty" {
		t.Errorf("databases = %q, %q; want src, empty", src.Database, empty.Database)
	}
	if _, err := strconv.ParseUint(src.SystemID, 10, 64); err != nil || src.SystemID == "0" {
		t.Errorf("SystemID = %q, want a non-zero number", src.SystemID)
	}
	if src.SystemID != empty.SystemID {
		t.Errorf("two databases of one cluster have system ids %s and %s", src.SystemID, empty.SystemID)
	}
	if src.ServerVersion < 100000 {
		t.Errorf("ServerVersion = %d, want a server_version_num", src.ServerVersion)
	}
	other := pgtest.Start(t, pgtest.Options{})
	o, err := catalog.ReadIdentity(ctx, snapshotTx(t, other.URI("postgres")))
	if err != nil {
		t.Fatal(err)
	}
	if o.SystemID == src.SystemID {
		t.Errorf("two clusters share system id %s", o.SystemID)
	}
}

func TestObjectsAndConflicts(t *testing.T) {
	c := startSource(t)
	ctx := t.Context()
	src, err := catalog.Objects(ctx, snapshotTx(t, c.URI("src")))
	if err != nil {
		t.Fatal(err)
	}
	if !sort.StringsAreSorted(src) {
		t.Errorf("Objects is not sorted: %q", src)
	}
	for _, want := range []string{
		`schema "Sch ema"`,
		`table "Sch ema"."we""ird.T"`,
		`index "Sch ema"."we""ird.T_pkey"`,
		`sequence "Sch ema"."se""q"`,
		"table public.plain",
		"index public.plain_pkey",
		"table public.measurement",
		"table public.measurement_west_2024",
		"table public.scratch",
		"view public.plain_view",
		"materialized view public.plain_count",
		"materialized view public.plain_ids",
		"sequence public.seq_fresh",
		"sequence public.gen_id_seq",
		"type public.mood",
		"type public.posint",
		"type public.floatrange",
		"type public.floatmultirange",
		"function public.add_one(x integer)",
	} {
		if !slices.Contains(src, want) {
			t.Errorf("Objects lacks %s", want)
		}
	}
	for _, unwanted := range []string{"schema public", "table public.ext_table", "sequence public.ext_seq"} {
		if slices.Contains(src, unwanted) {
			t.Errorf("Objects lists %s", unwanted)
		}
	}

	empty, err := catalog.Objects(ctx, snapshotTx(t, c.URI("empty")))
	if err != nil {
		t.Fatal(err)
	}
	if len(empty) != 0 {
		t.Errorf("Objects of an empty database = %q, want none (public is in every database)", empty)
	}
	if got := catalog.Conflicts(src, empty); len(got) != 0 {
		t.Errorf("Conflicts with an empty target = %q", got)
	}

	// A target with some of the same names, and pgcaravan's own schema,
	// which is never a conflict.
	err = c.Exec(ctx, "empty", `
CREATE TABLE plain (x int);
CREATE SCHEMA "Sch ema";
CREATE TYPE mood AS ENUM ('a');
CREATE TABLE unrelated (id int);
CREATE SCHEMA pgcaravan;
CREATE TABLE pgcaravan.unit_done (id int);`)
	if err != nil {
		t.Fatal(err)
	}
	target, err := catalog.Objects(ctx, snapshotTx(t, c.URI("empty")))
	if err != nil {
		t.Fatal(err)
	}
	got := catalog.Conflicts(src, target)
	if want := []string{`schema "Sch ema"`, "table public.plain", "type public.mood"}; !slices.Equal(got, want) {
		t.Errorf("Conflicts = %q, want %q", got, want)
	}
	for _, o := range target {
		if o == "schema pgcaravan" || o == "table pgcaravan.unit_done" {
			t.Errorf("Objects lists pgcaravan's own %s", o)
		}
	}
}

func TestConflicts(t *testing.T) {
	tests := []struct {
		source, target, want []string
	}{
		{nil, nil, nil},
		{[]string{"table public.a"}, nil, nil},
		{nil, []string{"table public.a"}, nil},
		{[]string{"table public.a", "table public.b"}, []string{"table public.c"}, nil},
		// In the source's order.
		{[]string{"type public.t", "table public.b", "table public.a"}, []string{"table public.a", "type public.t", "x"},
			[]string{"type public.t", "table public.a"}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if got := catalog.Conflicts(tt.source, tt.target); !slices.Equal(got, tt.want) {
				t.Errorf("Conflicts(%q, %q) = %q, want %q", tt.source, tt.target, got, tt.want)
			}
		})
	}
}

// TestReadFilterCatalog: indexes come with the constraint they back, and
// identity sequences are told from the others.
func TestReadFilterCatalog(t *testing.T) {
	c := startSource(t)
	tx := snapshotTx(t, c.URI("src"))
	tables, err := catalog.ReadTables(t.Context(), tx)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.ReadFilterCatalog(t.Context(), tx, tables)
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Relations) != len(tables) {
		t.Errorf("%d relations for %d tables", len(cat.Relations), len(tables))
	}
	var pkey, weird bool
	for _, ix := range cat.Indexes {
		var conname string
		if ix.ConstraintOID != 0 {
			if err := tx.QueryRow(t.Context(), `SELECT conname FROM pg_constraint WHERE oid = $1`, ix.ConstraintOID).Scan(&conname); err != nil {
				t.Fatal(err)
			}
		}
		switch {
		case ix.Schema == "public" && ix.Name == "plain_pkey":
			pkey = conname == "plain_pkey"
		case ix.Schema == "Sch ema" && ix.Name == `we"ird.T_pkey`:
			weird = conname == `we"ird.T_pkey`
		}
	}
	if !pkey || !weird {
		t.Errorf("primary key indexes not found with their constraints (plain %t, weird %t): %+v", pkey, weird, cat.Indexes)
	}
	var identity []string
	for _, oid := range cat.IdentitySequences {
		var name string
		if err := tx.QueryRow(t.Context(), `SELECT relname FROM pg_class WHERE oid = $1`, oid).Scan(&name); err != nil {
			t.Fatal(err)
		}
		identity = append(identity, name)
	}
	if !slices.Equal(identity, []string{"gen_id_seq"}) {
		t.Errorf("identity sequences %q, want [gen_id_seq]", identity)
	}
}
