package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// filterSchema has, for each filter section, something to leave out, and
// for each kind of dependent object something that depends on it.
const filterSchema = `
CREATE SCHEMA app;
CREATE SCHEMA "My Schema";
CREATE SCHEMA scratch;
CREATE TABLE app.customers (id serial PRIMARY KEY, name text NOT NULL);
COMMENT ON TABLE app.customers IS 'left out with [exclude-table]';
CREATE TABLE app.orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id int REFERENCES app.customers (id), total numeric NOT NULL);
CREATE INDEX orders_total_idx ON app.orders (total);
CREATE INDEX orders_customer_idx ON app.orders (customer_id);
CREATE VIEW app.customer_names AS SELECT id, name FROM app.customers;
CREATE VIEW app.order_totals AS SELECT sum(total) AS total FROM app.orders;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER customers_touch BEFORE INSERT ON app.customers FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TRIGGER orders_touch BEFORE INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX events_at_idx ON app.events (at);
CREATE TABLE app.audit (id bigserial PRIMARY KEY, what text);
CREATE INDEX audit_what_idx ON app.audit (what);
CREATE TABLE "My Schema"."Odd.Name" (id int PRIMARY KEY, note text);
CREATE TABLE "My Schema".kept (id int PRIMARY KEY);
CREATE TABLE scratch.tmp (x int);
CREATE VIEW app.scratch_view AS SELECT x FROM scratch.tmp;

INSERT INTO app.customers (name) SELECT 'c' || g FROM generate_series(1, 200) g;
INSERT INTO app.orders (customer_id, total) SELECT 1 + g % 200, g FROM generate_series(1, 2000) g;
INSERT INTO app.events SELECT g, date '2024-01-01' + (g % 700) FROM generate_series(1, 3000) g;
INSERT INTO app.audit (what) SELECT 'a' || g FROM generate_series(1, 500) g;
INSERT INTO "My Schema"."Odd.Name" SELECT g, 'n' FROM generate_series(1, 50) g;
INSERT INTO "My Schema".kept SELECT g FROM generate_series(1, 30) g;
INSERT INTO scratch.tmp SELECT g FROM generate_series(1, 10) g;
`

// filterFile uses every section that can go with exclusions; include-only
// sections are covered by TestPlanIncludeOnly and the filter package.
const filterFile = `# what the clone leaves out
[exclude-schema]
scratch                   # and app.scratch_view, which reads it

[exclude-table]
app.customers             # its view, trigger, comment, owned sequence and the FK from orders go too
app.events_2024           # one leaf partition
"My Schema"."Odd.Name"

[exclude-index]
app.orders_total_idx

[exclude-table-data]
app.audit

[exclude-extension]
pg_trgm
`

// expectSQL turns a copy of the source into what the filtered clone must
// be: the same drops, done by PostgreSQL's own dependency rules.
const expectSQL = `
DROP SCHEMA scratch CASCADE;
DROP TABLE app.customers CASCADE;
DROP TABLE app.events_2024;
DROP TABLE "My Schema"."Odd.Name";
DROP INDEX app.orders_total_idx;
TRUNCATE app.audit;
`

// filterSource starts a cluster with filterSchema in database app, and
// pg_trgm when the server has it.
func filterSource(t *testing.T) (*pgtest.Cluster, bool) {
	t.Helper()
	src := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", filterSchema); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, src.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var trgm bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm')`).Scan(&trgm); err != nil {
		t.Fatal(err)
	}
	if trgm {
		if _, err := conn.Exec(ctx, `CREATE EXTENSION pg_trgm`); err != nil {
			t.Fatal(err)
		}
	}
	return src, trgm
}

// TestCloneWithFilters clones with a filter file and checks that the target
// is exactly the source with the filtered objects dropped: verify compares
// it with a copy of the source on which the same objects were dropped with
// DROP ... CASCADE. The store records what was skipped and why, and the
// plan command, run before, said the same.
func TestCloneWithFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src, trgm := filterSource(t)
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	filters := filepath.Join(t.TempDir(), "filters.ini")
	if err := os.WriteFile(filters, []byte(filterFile), 0o600); err != nil {
		t.Fatal(err)
	}

	// 1. plan --json --list-skipped writes nothing and says what the clone
	// will do.
	out, code := run(t, 5*time.Minute, "plan", "--json", "--list-skipped", "--source", src.URI("app"), "--target", dst.URI("app"), "--filters", filters)
	if code != 0 {
		t.Fatalf("plan exited %d:\n%s", code, out)
	}
	var p struct {
		Tables []struct {
			Schema, Name, Copy string
			Bytes              int64
		} `json:"tables"`
		Units []struct {
			Kind, Table, Description string
		} `json:"units"`
		SkippedCount int      `json:"skipped_count"`
		Skipped      []string `json:"skipped"`
		Warnings     []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, out)
	}
	var tables []string
	for _, tb := range p.Tables {
		tables = append(tables, tb.Schema+"."+tb.Name+":"+tb.Copy)
	}
	wantTables := []string{"My Schema.kept:whole", "app.audit:no data", "app.events:none", "app.events_2025:whole", "app.orders:whole"}
	if !slices.Equal(tables, wantTables) {
		t.Errorf("plan tables %q, want %q", tables, wantTables)
	}
	for _, u := range p.Units {
		if u.Description == "orders_total_idx" || u.Table == "app.customers" || strings.Contains(u.Table, "events_2024") {
			t.Errorf("plan has a unit for an excluded object: %+v", u)
		}
	}
	wantSkipped := []string{
		"table app.customers: excluded by [exclude-table]",
		"view app customer_names: depends on table app.customers",
		"trigger app customers customers_touch: depends on table app.customers",
		"fk constraint app orders orders_customer_id_fkey: depends on table app.customers",
		"sequence app customers_id_seq: owned by table app.customers",
		"partition app.events_2024: excluded by [exclude-table]",
		`table "My Schema"."Odd.Name": excluded by [exclude-table]`,
		"index app orders_total_idx: excluded by [exclude-index]",
		"table app.audit: rows not copied, [exclude-table-data]",
		"schema scratch: excluded by [exclude-schema]",
		"view app scratch_view: depends on",
	}
	if trgm {
		wantSkipped = append(wantSkipped, "extension pg_trgm: excluded by [exclude-extension]")
	}
	for _, want := range wantSkipped {
		if !slices.ContainsFunc(p.Skipped, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("plan --list-skipped lacks %q:\n  %s", want, strings.Join(p.Skipped, "\n  "))
		}
	}
	if p.SkippedCount != len(p.Skipped) {
		t.Errorf("skipped_count %d, but %d listed", p.SkippedCount, len(p.Skipped))
	}
	if !trgm && len(p.Warnings) != 1 {
		t.Errorf("want one warning for [exclude-extension] pg_trgm, which matches nothing: %q", p.Warnings)
	}
	assertEmpty(t, dst.URI("app"))

	// 2. The clone. The target already has objects the filter leaves out:
	// they are not in the way.
	if err := dst.Exec(ctx, "app", `CREATE SCHEMA scratch; CREATE TABLE scratch.tmp (x int)`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--filters", filters)
	if code != 0 {
		t.Fatalf("clone exited %d:\n%s", code, out)
	}
	if err := dst.Exec(ctx, "app", `DROP SCHEMA scratch CASCADE`); err != nil {
		t.Fatal(err)
	}

	// 3. The target is the source minus what was left out.
	if err := src.Exec(ctx, "postgres", `CREATE DATABASE expect TEMPLATE app`); err != nil {
		t.Fatal(err)
	}
	drops := expectSQL
	if trgm {
		drops += "DROP EXTENSION pg_trgm;\n"
	}
	if err := src.Exec(ctx, "expect", drops); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, src.URI("expect"), dst.URI("app"))

	// verify --filters reaches the same answer against the source itself,
	// finding the dependents on the source's pg_depend.
	out, code = run(t, 5*time.Minute, "verify", "--source", src.URI("app"), "--target", dst.URI("app"), "--filters", filters)
	if code != 0 {
		t.Errorf("verify --filters exited %d:\n%s", code, out)
	}
	out, code = run(t, 5*time.Minute, "verify", "--source", src.URI("app"), "--target", dst.URI("app"))
	if code != 1 || !strings.Contains(out, "customers") {
		t.Errorf("verify without the filters exited %d, want 1 and the left-out tables reported:\n%s", code, out)
	}

	// 4. The store says what was skipped.
	st, err := store.Open(dir, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	meta, err := st.Meta()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(meta.Skipped, p.Skipped) {
		t.Errorf("store skipped:\n  %s\nplan said:\n  %s", strings.Join(meta.Skipped, "\n  "), strings.Join(p.Skipped, "\n  "))
	}
	if meta.Filters == nil || len(meta.Filters.ExcludeTables) != 3 {
		t.Errorf("store filters %+v, want the three [exclude-table] entries", meta.Filters)
	}
	st.Close()

	// 5. The --dir keeps its filters: the same clone without them is
	// refused (not resumed with the old ones in silence), with them it is
	// already complete.
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--exclude-table", "app.orders")
	if code == 0 || !strings.Contains(out, "planned with the filters [exclude-schema] scratch") || !strings.Contains(out, "now say [exclude-table] app.orders") {
		t.Errorf("clone on the same --dir with other filters exited %d, want a refusal naming both filters:\n%s", code, out)
	}
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--filters", filters)
	if code != 0 {
		t.Errorf("clone on the same --dir with the same filters exited %d:\n%s", code, out)
	}
}

// TestPlanIncludeOnly: --table keeps only the tables named (and the
// partitions of a partitioned one), the text output says what is skipped,
// and conflicting filters are refused before anything is read.
func TestPlanIncludeOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src, _ := filterSource(t)
	dst := pgtest.Start(t, pgtest.Options{})
	if err := dst.CreateDatabase(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, 5*time.Minute, "plan", "--list-skipped", "--source", src.URI("app"), "--target", dst.URI("app"),
		"--table", "app.events", "--table", "app.orders", "--exclude-table-data", "app.orders")
	if code != 0 {
		t.Fatalf("plan exited %d:\n%s", code, out)
	}
	for _, want := range []string{
		"app.events_2024", "app.events_2025", "app.orders", "no data",
		"table app.customers: not in [include-only-table]",
		"table app.audit: not in [include-only-table]",
		"fk constraint app orders orders_customer_id_fkey: depends on table app.customers",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "My Schema") && !strings.Contains(out, `"My Schema".kept: not in [include-only-table]`) {
		t.Errorf("plan output keeps a table of \"My Schema\":\n%s", out)
	}
	assertEmpty(t, dst.URI("app"))

	// Planning a --follow clone creates no publication and no slot.
	out, code = run(t, 5*time.Minute, "plan", "--follow", "--json", "--source", src.URI("app"), "--target", dst.URI("app"))
	if code != 0 {
		t.Fatalf("plan --follow exited %d:\n%s", code, out)
	}
	conn, err := pgx.Connect(context.Background(), src.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var slots, pubs int
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)`).Scan(&slots, &pubs); err != nil {
		t.Fatal(err)
	}
	if slots != 0 || pubs != 0 {
		t.Errorf("plan --follow left %d slots and %d publications on the source", slots, pubs)
	}

	out, code = run(t, time.Minute, "plan", "--source", src.URI("app"), "--target", dst.URI("app"),
		"--table", "app.orders", "--exclude-schema", "scratch")
	if code == 0 || !strings.Contains(out, "cannot be combined with") {
		t.Errorf("plan with --table and --exclude-schema exited %d, want a refusal naming the conflict:\n%s", code, out)
	}
	out, code = run(t, time.Minute, "clone", "--quiet", "--source", src.URI("app"), "--target", dst.URI("app"),
		"--table", "app.orders", "--exclude-table", "app.audit")
	if code == 0 || !strings.Contains(out, "cannot be combined with") {
		t.Errorf("clone with --table and --exclude-table exited %d, want a refusal naming the conflict:\n%s", code, out)
	}
	assertEmpty(t, dst.URI("app"))
}

// assertEmpty fails unless the database has no user relations.
func assertEmpty(t *testing.T, uri string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the target has %d relations; the plan command must not write", n)
	}
}

// TestFollowPublicationHonoursFilters: with --follow, the publication made
// before the snapshot carries only the tables the filter keeps (and not the
// [exclude-table-data] ones), and cleanup drops it with the slot.
func TestFollowPublicationHonoursFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src, _ := filterSource(t)
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	dir, addr := t.TempDir(), freeAddr(t)
	coord := start(t, "coordinator", "coordinator", "--follow", "--source", src.URI("app"), "--target", dst.URI("app"),
		"--dir", dir, "--listen", addr, "--exclude-schema", "scratch", "--exclude-table", "app.customers",
		"--exclude-table", "app.events_2024", "--exclude-table-data", "app.audit")

	conn, err := pgx.Connect(ctx, src.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The plan is saved once the pre-data restore is done: then the
	// publication is final.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, code := run(t, time.Minute, "status", "--coordinator", addr, "--json")
		if code == 0 && strings.Contains(out, "PHASE_COPY") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator did not reach the copy phase:\n%s\n%s", out, coord.output())
		}
		time.Sleep(300 * time.Millisecond)
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT schemaname || '.' || tablename FROM pg_publication_tables ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	published, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"My Schema.Odd.Name", "My Schema.kept", "app.events_2025", "app.orders"}
	if !slices.Equal(published, want) {
		t.Errorf("published tables %q, want %q", published, want)
	}

	if err := coord.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	coord.wait(t, time.Minute)
	out, code := run(t, 2*time.Minute, "cleanup", "--dir", dir, "--source", src.URI("app"), "--target", dst.URI("app"))
	if code != 0 {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	var slots, pubs int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)`).Scan(&slots, &pubs); err != nil {
		t.Fatal(err)
	}
	if slots != 0 || pubs != 0 {
		t.Errorf("after cleanup the source has %d slots and %d publications", slots, pubs)
	}
}

// TestClonePagilaWithFilters clones pagila without film (and so its views,
// the materialized view on it and the foreign keys to it), without one
// payment partition and without rental's rows (and so the foreign keys of
// payment to rental), and checks the result with verify --filters, which
// finds the dependents on the source's catalog by itself.
func TestClonePagilaWithFilters(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src := pgtest.Start(t, pgtest.Options{})
	pgtest.LoadPagila(t, src, "pagila")
	dst := pgtest.Start(t, pgtest.Options{})
	if err := dst.CreateDatabase(context.Background(), "pagila"); err != nil {
		t.Fatal(err)
	}
	filters := filepath.Join(t.TempDir(), "filters.ini")
	if err := os.WriteFile(filters, []byte("[exclude-table]\npublic.film\npublic.payment_p2022_01\n\n[exclude-table-data]\npublic.rental\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, 10*time.Minute, "clone", "--quiet", "--source", src.URI("pagila"), "--target", dst.URI("pagila"),
		"--dir", t.TempDir(), "--filters", filters)
	if code != 0 {
		t.Fatalf("clone exited %d:\n%s", code, out)
	}
	out, code = run(t, 10*time.Minute, "verify", "--source", src.URI("pagila"), "--target", dst.URI("pagila"), "--filters", filters)
	if code != 0 {
		t.Fatalf("verify --filters exited %d:\n%s", code, out)
	}
	for _, want := range []string{"public.rental  0 (table data excluded by the filter)", "public.payment_p2022_02"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
}
