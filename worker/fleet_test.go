package worker_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/shared/testlog"
	"github.com/pgcaravan/pgcaravan/worker"
)

// runningCoordinator is an in-process coordinator for one migration.
type runningCoordinator struct {
	addr   string
	dir    string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startCoordinator runs a coordinator from srcURI to dstURI on a loopback
// port, with the default config changed by each of with, and waits until it
// listens. It is stopped when the test ends.
func startCoordinator(t *testing.T, srcURI, dstURI string, with ...func(*coordinator.Config)) *runningCoordinator {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := coordinator.DefaultConfig()
	cfg.SourceURI, cfg.TargetURI, cfg.Dir = srcURI, dstURI, t.TempDir()
	cfg.Listener = lis
	cfg.ExitGrace = 100 * time.Millisecond
	for _, f := range with {
		f(&cfg)
	}
	coord, err := coordinator.New(cfg, testlog.New(t).Named("coordinator"))
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningCoordinator{dir: cfg.Dir, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rc.done)
		rc.err = coord.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-rc.done
	})
	select {
	case <-coord.Ready():
	case <-rc.done:
		t.Fatalf("coordinator stopped before it listened: %v", rc.err)
	}
	rc.addr = coord.Addr()
	return rc
}

// wait returns the coordinator's Run error once it has returned.
func (rc *runningCoordinator) wait() error {
	<-rc.done
	return rc.err
}

// workerConfig is the CLI's default worker with two loops.
func workerConfig(addr, srcURI, dstURI string) worker.Config {
	cfg := worker.DefaultConfig()
	cfg.Coordinator, cfg.SourceURI, cfg.TargetURI = addr, srcURI, dstURI
	cfg.Loops = []worker.Loop{{Count: 2}}
	cfg.Name = "test-worker"
	return cfg
}

// runWorker runs a worker to its end.
func runWorker(t *testing.T, cfg worker.Config) error {
	t.Helper()
	w, err := worker.New(cfg, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	return w.Run(ctx)
}

// clone runs a whole migration with one coordinator and one worker and
// fails the test unless both end without an error. It returns the
// coordinator's directory.
func clone(t *testing.T, srcURI, dstURI string) string {
	t.Helper()
	rc := startCoordinator(t, srcURI, dstURI)
	werr := runWorker(t, workerConfig(rc.addr, srcURI, dstURI))
	cerr := rc.wait()
	if werr != nil {
		t.Errorf("worker Run: %v", werr)
	}
	if cerr != nil {
		t.Errorf("coordinator Run: %v", cerr)
	}
	if t.Failed() {
		t.FailNow()
	}
	return rc.dir
}

// queryRow runs sql on uri and returns the single row's columns as text.
func queryRow(t *testing.T, uri, sql string, args ...any) []string {
	t.Helper()
	rows := queryRows(t, uri, sql, args...)
	if len(rows) != 1 {
		t.Fatalf("%s: %d rows, want 1", sql, len(rows))
	}
	return rows[0]
}

// queryRows runs sql on uri with TimeZone UTC and returns every row's
// columns as the server's text (NULL as "<null>"): the simple protocol
// returns text for every type.
func queryRows(t *testing.T, uri, sql string, args ...any) [][]string {
	t.Helper()
	ctx := t.Context()
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["timezone"] = "UTC"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		raw := rows.RawValues()
		row := make([]string, len(raw))
		for i, v := range raw {
			if v == nil {
				row[i] = "<null>"
			} else {
				row[i] = string(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}
