package schema_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/schema"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// sourceSQL is a small schema with one object of each post-data kind the
// coordinator turns into units: an index, a primary key, a foreign key, a
// partitioned index with its attachment, a NOT VALID check, a trigger, a
// comment on an index, a materialized view.
const sourceSQL = `
CREATE TABLE author (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE book (id int PRIMARY KEY, author_id int NOT NULL REFERENCES author, title text, pages int);
CREATE INDEX book_title_idx ON book (title);
COMMENT ON INDEX book_title_idx IS 'titles';
ALTER TABLE book ADD CONSTRAINT book_pages_positive CHECK (pages > 0) NOT VALID;
CREATE TABLE event (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE event_2024 PARTITION OF event FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX event_at_idx ON event (at);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER book_touch BEFORE UPDATE ON book FOR EACH ROW EXECUTE FUNCTION touch();
CREATE MATERIALIZED VIEW author_books AS SELECT a.id, count(b.id) AS n FROM author a LEFT JOIN book b ON b.author_id = a.id GROUP BY a.id;
INSERT INTO author VALUES (1, 'Ann');
INSERT INTO book VALUES (1, 1, 'First', 10);
-- pgcaravan's own schema on a source (a clone of a clone) is left out.
CREATE SCHEMA pgcaravan;
CREATE TABLE pgcaravan.unit_done (migration_id text, unit_id bigint);
`

func mustParse(t *testing.T, role, raw string) pguri.URI {
	t.Helper()
	u, err := pguri.Parse(role, raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func tools(t *testing.T) schema.Tools {
	t.Helper()
	tl, err := schema.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// holdSnapshot opens a REPEATABLE READ READ ONLY transaction on db, as the
// coordinator does, and exports its snapshot. The transaction stays open
// until the test ends.
func holdSnapshot(t *testing.T, uri string) string {
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
	var id string
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func queryStrings(t *testing.T, uri, sql string) []string {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func descs(entries []schema.Entry) map[string][]string {
	out := map[string][]string{}
	for _, e := range entries {
		out[e.Desc] = append(out[e.Desc], e.Tag)
	}
	return out
}

func find(entries []schema.Entry, desc, tag string) (schema.Entry, bool) {
	for _, e := range entries {
		if e.Desc == desc && e.Tag == tag {
			return e, true
		}
	}
	return schema.Entry{}, false
}

// TestDumpListRestore runs the schema phase as the coordinator does: a dump
// under a snapshot held by an open transaction, the two lists, the pre-data
// restore on an empty database, and the SQL of post-data groups, which must
// run on the target through the protocol.
func TestDumpListRestore(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"src", "dst"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Exec(ctx, "src", sourceSQL); err != nil {
		t.Fatal(err)
	}
	snapshot := holdSnapshot(t, c.URI("src"))
	// Made after the snapshot: the dump must not see it.
	if err := c.Exec(ctx, "src", `CREATE TABLE after_snapshot (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}

	tl := tools(t)
	file := filepath.Join(t.TempDir(), "schema.dump")
	err := tl.Dump(ctx, mustParse(t, "source", c.URI("src")), file, schema.DumpOptions{Snapshot: snapshot, ExcludeSchemas: []string{"pgcaravan"}})
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}

	pre, err := tl.List(ctx, file, schema.PreData)
	if err != nil {
		t.Fatalf("List pre-data: %v", err)
	}
	post, err := tl.List(ctx, file, schema.PostData)
	if err != nil {
		t.Fatalf("List post-data: %v", err)
	}

	t.Run("pre-data", func(t *testing.T) {
		d := descs(pre)
		for _, table := range []string{"author", "book", "event", "event_2024"} {
			if !slices.Contains(d["TABLE"], table) {
				t.Errorf("pre-data TABLE entries %v lack %s", d["TABLE"], table)
			}
		}
		if slices.Contains(d["TABLE"], "after_snapshot") {
			t.Errorf("the dump saw after_snapshot, a table created after the snapshot: --snapshot was not used")
		}
		if !slices.Contains(d["MATERIALIZED VIEW"], "author_books") {
			t.Errorf("pre-data lacks MATERIALIZED VIEW author_books: %v", d)
		}
		for _, e := range pre {
			if e.Schema == "pgcaravan" || e.Tag == "pgcaravan" {
				t.Errorf("excluded schema pgcaravan in the dump: %+v", e)
			}
			switch e.Desc {
			case "INDEX", "CONSTRAINT", "FK CONSTRAINT", "INDEX ATTACH", "TRIGGER":
				t.Errorf("post-data entry in the pre-data list: %+v", e)
			}
		}
		if e, ok := find(pre, "TABLE", "author"); !ok || e.Schema != "public" || e.Owner != "postgres" || e.ObjOID == 0 {
			t.Errorf("TABLE author entry = %+v, want schema public, owner postgres and an OID", e)
		}
	})

	t.Run("post-data", func(t *testing.T) {
		d := descs(post)
		want := map[string][]string{
			"INDEX":            {"book_title_idx", "event_at_idx", "event_2024_at_idx"},
			"CONSTRAINT":       {"author author_pkey", "book book_pkey"},
			"FK CONSTRAINT":    {"book book_author_id_fkey"},
			"CHECK CONSTRAINT": {"book book_pages_positive"},
			"INDEX ATTACH":     {"event_2024_at_idx"},
			"TRIGGER":          {"book book_touch"},
			"COMMENT":          {"INDEX book_title_idx"},
		}
		for desc, tags := range want {
			for _, tag := range tags {
				if !slices.Contains(d[desc], tag) {
					t.Errorf("post-data %s entries %v lack %q", desc, d[desc], tag)
				}
			}
		}
		for _, e := range post {
			if e.Desc == "TABLE" || e.Desc == "SCHEMA" {
				t.Errorf("pre-data entry in the post-data list: %+v", e)
			}
			if !strings.HasPrefix(e.Line, strconv.Itoa(e.DumpID)+"; ") {
				t.Errorf("entry %+v has no usable list line", e)
			}
		}
	})

	dst := c.URI("dst")
	t.Run("restore pre-data", func(t *testing.T) {
		if err := tl.RestorePreData(ctx, file, mustParse(t, "target", dst), schema.RestoreOptions{}); err != nil {
			t.Fatalf("RestorePreData: %v", err)
		}
		tables := queryStrings(t, dst, `SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'public' AND relkind IN ('r', 'p', 'm') ORDER BY 1`)
		if want := []string{"author", "author_books", "book", "event", "event_2024"}; !slices.Equal(tables, want) {
			t.Errorf("tables on the target = %v, want %v", tables, want)
		}
		if idx := queryStrings(t, dst, `SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'`); len(idx) != 0 {
			t.Errorf("pre-data made indexes on the target: %v", idx)
		}
		if cons := queryStrings(t, dst, `SELECT conname::text FROM pg_constraint WHERE contype IN ('p', 'f', 'u') AND connamespace = 'public'::regnamespace`); len(cons) != 0 {
			t.Errorf("pre-data made constraints on the target: %v", cons)
		}
		if rows := queryStrings(t, dst, `SELECT name FROM author`); len(rows) != 0 {
			t.Errorf("a schema-only restore brought rows: %v", rows)
		}
		if s := queryStrings(t, dst, `SELECT nspname::text FROM pg_namespace WHERE nspname = 'pgcaravan'`); len(s) != 0 {
			t.Errorf("the excluded pgcaravan schema was restored")
		}
	})

	t.Run("entry sql", func(t *testing.T) {
		byID := map[int]schema.Entry{}
		for _, e := range post {
			byID[e.DumpID] = e
		}
		id := func(desc, tag string) int {
			e, ok := find(post, desc, tag)
			if !ok {
				t.Fatalf("no %s %s in post-data", desc, tag)
			}
			return e.DumpID
		}
		groups := [][]int{
			{id("INDEX", "book_title_idx")},
			{id("CONSTRAINT", "author author_pkey"), id("CONSTRAINT", "book book_pkey"), id("FK CONSTRAINT", "book book_author_id_fkey")},
			{id("INDEX", "event_at_idx"), id("INDEX", "event_2024_at_idx"), id("INDEX ATTACH", "event_2024_at_idx")},
		}
		sqls, err := tl.EntrySQL(ctx, file, byID, groups, schema.RestoreOptions{})
		if err != nil {
			t.Fatalf("EntrySQL: %v", err)
		}
		if len(sqls) != len(groups) {
			t.Fatalf("EntrySQL gave %d results for %d groups", len(sqls), len(groups))
		}
		wants := [][]string{
			{"CREATE INDEX book_title_idx ON public.book"},
			{"ALTER TABLE ONLY public.author", "ADD CONSTRAINT author_pkey PRIMARY KEY (id)", "ADD CONSTRAINT book_author_id_fkey FOREIGN KEY (author_id) REFERENCES public.author(id)"},
			{"CREATE INDEX event_at_idx ON ONLY public.event", "ALTER INDEX public.event_at_idx ATTACH PARTITION public.event_2024_at_idx"},
		}
		for i, sql := range sqls {
			for _, w := range wants[i] {
				if !strings.Contains(sql, w) {
					t.Errorf("group %d SQL lacks %q:\n%s", i, w, sql)
				}
			}
			if strings.Contains(sql, `\restrict`) || strings.Contains(sql, `\unrestrict`) {
				t.Errorf("group %d SQL keeps a psql meta-command:\n%s", i, sql)
			}
			if strings.Contains(sql, "book_pages_positive") || strings.Contains(sql, "book_touch") {
				t.Errorf("group %d SQL has entries it was not asked for:\n%s", i, sql)
			}
		}
		// The SQL runs as the worker runs it: several statements through the
		// simple protocol, in one transaction, in group order.
		conn, err := pgx.Connect(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		for i, sql := range sqls {
			if err := conn.PgConn().Exec(ctx, "BEGIN;\n"+sql+"\nCOMMIT;").Close(); err != nil {
				t.Fatalf("group %d SQL fails on the target: %v\n%s", i, err, sql)
			}
		}
		idx := queryStrings(t, dst, `SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`)
		if want := []string{"author_pkey", "book_pkey", "book_title_idx", "event_2024_at_idx", "event_at_idx"}; !slices.Equal(idx, want) {
			t.Errorf("indexes after running the groups = %v, want %v", idx, want)
		}
		if valid := queryStrings(t, dst, `SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'public.event_at_idx'::regclass`); !slices.Equal(valid, []string{"true"}) {
			t.Errorf("partitioned index event_at_idx valid = %v, want true once its partition is attached", valid)
		}

		if _, err := tl.EntrySQL(ctx, file, byID, [][]int{{999999}}, schema.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "999999") {
			t.Errorf("EntrySQL of an unknown dump id: %v, want an error naming it", err)
		}
	})
}

// TestRestorePreDataMissingRole restores a dump whose objects belong to a
// role the target server lacks: the error names the role and the way out,
// the single transaction leaves the target empty, and --no-owner --no-acl
// restore it.
func TestRestorePreDataMissingRole(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"src", "dst"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Exec(ctx, "src", `
CREATE ROLE caravan_owner;
CREATE ROLE caravan_reader;
CREATE TABLE first (id int);
CREATE TABLE owned (id int);
ALTER TABLE owned OWNER TO caravan_owner;
GRANT SELECT ON owned TO caravan_reader;`)
	if err != nil {
		t.Fatal(err)
	}
	tl := tools(t)
	file := filepath.Join(t.TempDir(), "schema.dump")
	if err := tl.Dump(ctx, mustParse(t, "source", c.URI("src")), file, schema.DumpOptions{}); err != nil {
		t.Fatal(err)
	}
	// Roles belong to the server: take them away so the dump names roles
	// the target does not have.
	err = c.Exec(ctx, "src", `
REASSIGN OWNED BY caravan_owner TO postgres;
DROP OWNED BY caravan_owner, caravan_reader;
DROP ROLE caravan_owner;
DROP ROLE caravan_reader;`)
	if err != nil {
		t.Fatal(err)
	}

	dst := mustParse(t, "target", c.URI("dst"))
	err = tl.RestorePreData(ctx, file, dst, schema.RestoreOptions{})
	if err == nil {
		t.Fatal("RestorePreData with a missing role succeeded")
	}
	for _, want := range []string{"caravan_owner", "--no-owner", "restore pre-data on target"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	if tables := queryStrings(t, c.URI("dst"), `SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace`); len(tables) != 0 {
		t.Errorf("a failed single-transaction restore left %v on the target", tables)
	}

	if err := tl.RestorePreData(ctx, file, dst, schema.RestoreOptions{NoOwner: true, NoACL: true}); err != nil {
		t.Fatalf("RestorePreData --no-owner --no-acl: %v", err)
	}
	owners := queryStrings(t, c.URI("dst"), `SELECT relname || ' ' || pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1`)
	if want := []string{"first postgres", "owned postgres"}; !slices.Equal(owners, want) {
		t.Errorf("tables and owners after --no-owner = %v, want %v", owners, want)
	}

	// A second restore into the same database: the hint says what to do.
	err = tl.RestorePreData(ctx, file, dst, schema.RestoreOptions{NoOwner: true, NoACL: true})
	if err == nil || !strings.Contains(err.Error(), "--drop-if-exists") {
		t.Errorf("restore into a non-empty target: %v, want the --drop-if-exists hint", err)
	}
	// --drop-if-exists (Clean) makes it succeed.
	if err := tl.RestorePreData(ctx, file, dst, schema.RestoreOptions{NoOwner: true, NoACL: true, Clean: true}); err != nil {
		t.Errorf("restore with Clean into a non-empty target: %v", err)
	}
}

// TestQuotedDatabaseNames dumps from and restores into databases whose names
// a conninfo string would misread (spaces, '=', quotes, backslashes).
func TestQuotedDatabaseNames(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	tl := tools(t)
	for _, name := range []string{`we'ird db=x`, `back\slash`, `dbname=postgres`} {
		t.Run(name, func(t *testing.T) {
			src, dst := name+" src", name
			for _, db := range []string{src, dst} {
				if err := c.CreateDatabase(ctx, db); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Exec(ctx, src, `CREATE TABLE marker (id int PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			srcURI := mustParse(t, "source", c.URI(src))
			if srcURI.Database() != src {
				t.Fatalf("pgtest URI parses to database %q, want %q", srcURI.Database(), src)
			}
			file := filepath.Join(t.TempDir(), "schema.dump")
			if err := tl.Dump(ctx, srcURI, file, schema.DumpOptions{}); err != nil {
				t.Fatalf("Dump from %q: %v", src, err)
			}
			if err := tl.RestorePreData(ctx, file, mustParse(t, "target", c.URI(dst)), schema.RestoreOptions{}); err != nil {
				t.Fatalf("RestorePreData into %q: %v", dst, err)
			}
			if got := queryStrings(t, c.URI(dst), `SELECT relname::text FROM pg_class WHERE relname = 'marker'`); len(got) != 1 {
				t.Errorf("table marker not restored into %q", dst)
			}
		})
	}
	// Nothing went to the database named by the misread string.
	if got := queryStrings(t, c.URI("postgres"), `SELECT relname::text FROM pg_class WHERE relname = 'marker'`); len(got) != 0 {
		t.Errorf("a restore went into database postgres")
	}
}

// TestDumpErrorHidesPassword: a failing pg_dump names the source, without
// its password.
func TestDumpErrorHidesPassword(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	raw := strings.Replace(c.URI("no_such_db"), "postgres@", "postgres:s3cret-pw@", 1)
	err := tools(t).Dump(ctx, mustParse(t, "source", raw), filepath.Join(t.TempDir(), "x.dump"), schema.DumpOptions{})
	if err == nil {
		t.Fatal("Dump of a missing database succeeded")
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("error shows the password: %v", err)
	}
	for _, want := range []string{"pg_dump", "no_such_db"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}
