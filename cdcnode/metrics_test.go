package cdcnode_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcaravan/pgcaravan/cdcnode"
	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/testlog"
	"github.com/pgcaravan/pgcaravan/worker"
)

// TestMetricsAndProbes runs a live migration in-process (a coordinator with
// --follow, a cdcnode with --metrics-listen, later a worker) and reads the
// cdcnode's /metrics, /healthz and /readyz: while the copy waits for a
// worker the node streams, is ready, and its received and flushed LSNs
// follow the source's writes with nothing applied; once the copy is done it
// applies, is ready on the target too, and its applied LSN follows.
func TestMetricsAndProbes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL: skipped with -short")
	}
	ctx := t.Context()
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", `CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL);
		INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g`); err != nil {
		t.Fatal(err)
	}
	srcURI, dstURI := src.URI("app"), dst.URI("app")
	logger := testlog.New(t)

	// 1. The coordinator creates the publication and the slot and waits
	// for workers in PHASE_COPY.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ccfg := coordinator.DefaultConfig()
	ccfg.SourceURI, ccfg.TargetURI, ccfg.Dir, ccfg.Listener = srcURI, dstURI, t.TempDir(), lis
	ccfg.ExitGrace, ccfg.Follow = 100*time.Millisecond, true
	coord, err := coordinator.New(ccfg, logger.Named("coordinator"))
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop()
		wg.Wait()
	})
	errs := make(chan error, 3)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The coordinator returns ctx's error when the test stops it.
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errs <- err
				t.Errorf("%s Run: %v", name, err)
			}
		}()
	}
	run("coordinator", coord.Run)
	select {
	case <-coord.Ready():
	case err := <-errs:
		t.Fatalf("coordinator stopped before it listened: %v", err)
	}

	// 2. The cdcnode, with its probes and metrics.
	ncfg := cdcnode.DefaultConfig()
	ncfg.Coordinator, ncfg.SourceURI, ncfg.TargetURI = coord.Addr(), srcURI, dstURI
	ncfg.Dir, ncfg.Name, ncfg.MetricsListen = t.TempDir(), "test-cdcnode", freeAddr(t)
	node, err := cdcnode.New(ncfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	run("cdcnode", node.Run)
	addr := ncfg.MetricsListen

	waitFor(t, errs, "/healthz to answer 200", func() bool { return get(addr, "/healthz") == http.StatusOK })
	waitFor(t, errs, "/readyz to say ready while streaming", func() bool { return get(addr, "/readyz") == http.StatusOK })
	m := scrape(t, addr)
	if m[`pgcaravan_cdc_phase{phase="streaming"}`] != 1 || m[`pgcaravan_cdc_phase{phase="applying"}`] != 0 {
		t.Errorf("phase during the copy: streaming %v, applying %v; want 1 and 0",
			m[`pgcaravan_cdc_phase{phase="streaming"}`], m[`pgcaravan_cdc_phase{phase="applying"}`])
	}
	for _, name := range []string{"pgcaravan_cdc_spool_bytes", "pgcaravan_cdc_spool_segments", "pgcaravan_cdc_lag_bytes",
		"pgcaravan_cdc_changes_applied_total", "pgcaravan_cdc_transactions_applied_total", "pgcaravan_cdc_disk_full_pauses_total",
		"pgcaravan_cdc_receiving_paused", `pgcaravan_cdc_reconnects_total{peer="source"}`,
		`pgcaravan_cdc_reconnects_total{peer="target"}`, `pgcaravan_cdc_reconnects_total{peer="coordinator"}`} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// 3. Writes on the source move received and flushed, not applied.
	before := m
	write(t, src, 0)
	waitFor(t, errs, "received and flushed LSNs to advance after source writes", func() bool {
		m = scrape(t, addr)
		return m["pgcaravan_cdc_received_lsn"] > before["pgcaravan_cdc_received_lsn"] &&
			m["pgcaravan_cdc_flushed_lsn"] > before["pgcaravan_cdc_flushed_lsn"]
	})
	if m["pgcaravan_cdc_applied_lsn"] != 0 || m["pgcaravan_cdc_lag_bytes"] <= 0 || m["pgcaravan_cdc_spool_segments"] < 1 {
		t.Errorf("during the copy: applied %v (want 0), lag %v bytes (want > 0), %v segments (want >= 1)",
			m["pgcaravan_cdc_applied_lsn"], m["pgcaravan_cdc_lag_bytes"], m["pgcaravan_cdc_spool_segments"])
	}
	flushedDuringCopy := m["pgcaravan_cdc_flushed_lsn"]

	// 4. A worker copies; the node applies what it spooled.
	wcfg := worker.DefaultConfig()
	wcfg.Coordinator, wcfg.SourceURI, wcfg.TargetURI = coord.Addr(), srcURI, dstURI
	wcfg.Loops, wcfg.Name = []worker.Loop{{Count: 2}}, "test-worker"
	w, err := worker.New(wcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	run("worker", w.Run)
	waitFor(t, errs, "the node to apply what it spooled during the copy", func() bool {
		m = scrape(t, addr)
		return m[`pgcaravan_cdc_phase{phase="applying"}`] == 1 && m["pgcaravan_cdc_applied_lsn"] >= flushedDuringCopy
	})
	waitFor(t, errs, "/readyz to say ready while applying", func() bool { return get(addr, "/readyz") == http.StatusOK })
	if m["pgcaravan_cdc_changes_applied_total"] < 10 || m["pgcaravan_cdc_transactions_applied_total"] < 1 {
		t.Errorf("after the backlog: %v changes in %v transactions applied; want the 10 inserts",
			m["pgcaravan_cdc_changes_applied_total"], m["pgcaravan_cdc_transactions_applied_total"])
	}

	// 5. Later writes are applied as they come, and the lag closes.
	before = m
	write(t, src, 1)
	waitFor(t, errs, "all three LSNs to advance past the new writes", func() bool {
		m = scrape(t, addr)
		return m["pgcaravan_cdc_received_lsn"] > before["pgcaravan_cdc_received_lsn"] &&
			m["pgcaravan_cdc_flushed_lsn"] > before["pgcaravan_cdc_flushed_lsn"] &&
			m["pgcaravan_cdc_applied_lsn"] >= m["pgcaravan_cdc_flushed_lsn"] &&
			m["pgcaravan_cdc_changes_applied_total"] >= before["pgcaravan_cdc_changes_applied_total"]+10
	})
	if _, ok := m["pgcaravan_cdc_lag_seconds"]; !ok {
		t.Error("/metrics lacks pgcaravan_cdc_lag_seconds once a transaction is applied")
	}
	if code := get(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz answers %d after applying, want 200", code)
	}
}

// write commits 10 inserts into items on the source, in one transaction.
func write(t *testing.T, src *pgtest.Cluster, round int) {
	t.Helper()
	first := 1000 + round*10
	sql := "INSERT INTO items SELECT g, 'later ' || g FROM generate_series(" + strconv.Itoa(first) + ", " + strconv.Itoa(first+9) + ") g"
	if err := src.Exec(t.Context(), "app", sql); err != nil {
		t.Fatal(err)
	}
}

// scrape reads /metrics into sample name (with labels, as exposed) -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d, %v", resp.StatusCode, err)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// get returns the status code of GET path, or 0 when it cannot connect.
func get(addr, path string) int {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func waitFor(t *testing.T, errs <-chan error, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case err := <-errs:
			t.Fatalf("waiting for %s: a process stopped: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
