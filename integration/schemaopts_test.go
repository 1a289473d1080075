package integration

import (
	"context"
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

// optsRoles are the source server's roles: app_owner owns the schema,
// ghost exists only on the source, and reader is also made on the targets
// with another connection limit, which a clone must leave as it is.
const optsRoles = `
CREATE ROLE reader CONNECTION LIMIT 7;
CREATE ROLE app_owner LOGIN PASSWORD 'owner secret';
CREATE ROLE ghost LOGIN PASSWORD 'ghost secret';
GRANT reader TO app_owner;
`

// optsSchema has comments, two extensions (one used by a table, one not),
// materialized views (one whose data the clone leaves out, and one that
// reads it), and settings on the database and on roles in it.
const optsSchema = `
CREATE EXTENSION hstore;
CREATE EXTENSION pg_trgm;
COMMENT ON EXTENSION hstore IS 'custom hstore comment';
CREATE SCHEMA app AUTHORIZATION app_owner;
CREATE TABLE app.items (id int PRIMARY KEY, name text NOT NULL);
ALTER TABLE app.items OWNER TO app_owner;
GRANT SELECT ON app.items TO reader;
COMMENT ON TABLE app.items IS 'the items';
COMMENT ON COLUMN app.items.name IS 'what it is called';
CREATE TABLE app.props (id int PRIMARY KEY, h hstore);
CREATE MATERIALIZED VIEW app.item_count AS SELECT count(*) AS n FROM app.items;
CREATE MATERIALIZED VIEW app.long_names AS SELECT id, name FROM app.items WHERE length(name) > 3;
CREATE MATERIALIZED VIEW app.long_count AS SELECT count(*) AS n FROM app.long_names;
INSERT INTO app.items SELECT g, 'item' || g FROM generate_series(1, 500) g;
INSERT INTO app.props SELECT g, hstore('k', g::text) FROM generate_series(1, 100) g;
REFRESH MATERIALIZED VIEW app.item_count;
REFRESH MATERIALIZED VIEW app.long_names;
REFRESH MATERIALIZED VIEW app.long_count;
ALTER DATABASE app SET work_mem TO '12MB';
ALTER DATABASE app SET search_path TO "$user", public, app;
ALTER ROLE app_owner IN DATABASE app SET statement_timeout TO '42s';
ALTER ROLE ghost IN DATABASE app SET lock_timeout TO '7s';
`

// optsSource starts a server with optsRoles and database app with
// optsSchema; it skips the test when the server has no hstore or pg_trgm.
func optsSource(t *testing.T) *pgtest.Cluster {
	t.Helper()
	ctx := context.Background()
	src := pgtest.Start(t, pgtest.Options{})
	if n := queryInt(t, src.URI("postgres"), `SELECT count(*) FROM pg_available_extensions WHERE name IN ('hstore', 'pg_trgm')`); n != 2 {
		t.Skip("this PostgreSQL has no hstore or pg_trgm (install its contrib package)")
	}
	if err := src.Exec(ctx, "postgres", optsRoles); err != nil {
		t.Fatal(err)
	}
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", optsSchema); err != nil {
		t.Fatal(err)
	}
	return src
}

func queryInt(t *testing.T, uri, sql string, args ...any) int {
	t.Helper()
	var n int
	queryRow(t, uri, sql, []any{&n}, args...)
	return n
}

func queryString(t *testing.T, uri, sql string, args ...any) string {
	t.Helper()
	var s *string
	queryRow(t, uri, sql, []any{&s}, args...)
	if s == nil {
		return "(null)"
	}
	return *s
}

func queryRow(t *testing.T, uri, sql string, dst []any, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql, args...).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// dbSettings are the database's settings as "role setconfig" lines ("-"
// for the database's own), sorted.
func dbSettings(t *testing.T, uri string) []string {
	t.Helper()
	return queryStrings(t, uri, `SELECT coalesce(r.rolname, '-') || ' ' || s.setconfig::text
		FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
		WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1`)
}

// queryStrings returns the one text column of a query's rows.
func queryStrings(t *testing.T, uri, sql string, args ...any) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const (
	commentsSQL = `SELECT count(*) FROM pg_description d JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'`
	hstoreCommentSQL = `SELECT obj_description(oid, 'pg_extension') FROM pg_extension WHERE extname = 'hstore'`
	passwordSQL      = `SELECT rolpassword FROM pg_authid WHERE rolname = $1`
)

// TestCloneSchemaOptions clones one source three times:
//
//   - with --roles, --no-comments and a matview's data excluded, onto a
//     server that already has one of the roles;
//   - with the defaults, onto a server that has the roles: settings are
//     copied, except those of a role the target lacks, and verify finds no
//     difference (then one comment is dropped: verify sees it, and verify
//     --no-comments does not);
//   - with --roles --no-role-passwords --skip-db-properties
//     --skip-extensions, onto a database that has hstore already.
func TestCloneSchemaOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ctx := context.Background()
	src := optsSource(t)
	srcApp := src.URI("app")

	// 1. --roles --no-comments, and app.long_names' data left out.
	dstA := pgtest.Start(t, pgtest.Options{})
	if err := dstA.Exec(ctx, "postgres", `CREATE ROLE reader CONNECTION LIMIT 3`); err != nil {
		t.Fatal(err)
	}
	if err := dstA.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	a := dstA.URI("app")
	dir := t.TempDir()
	out, code := run(t, 5*time.Minute, "clone", "--quiet", "--source", srcApp, "--target", a, "--dir", dir,
		"--roles", "--no-comments", "--exclude-table-data", "app.long_names")
	if code != 0 {
		t.Fatalf("clone --roles --no-comments exited %d:\n%s", code, out)
	}
	for _, role := range []string{"app_owner", "ghost"} {
		if got, want := queryString(t, a, passwordSQL, role), queryString(t, srcApp, passwordSQL, role); got != want || !strings.HasPrefix(got, "SCRAM-SHA-256$") {
			t.Errorf("--roles: password of %s on the target %q, on the source %q", role, got, want)
		}
	}
	if n := queryInt(t, a, `SELECT rolconnlimit FROM pg_roles WHERE rolname = 'reader'`); n != 3 {
		t.Errorf("--roles changed the target's own role reader: connection limit %d, want 3", n)
	}
	if n := queryInt(t, a, `SELECT count(*) FROM pg_roles WHERE pg_has_role(oid, 'reader', 'MEMBER') AND rolname = 'app_owner'`); n != 1 {
		t.Error("--roles: app_owner is not a member of reader on the target")
	}
	if owner := queryString(t, a, `SELECT tableowner::text FROM pg_tables WHERE schemaname = 'app' AND tablename = 'items'`); owner != "app_owner" {
		t.Errorf("app.items is owned by %s on the target, want app_owner", owner)
	}
	if n := queryInt(t, srcApp, commentsSQL); n != 2 {
		t.Fatalf("the source has %d comments in app, want 2", n)
	}
	if n := queryInt(t, a, commentsSQL); n != 0 {
		t.Errorf("--no-comments: the target has %d comments in app", n)
	}
	if c := queryString(t, a, hstoreCommentSQL); c == "custom hstore comment" {
		t.Errorf("--no-comments: the comment on hstore was restored")
	}
	if n := queryInt(t, a, `SELECT count(*) FROM pg_extension WHERE extname IN ('hstore', 'pg_trgm')`); n != 2 {
		t.Errorf("the target has %d of hstore and pg_trgm, want both", n)
	}
	// Materialized views: refreshed after the data, except the one whose
	// data is left out, and the one that reads it.
	var populated []string
	queryRow(t, a, `SELECT array_agg(matviewname::text || ':' || ispopulated ORDER BY matviewname) FROM pg_matviews WHERE schemaname = 'app'`, []any{&populated})
	if want := []string{"item_count:true", "long_count:false", "long_names:false"}; !slices.Equal(populated, want) {
		t.Errorf("materialized views on the target %q, want %q", populated, want)
	}
	if n := queryInt(t, a, `SELECT n FROM app.item_count`); n != 500 {
		t.Errorf("app.item_count on the target says %d, want 500: refreshed before the data?", n)
	}
	want := []string{"- {work_mem=12MB,\"search_path=\\\"$user\\\", public, app\"}", "app_owner {statement_timeout=42s}", "ghost {lock_timeout=7s}"}
	if got := dbSettings(t, a); !slices.Equal(got, dbSettings(t, srcApp)) || !slices.Equal(got, want) {
		t.Errorf("database settings on the target:\n  %s\non the source:\n  %s\nwant\n  %s", strings.Join(got, "\n  "),
			strings.Join(dbSettings(t, srcApp), "\n  "), strings.Join(want, "\n  "))
	}
	meta := readMeta(t, dir)
	if !slices.ContainsFunc(meta.Skipped, func(s string) bool {
		return strings.Contains(s, "materialized view app.long_count: not refreshed, it reads materialized view app.long_names")
	}) {
		t.Errorf("the store does not say app.long_count is not refreshed:\n  %s", strings.Join(meta.Skipped, "\n  "))
	}

	// 2. The defaults, onto a server that has the roles but ghost.
	dstB := pgtest.Start(t, pgtest.Options{})
	if err := dstB.Exec(ctx, "postgres", `CREATE ROLE reader; CREATE ROLE app_owner LOGIN; GRANT reader TO app_owner;`); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"b", "c"} {
		if err := dstB.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	b := dstB.URI("b")
	out, code = run(t, 5*time.Minute, "plan", "--list-skipped", "--source", srcApp, "--target", b)
	if code != 0 || !strings.Contains(out, "database settings (3)") || !strings.Contains(out, "setting lock_timeout of role ghost in the database: not copied") {
		t.Errorf("plan exited %d, want the settings unit and ghost's setting skipped:\n%s", code, out)
	}
	dir = t.TempDir()
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--source", srcApp, "--target", b, "--dir", dir)
	if code != 0 {
		t.Fatalf("clone exited %d:\n%s", code, out)
	}
	want = []string{"- {work_mem=12MB,\"search_path=\\\"$user\\\", public, app\"}", "app_owner {statement_timeout=42s}"}
	if got := dbSettings(t, b); !slices.Equal(got, want) {
		t.Errorf("database settings on the target:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if n := queryInt(t, b, `SELECT count(*) FROM pg_roles WHERE rolname = 'ghost'`); n != 0 {
		t.Error("without --roles, role ghost was made on the target")
	}
	meta = readMeta(t, dir)
	if !slices.ContainsFunc(meta.Skipped, func(s string) bool { return strings.Contains(s, "setting lock_timeout of role ghost") }) {
		t.Errorf("the store does not say ghost's setting is not copied:\n  %s", strings.Join(meta.Skipped, "\n  "))
	}
	if c := queryString(t, b, hstoreCommentSQL); c != "custom hstore comment" {
		t.Errorf("the comment on hstore is %q on the target", c)
	}
	out, code = run(t, 5*time.Minute, "verify", "--source", srcApp, "--target", b)
	if code != 0 {
		t.Fatalf("verify exited %d:\n%s", code, out)
	}
	if err := dstB.Exec(ctx, "b", `COMMENT ON TABLE app.items IS NULL`); err != nil {
		t.Fatal(err)
	}
	out, code = run(t, 5*time.Minute, "verify", "--source", srcApp, "--target", b)
	if code != 1 || !strings.Contains(out, "the items") {
		t.Errorf("verify of a target without a comment exited %d, want 1 and the comment reported:\n%s", code, out)
	}
	out, code = run(t, 5*time.Minute, "verify", "--no-comments", "--source", srcApp, "--target", b)
	if code != 0 {
		t.Errorf("verify --no-comments exited %d:\n%s", code, out)
	}

	// 3. --roles --no-role-passwords --skip-db-properties --skip-extensions,
	// onto a database that has hstore (as a managed service would).
	c := dstB.URI("c")
	if err := dstB.Exec(ctx, "c", `CREATE EXTENSION hstore`); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--source", srcApp, "--target", c, "--dir", dir,
		"--roles", "--no-role-passwords", "--skip-db-properties", "--skip-extensions")
	if code != 0 {
		t.Fatalf("clone --roles --no-role-passwords --skip-db-properties --skip-extensions exited %d:\n%s", code, out)
	}
	if p := queryString(t, c, passwordSQL, "ghost"); p != "(null)" {
		t.Errorf("--no-role-passwords: ghost's password on the target is %q", p)
	}
	if n := queryInt(t, c, `SELECT rolcanlogin::int FROM pg_roles WHERE rolname = 'ghost'`); n != 1 {
		t.Error("--roles: ghost cannot log in on the target")
	}
	if got := dbSettings(t, c); len(got) != 0 {
		t.Errorf("--skip-db-properties: the target has settings %q", got)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'`); n != 0 {
		t.Error("--skip-extensions: pg_trgm was created on the target")
	}
	if cm := queryString(t, c, hstoreCommentSQL); cm == "custom hstore comment" {
		t.Error("--skip-extensions: the comment on hstore was restored")
	}
	if n := queryInt(t, c, commentsSQL); n != 2 {
		t.Errorf("the target has %d comments in app, want 2", n)
	}
	if n := queryInt(t, c, `SELECT count(*) FROM app.props WHERE h -> 'k' = id::text`); n != 100 {
		t.Errorf("app.props on the target has %d rows, want 100", n)
	}
	meta = readMeta(t, dir)
	for _, want := range []string{"extension pg_trgm: not created (--skip-extensions)", "comment EXTENSION hstore: not restored (--skip-extensions)"} {
		if !slices.Contains(meta.Skipped, want) {
			t.Errorf("the store's skipped list lacks %q:\n  %s", want, strings.Join(meta.Skipped, "\n  "))
		}
	}
}

func readMeta(t *testing.T, dir string) store.Meta {
	t.Helper()
	st, err := store.Open(dir, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	meta, err := st.Meta()
	if err != nil {
		t.Fatal(err)
	}
	return meta
}

// afterSchemaSQL gives app.items a column whose default only rows written
// after it get: every row has it if and only if the file ran before the
// data was copied. It also counts its runs.
const afterSchemaSQL = `-- run by pgcaravan after the pre-data schema
ALTER TABLE app.items ADD COLUMN copied_by text;
ALTER TABLE app.items ALTER COLUMN copied_by SET DEFAULT 'after-schema';
CREATE TABLE app.after_schema_runs (n int);
INSERT INTO app.after_schema_runs VALUES (1);
`

// TestAfterSchema: a file that changes the target schema before the data
// lands; a failing file stops the clone, naming the file and the
// statement, before any data; a missing file is refused before anything is
// done; and the file runs once even when the coordinator is restarted.
func TestAfterSchema(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ctx := context.Background()
	src := optsSource(t)
	srcApp := src.URI("app")
	dst := pgtest.Start(t, pgtest.Options{})
	if err := dst.Exec(ctx, "postgres", optsRoles); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"good", "bad", "missing", "resume"} {
		if err := dst.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	files := t.TempDir()
	good := filepath.Join(files, "after.sql")
	bad := filepath.Join(files, "bad.sql")
	if err := os.WriteFile(good, []byte(afterSchemaSQL), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("CREATE TABLE app.first (x int);\n\nALTER TABLE app.nosuch\n  ADD COLUMN y int;\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// 1. The file runs before the data: every copied row has the default.
	out, code := run(t, 5*time.Minute, "clone", "--quiet", "--source", srcApp, "--target", dst.URI("good"), "--dir", t.TempDir(), "--after-schema", good)
	if code != 0 {
		t.Fatalf("clone --after-schema exited %d:\n%s", code, out)
	}
	if n := queryInt(t, dst.URI("good"), `SELECT count(*) FROM app.items WHERE copied_by = 'after-schema'`); n != 500 {
		t.Errorf("%d of 500 rows have the default the file set: it did not run before the data", n)
	}
	if n := queryInt(t, dst.URI("good"), `SELECT sum(n) FROM app.after_schema_runs`); n != 1 {
		t.Errorf("the file ran %d times", n)
	}

	// 2. A failing file: the clone stops, names the file, the statement and
	// its line; nothing of the file and no data is on the target.
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--source", srcApp, "--target", dst.URI("bad"), "--dir", t.TempDir(), "--after-schema", bad)
	if code == 0 {
		t.Fatalf("clone with a failing --after-schema file exited 0:\n%s", out)
	}
	for _, want := range []string{bad + ": statement 2 (line 3) failed", `relation "app.nosuch" does not exist`, "ALTER TABLE app.nosuch ADD COLUMN y int", "--drop-if-exists"} {
		if !strings.Contains(out, want) {
			t.Errorf("the clone's error lacks %q:\n%s", want, out)
		}
	}
	if n := queryInt(t, dst.URI("bad"), `SELECT count(*) FROM pg_tables WHERE schemaname = 'app' AND tablename = 'first'`); n != 0 {
		t.Error("the failing file's first statement was not rolled back")
	}
	if n := queryInt(t, dst.URI("bad"), `SELECT count(*) FROM app.items`); n != 0 {
		t.Errorf("the clone copied %d rows after the file failed", n)
	}

	// 3. A missing file is refused before anything is done on the target.
	missing := filepath.Join(files, "nosuch.sql")
	out, code = run(t, time.Minute, "clone", "--quiet", "--source", srcApp, "--target", dst.URI("missing"), "--dir", t.TempDir(), "--after-schema", missing)
	if code == 0 || !strings.Contains(out, "--after-schema "+missing+": no such file") {
		t.Errorf("clone with a missing --after-schema file exited %d, want a refusal naming it:\n%s", code, out)
	}
	assertEmpty(t, dst.URI("missing"))
	out, code = run(t, time.Minute, "clone", "--quiet", "--source", srcApp, "--target", dst.URI("missing"), "--dir", t.TempDir(), "--no-role-passwords")
	if code == 0 || !strings.Contains(out, "--no-role-passwords only applies to --roles") {
		t.Errorf("clone --no-role-passwords without --roles exited %d, want a refusal:\n%s", code, out)
	}
	assertEmpty(t, dst.URI("missing"))

	// 4. A coordinator killed after the schema phase and restarted on the
	// same --dir resumes without running the file again.
	dir, addr := t.TempDir(), freeAddr(t)
	args := []string{"coordinator", "--source", srcApp, "--target", dst.URI("resume"), "--dir", dir, "--listen", addr, "--after-schema", good}
	coord := start(t, "coordinator", args...)
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
	if err := coord.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	coord.wait(t, time.Minute)
	coord = start(t, "coordinator-again", args...)
	w := start(t, "worker", "worker", "--coordinator", addr, "--source", srcApp, "--target", dst.URI("resume"))
	if code := coord.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("the restarted coordinator exited %d:\n%s", code, coord.output())
	}
	w.wait(t, time.Minute)
	if n := queryInt(t, dst.URI("resume"), `SELECT sum(n) FROM app.after_schema_runs`); n != 1 {
		t.Errorf("after a coordinator restart the file has run %d times, want 1", n)
	}
	if n := queryInt(t, dst.URI("resume"), `SELECT count(*) FROM app.items WHERE copied_by = 'after-schema'`); n != 500 {
		t.Errorf("%d of 500 rows have the file's default after the restart", n)
	}
}

// partSchema has public.events, a plain table with a primary key that
// includes created_at, a secondary index, a CHECK constraint in its
// definition and a NOT VALID one (restored in post-data), a foreign key to
// customers and one from notes.
const partSchema = `
CREATE TABLE public.customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.events (
	id bigint NOT NULL,
	created_at timestamptz NOT NULL,
	customer_id int NOT NULL,
	kind text NOT NULL,
	CONSTRAINT events_kind_check CHECK (kind <> ''),
	CONSTRAINT events_pkey PRIMARY KEY (id, created_at)
);
CREATE INDEX events_kind_idx ON public.events (kind);
CREATE TABLE public.notes (
	id int PRIMARY KEY,
	event_id bigint NOT NULL,
	event_at timestamptz NOT NULL,
	body text,
	CONSTRAINT notes_event_fk FOREIGN KEY (event_id, event_at) REFERENCES public.events (id, created_at)
);
INSERT INTO public.customers SELECT g, 'customer ' || g FROM generate_series(1, 10) g;
INSERT INTO public.events
	SELECT g, timestamptz '2023-07-01 00:00:00+00' + g * interval '5 hours', 1 + g % 10, 'kind' || g % 7
	FROM generate_series(1, 3000) g;
INSERT INTO public.notes SELECT g, g * 20, timestamptz '2023-07-01 00:00:00+00' + g * 20 * interval '5 hours', 'note'
	FROM generate_series(1, 100) g;
ALTER TABLE public.events ADD CONSTRAINT events_customer_fk FOREIGN KEY (customer_id) REFERENCES public.customers (id);
ALTER TABLE public.events ADD CONSTRAINT events_id_positive CHECK (id > 0) NOT VALID;
`

// partAfterSchema turns public.events into a table partitioned by range of
// created_at, as the partitioning guides do, before any row is copied.
const partAfterSchema = `
DROP TABLE public.events;
CREATE TABLE public.events (
	id bigint NOT NULL,
	created_at timestamptz NOT NULL,
	customer_id int NOT NULL,
	kind text NOT NULL,
	CONSTRAINT events_kind_check CHECK (kind <> '')
) PARTITION BY RANGE (created_at);
CREATE TABLE public.events_2023 PARTITION OF public.events FOR VALUES FROM (MINVALUE) TO ('2024-01-01 00:00:00+00');
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00');
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01 00:00:00+00') TO (MAXVALUE);
`

// TestAfterSchemaPartitioned checks that --after-schema can turn a plain
// table into a partitioned one: the clone copies its rows into the right
// partitions, makes its primary key (valid on every partition), index,
// checks and foreign keys (both ways) on the whole tree, and verify
// compares it with the source's plain table.
func TestAfterSchemaPartitioned(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ctx := context.Background()
	src := pgtest.Start(t, pgtest.Options{})
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", partSchema); err != nil {
		t.Fatal(err)
	}
	dst := pgtest.Start(t, pgtest.Options{})
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "partition.sql")
	if err := os.WriteFile(file, []byte(partAfterSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	srcApp, dstApp := src.URI("app"), dst.URI("app")

	out, code := run(t, 5*time.Minute, "clone", "--quiet", "--source", srcApp, "--target", dstApp, "--dir", t.TempDir(), "--after-schema", file)
	if code != 0 {
		t.Fatalf("clone --after-schema (partitioning public.events) exited %d:\n%s", code, out)
	}
	if k := queryString(t, dstApp, `SELECT relkind::text FROM pg_class WHERE oid = 'public.events'::regclass`); k != "p" {
		t.Fatalf("public.events has relkind %s on the target, want p", k)
	}

	// 1. Every row is in the partition its created_at falls in.
	for _, p := range []struct{ name, cond string }{
		{"events_2023", `created_at < '2024-01-01 00:00:00+00'`},
		{"events_2024", `created_at >= '2024-01-01 00:00:00+00' AND created_at < '2025-01-01 00:00:00+00'`},
		{"events_2025", `created_at >= '2025-01-01 00:00:00+00'`},
	} {
		want := queryInt(t, srcApp, `SELECT count(*) FROM public.events WHERE `+p.cond)
		if got := queryInt(t, dstApp, `SELECT count(*) FROM ONLY public.`+p.name); got != want || want == 0 {
			t.Errorf("partition %s has %d rows, want %d (source rows with %s)", p.name, got, want, p.cond)
		}
	}
	if n := queryInt(t, dstApp, `SELECT count(*) FROM ONLY public.events`); n != 0 {
		t.Errorf("the partitioned parent holds %d rows of its own", n)
	}

	// 2. The primary key and the index are on the parent and valid on every
	// partition; the checks and foreign keys are on the whole tree.
	if n := queryInt(t, dstApp, `SELECT count(*) FROM pg_index WHERE indrelid = 'public.events'::regclass AND indisprimary AND indisvalid`); n != 1 {
		t.Errorf("the partitioned table has %d valid primary keys, want 1", n)
	}
	if n := queryInt(t, dstApp, `SELECT count(*) FROM pg_inherits h JOIN pg_index i ON i.indrelid = h.inhrelid
		WHERE h.inhparent = 'public.events'::regclass AND i.indisprimary AND i.indisvalid`); n != 3 {
		t.Errorf("%d of 3 partitions have a valid primary key index", n)
	}
	if n := queryInt(t, dstApp, `SELECT count(*) FROM pg_inherits h JOIN pg_index i ON i.indrelid = h.inhrelid
		WHERE h.inhparent = 'public.events'::regclass AND NOT i.indisvalid`); n != 0 {
		t.Errorf("%d partition indexes are invalid", n)
	}
	if n := queryInt(t, dstApp, `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = 'public.events'::regclass AND c.relname = 'events_kind_idx' AND i.indisvalid`); n != 1 {
		t.Error("events_kind_idx is not a valid index of the partitioned table")
	}
	for _, con := range []string{"events_pkey", "events_kind_check", "events_id_positive", "events_customer_fk"} {
		if n := queryInt(t, dstApp, `SELECT count(*) FROM pg_constraint c JOIN pg_inherits h ON h.inhrelid = c.conrelid
			WHERE h.inhparent = 'public.events'::regclass AND (c.conname = $1 OR c.conparentid IN
				(SELECT oid FROM pg_constraint WHERE conrelid = 'public.events'::regclass AND conname = $1))`, con); n != 3 {
			t.Errorf("constraint %s is on %d of 3 partitions", con, n)
		}
	}
	if n := queryInt(t, dstApp, `SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.notes'::regclass
		AND conname = 'notes_event_fk' AND confrelid = 'public.events'::regclass`); n != 1 {
		t.Error("notes_event_fk does not reference the partitioned table")
	}

	// 3. verify compares the partitioned table with the source's plain one.
	out, code = run(t, 5*time.Minute, "verify", "--source", srcApp, "--target", dstApp)
	if code != 0 {
		t.Errorf("verify after partitioning exited %d:\n%s", code, out)
	}
	t.Logf("verify:\n%s", out)
	for _, bad := range []string{"events_2023", "events_2024", "events_2025"} {
		if strings.Contains(out, bad) {
			t.Errorf("verify reports the partition %s:\n%s", bad, out)
		}
	}
}
