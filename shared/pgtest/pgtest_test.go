package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// query runs sql in dbname and returns psql's unaligned, tuples-only output.
func query(t *testing.T, c *pgtest.Cluster, dbname, sql string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	if err := c.Psql(t.Context(), dbname, "-A", "-t", "-c", sql, "-o", out); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(text))
}

func TestClustersRunSideBySide(t *testing.T) {
	t.Parallel()
	var clusters [2]*pgtest.Cluster
	var errs [2]error
	var wg sync.WaitGroup
	for i := range clusters {
		wg.Go(func() {
			clusters[i], errs[i] = pgtest.New(t.Context(), pgtest.Options{Logf: t.Logf})
		})
	}
	wg.Wait()
	for _, c := range clusters {
		if c != nil {
			t.Cleanup(func() {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			})
		}
	}
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}

	a, b := clusters[0], clusters[1]
	if a.Port() == b.Port() {
		t.Errorf("both clusters listen on port %d", a.Port())
	}
	if a.Dir() == b.Dir() {
		t.Errorf("both clusters live in %s", a.Dir())
	}
	for _, c := range clusters {
		if got := query(t, c, "postgres", "SELECT current_setting('wal_level')"); got != "logical" {
			t.Errorf("cluster on port %d: wal_level = %q, want logical", c.Port(), got)
		}
		if got := query(t, c, "postgres", "SHOW port"); got != strconv.Itoa(c.Port()) {
			t.Errorf("cluster on port %d: SHOW port = %q", c.Port(), got)
		}
	}
}

func TestDefaultsAndSettings(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Settings: map[string]string{
		"work_mem":     "7MB",
		"cluster_name": "it's quoted",
	}})
	for name, want := range map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": "",
		"max_wal_senders":         "10",
		"max_replication_slots":   "10",
		"max_connections":         "100",
		"shared_buffers":          "128MB",
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
		"logging_collector":       "off",
		"server_encoding":         "UTF8",
		"work_mem":                "7MB",
		"cluster_name":            "it's quoted",
	} {
		if got := query(t, c, "postgres", "SHOW "+name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if tail := c.LogTail(5); !strings.Contains(tail, "ready to accept connections") {
		t.Errorf("LogTail(5) does not show the server starting:\n%s", tail)
	}
}

func TestDurable(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{Durable: true})
	for _, name := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
		if got := query(t, c, "postgres", "SHOW "+name); got != "on" {
			t.Errorf("Durable: %s = %q, want on", name, got)
		}
	}
}

func TestNewRejectsSettings(t *testing.T) {
	t.Parallel()
	for _, settings := range []map[string]string{
		{"port": "5432"},
		{"work_mem = 1MB\nfsync": "on"},
		{"work_mem": "1MB\nfsync = on"},
	} {
		c, err := pgtest.New(t.Context(), pgtest.Options{Settings: settings})
		if err == nil {
			c.Close()
			t.Errorf("New accepted Settings %q", settings)
		}
	}
}

func TestStopStartKeepsData(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	ctx := t.Context()
	port := c.Port()
	if err := c.Exec(ctx, "postgres", "CREATE TABLE kept (n int); INSERT INTO kept SELECT generate_series(1, 100);"); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "postgres", "SELECT 1"); err == nil {
		t.Error("Exec succeeded on a stopped cluster")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Port() != port {
		t.Errorf("port changed from %d to %d across Stop and Start", port, c.Port())
	}
	if got := query(t, c, "postgres", "SELECT count(*) FROM kept"); got != "100" {
		t.Errorf("after Stop and Start: %s rows, want 100", got)
	}

	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query(t, c, "postgres", "SELECT count(*) FROM kept"); got != "100" {
		t.Errorf("after Restart: %s rows, want 100", got)
	}
}

func TestStartOnTakenPortSaysWhy(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	ctx := t.Context()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	err = c.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("Start on a taken port: err = %v, want the server log's reason", err)
	}
}

func TestCreateDatabaseQuotesName(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	for _, name := range []string{`we"ird db`, `Ünï'cødé/?#%.x`} {
		if err := c.CreateDatabase(t.Context(), name); err != nil {
			t.Fatal(err)
		}
		// The URI must carry the name intact for psql to land in the right database.
		if got := query(t, c, name, "SELECT current_database()"); got != name {
			t.Errorf("connected to %q through URI %s, want %q", got, c.URI(name), name)
		}
	}
}

func TestExec(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	ctx := t.Context()

	// Statements run one by one, so statements that refuse a transaction block work.
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE one;\nCREATE DATABASE two;\n"); err != nil {
		t.Fatal(err)
	}

	err := c.Exec(ctx, "postgres", "CREATE TABLE before_error (); SELEC 1; CREATE TABLE after_error ();")
	if err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("Exec of a script with a syntax error: err = %v, want psql's message", err)
	}
	got := query(t, c, "postgres", "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname LIKE '%_error'")
	if got != "before_error" {
		t.Errorf("tables after the failed script: %q, want only before_error (ON_ERROR_STOP)", got)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	c, err := pgtest.New(t.Context(), pgtest.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	dir, port := c.Dir(), c.Port()

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dir, filepath.Dir(dir)} {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Close, stat %s: %v, want not exist", path, err)
		}
	}
	if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		conn.Close()
		t.Errorf("after Close, port %d still accepts connections", port)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Exec(context.Background(), "postgres", "SELECT 1"); err == nil {
		t.Error("Exec succeeded on a closed cluster")
	}
}

func TestLoadPagila(t *testing.T) {
	t.Parallel()
	c := pgtest.Start(t, pgtest.Options{})
	pgtest.LoadPagila(t, c, "pagila")
	if got := query(t, c, "pagila", "SELECT count(*) FROM film"); got != "1000" {
		t.Errorf("pagila has %s films, want 1000", got)
	}
}

// recorder is a testing.TB whose Skipf and Fatalf record the message and return, so the
// test can see what Dataset would have said.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

// unsetenv removes key for the rest of the test; t.Setenv restores it afterwards.
func unsetenv(t *testing.T, key string) {
	t.Setenv(key, "")
	os.Unsetenv(key)
}

func TestDatasetMissingSkips(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "nonexistent")
	t.Setenv("PGCARAVAN_SHARED", shared)
	unsetenv(t, "CI")

	var sub *testing.T
	t.Run("missing", func(t *testing.T) {
		sub = t
		pgtest.Dataset(t, "pagila")
		t.Error("Dataset returned for a missing dataset")
	})
	if !sub.Skipped() {
		t.Error("a missing dataset did not skip the test")
	}

	r := &recorder{TB: t}
	pgtest.Dataset(r, "pagila")
	if want := filepath.Join(shared, "datasets", "pagila"); !strings.Contains(r.skipped, want) {
		t.Errorf("skip message %q does not name %s", r.skipped, want)
	}
	if r.fatal != "" {
		t.Errorf("a missing dataset failed the test outside CI: %s", r.fatal)
	}
}

func TestDatasetRequiredInCI(t *testing.T) {
	t.Setenv("PGCARAVAN_SHARED", filepath.Join(t.TempDir(), "nonexistent"))
	t.Setenv("CI", "true")

	r := &recorder{TB: t}
	pgtest.Dataset(r, "pagila")
	if !strings.Contains(r.fatal, "required in CI") {
		t.Errorf("under CI=true, fatal message = %q, want one saying the dataset is required in CI", r.fatal)
	}
	if r.skipped != "" {
		t.Errorf("under CI=true the test was skipped: %s", r.skipped)
	}
}

func TestDatasetFindsSharedNextToRepository(t *testing.T) {
	top := t.TempDir()
	for _, dir := range []string{"repo/a/b", "shared/datasets/demo"} {
		if err := os.MkdirAll(filepath.Join(top, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(top, "repo", "go.mod"), []byte("module example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unsetenv(t, "PGCARAVAN_SHARED")
	t.Chdir(filepath.Join(top, "repo", "a", "b"))

	want, err := filepath.EvalSymlinks(filepath.Join(top, "shared", "datasets", "demo"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := filepath.EvalSymlinks(pgtest.Dataset(t, "demo"))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Dataset(demo) = %s, want %s", got, want)
	}

	t.Setenv("PGCARAVAN_SHARED", filepath.Join(top, "shared"))
	t.Chdir(top) // no go.mod above: only the variable can find it
	if got := pgtest.Dataset(t, "demo"); got != filepath.Join(top, "shared", "datasets", "demo") {
		t.Errorf("with PGCARAVAN_SHARED: Dataset(demo) = %s", got)
	}
}
