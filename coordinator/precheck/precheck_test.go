package precheck_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/coordinator/precheck"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestValidate(t *testing.T) {
	cfg := precheck.DefaultConfig()
	if err := cfg.Validate(); !errors.Is(err, precheck.ErrConfig) || !strings.Contains(err.Error(), "coordinator.Precheck") {
		t.Errorf("a config without the coordinator's hooks: %v", err)
	}
	cfg.Hooks = precheck.Hooks{
		FollowCheck: func(context.Context, *pgx.Conn, pguri.URI) error { return nil },
		PgDumpCheck: func(context.Context, string, int) error { return nil },
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("default config with hooks: %v", err)
	}
	cfg.WALSample, cfg.LongTransaction, cfg.CopyRate = 0, -time.Second, 0
	err := cfg.Validate()
	for _, want := range []string{"WAL sample", "long-transaction", "copy rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %q", err, want)
		}
	}
}

func TestReportFailed(t *testing.T) {
	r := precheck.Report{Checks: []precheck.Check{{Name: "a", Level: precheck.Pass}, {Name: "b", Level: precheck.Warn}}}
	if r.Failed() {
		t.Error("PASS and WARN only: Failed() = true")
	}
	r.Checks = append(r.Checks, precheck.Check{Name: "c", Level: precheck.Fail})
	if !r.Failed() {
		t.Error("with a FAIL: Failed() = false")
	}
	if c, ok := r.Check("b"); !ok || c.Level != precheck.Warn || c.Level.String() != "WARN" {
		t.Errorf("Check(b) = %v, %v", c, ok)
	}
}

func quiet() hclog.Logger { return hclog.NewNullLogger() }

// fakeExtension installs an extension's control and script files into the
// server's share directory, so it can be created on the source, and
// returns a function that removes them again: then no cluster of this
// installation has it available, as on a target without the package. It
// skips the test when the directory is not writable.
func fakeExtension(t *testing.T) (name string, remove func()) {
	t.Helper()
	out, err := exec.Command("pg_config", "--sharedir").Output()
	if err != nil {
		t.Skipf("pg_config --sharedir: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "extension")
	name = fmt.Sprintf("pgcaravan_precheck_%d", os.Getpid())
	control := filepath.Join(dir, name+".control")
	script := filepath.Join(dir, name+"--1.0.sql")
	if err := os.WriteFile(control, []byte("comment = 'pgcaravan precheck test'\ndefault_version = '1.0'\nrelocatable = true\n"), 0o644); err != nil {
		t.Skipf("cannot install a test extension into %s: %v", dir, err)
	}
	if err := os.WriteFile(script, []byte("-- nothing\n"), 0o644); err != nil {
		os.Remove(control)
		t.Skipf("cannot install a test extension into %s: %v", dir, err)
	}
	remove = func() { os.Remove(control); os.Remove(script) }
	t.Cleanup(remove)
	return name, remove
}

// holdTransaction opens a transaction that took a transaction ID on uri
// and keeps it open until the test ends; it returns once the transaction
// is older than age, as the server's clock sees it.
func holdTransaction(t *testing.T, uri string, age time.Duration) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := tx.QueryRow(ctx, `SELECT txid_current(), pg_backend_pid()`).Scan(new(int64), &pid); err != nil {
		t.Fatal(err)
	}
	for {
		var old bool
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp() - now() > make_interval(secs => $1)`, age.Seconds()).Scan(&old); err != nil {
			t.Fatal(err)
		}
		if old {
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func userURI(c *pgtest.Cluster, user, db string) string {
	return strings.Replace(c.URI(db), "postgres://postgres@", "postgres://"+user+"@", 1)
}

func expect(t *testing.T, r precheck.Report, name string, level precheck.Level, want ...string) {
	t.Helper()
	c, ok := r.Check(name)
	if !ok {
		t.Errorf("check %s did not run", name)
		return
	}
	if c.Level != level {
		t.Errorf("check %s is %s, want %s: %s", name, c.Level, level, c.Message)
	}
	for _, w := range want {
		if !strings.Contains(c.Message+"\n"+c.Hint, w) {
			t.Errorf("check %s does not say %q:\n%s\n→ %s", name, w, c.Message, c.Hint)
		}
	}
	if level != precheck.Pass && c.Hint == "" {
		t.Errorf("check %s is %s but says nothing to do", name, level)
	}
}

// TestMisconfiguredSource flags each problem of a deliberately
// misconfigured source and target with its level and what to do.
func TestMisconfiguredSource(t *testing.T) {
	if testing.Short() {
		t.Skip("real PostgreSQL: skipped with -short")
	}
	ext, removeExt := fakeExtension(t)
	src := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, "postgres", `CREATE ROLE app LOGIN`); err != nil {
			t.Fatal(err)
		}
	}
	err := src.Exec(ctx, "app", `CREATE ROLE reporting;
		CREATE TABLE public.nopk (a int, b text); ALTER TABLE public.nopk OWNER TO app;
		CREATE TABLE public.withpk (id int PRIMARY KEY); ALTER TABLE public.withpk OWNER TO app;
		CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY); ALTER TABLE public.scratch OWNER TO app;
		INSERT INTO public.nopk SELECT g, 'row ' || g FROM generate_series(1, 1000) g;
		GRANT SELECT ON public.nopk TO reporting;
		CREATE EXTENSION `+ext+`;
		SELECT pg_create_physical_replication_slot('leftover_slot', true);
		ALTER ROLE app SET statement_timeout = '3s'`)
	if err != nil {
		t.Fatal(err)
	}
	removeExt()
	// A tablespace the target lacks; its directory must belong to the
	// server's OS user, as the data directory does.
	spc, err := os.MkdirTemp("", "pgcaravan-spc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(spc) })
	if err := os.Chmod(spc, 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(src.Dir()); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if err := os.Chown(spc, int(st.Uid), int(st.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := src.Exec(ctx, "postgres", "CREATE TABLESPACE elsewhere LOCATION '"+spc+"'"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", `CREATE TABLE public.archived (id int) TABLESPACE elsewhere; ALTER TABLE public.archived OWNER TO app`); err != nil {
		t.Fatal(err)
	}
	if err := dst.Exec(ctx, "app", `CREATE TABLE public.nopk (a int, b text)`); err != nil {
		t.Fatal(err)
	}
	pid := holdTransaction(t, userURI(src, "app", "app"), 50*time.Millisecond)

	cfg := precheck.DefaultConfig()
	cfg.SourceURI, cfg.TargetURI = userURI(src, "app", "app"), dst.URI("app")
	cfg.Follow = true
	cfg.LongTransaction = 20 * time.Millisecond
	cfg.WALSample = 100 * time.Millisecond
	rep, err := coordinator.Precheck(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep, "source_connection", precheck.Pass, `role "app"`)
	expect(t, rep, "target_connection", precheck.Pass)
	expect(t, rep, "versions", precheck.Pass)
	expect(t, rep, "pg_dump", precheck.Pass)
	expect(t, rep, "follow", precheck.Fail, `wal_level is "replica"`, "REPLICATION")
	expect(t, rep, "replica_identity", precheck.Warn, "public.nopk", "NOT be carried", "--replica-identity-full")
	expect(t, rep, "unlogged_tables", precheck.Warn, "public.scratch", "SET LOGGED")
	expect(t, rep, "long_transactions", precheck.Warn, fmt.Sprintf("pid %d", pid), "holds a transaction ID", "pg_terminate_backend")
	expect(t, rep, "source_timeouts", precheck.Pass, "statement_timeout is 3s", "ALTER ROLE", "set both to 0")
	expect(t, rep, "target_timeouts", precheck.Pass)
	expect(t, rep, "extensions", precheck.Fail, ext, "install")
	expect(t, rep, "roles", precheck.Fail, "reporting", "--no-acl")
	expect(t, rep, "tablespaces", precheck.Fail, "elsewhere", "CREATE TABLESPACE")
	expect(t, rep, "target_empty", precheck.Fail, "table public.nopk", "--drop-if-exists")
	expect(t, rep, "forecast_space", precheck.Warn, "cannot be read over SQL", "df")
	expect(t, rep, "forecast_wal", precheck.Pass, "assumed copy rate", "cdcnode")
	expect(t, rep, "inactive_slots", precheck.Warn, "leftover_slot", "pg_drop_replication_slot")
	if c, _ := rep.Check("replica_identity"); strings.Contains(c.Message, "withpk") {
		t.Errorf("replica_identity names a table that has a primary key: %s", c.Message)
	}
	if !rep.Failed() {
		t.Error("Failed() = false")
	}
	if rep.Forecast.DataBytes <= 0 || rep.Forecast.WALSample <= 0 || rep.Forecast.AssumedCopyRate != cfg.CopyRate {
		t.Errorf("forecast = %+v", rep.Forecast)
	}

	// With the migration's flags, the same findings are warnings.
	cfg.Follow, cfg.NoOwner, cfg.NoACL, cfg.DropIfExists = false, true, true, true
	rep, err = coordinator.Precheck(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.Check("follow"); ok {
		t.Error("the follow check ran without --follow")
	}
	expect(t, rep, "roles", precheck.Warn, "reporting")
	expect(t, rep, "target_empty", precheck.Warn, "--drop-if-exists drops them")
	expect(t, rep, "replica_identity", precheck.Warn, "offline")

	// With --roles, the missing roles are made first: the restore keeps
	// their owners and grants.
	cfg.NoOwner, cfg.NoACL, cfg.Roles = false, false, true
	rep, err = coordinator.Precheck(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep, "roles", precheck.Pass, "reporting", "--roles makes them")
}

// TestReadySource passes everything a fresh pair of clusters has, with
// --follow, and sees a missing target as a failed connection.
func TestReadySource(t *testing.T) {
	if testing.Short() {
		t.Skip("real PostgreSQL: skipped with -short")
	}
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Exec(ctx, "app", `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	cfg := precheck.DefaultConfig()
	cfg.SourceURI, cfg.TargetURI = src.URI("app"), dst.URI("app")
	cfg.Follow = true
	cfg.WALSample = 100 * time.Millisecond
	rep, err := coordinator.Precheck(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Checks {
		if c.Level == precheck.Fail || (c.Level == precheck.Warn && c.Name != "forecast_space") {
			t.Errorf("check %s is %s: %s", c.Name, c.Level, c.Message)
		}
	}
	expect(t, rep, "follow", precheck.Pass)
	expect(t, rep, "target_empty", precheck.Pass)

	cfg.TargetURI = strings.Replace(dst.URI("app"), "/app?", "/nosuchdb?", 1)
	rep, err = coordinator.Precheck(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	expect(t, rep, "target_connection", precheck.Fail, "nosuchdb", "fix --target")
	if _, ok := rep.Check("target_empty"); ok {
		t.Error("target_empty ran without a target connection")
	}
	expect(t, rep, "inactive_slots", precheck.Pass)
}
