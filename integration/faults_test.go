package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/integration/datagen"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// faultRows sizes caravan.events so its single copy unit runs for seconds:
// long enough for a fault to land in the middle of its COPY.
const faultRows = 1_000_000

// fleet is a coordinator and workers as processes over two clusters.
type fleet struct {
	t              *testing.T
	src, dst       *pgtest.Cluster
	srcURI, dstURI string
	dir, addr      string
	coord          *proc
	admin          pb.AdminServiceClient
	workers        map[string]*proc
}

// coordinatorArgs make leases short, so faults are noticed in seconds.
var coordinatorArgs = []string{"--lease-ttl", "3s", "--heartbeat-interval", "500ms"}

func newFleet(t *testing.T, rows int) *fleet {
	t.Helper()
	if testing.Short() {
		t.Skip("fault test: skipped with -short")
	}
	ctx := context.Background()
	f := &fleet{t: t, src: pgtest.Start(t, pgtest.Options{}), dst: pgtest.Start(t, pgtest.Options{}),
		dir: t.TempDir(), addr: freeAddr(t), workers: map[string]*proc{}}
	for _, c := range []*pgtest.Cluster{f.src, f.dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := datagen.Generate(ctx, f.src.URI("app"), datagen.Options{BigRows: rows, LargeObjects: 20}); err != nil {
		t.Fatalf("generate: %v", err)
	}
	f.srcURI, f.dstURI = f.src.URI("app"), f.dst.URI("app")
	f.admin = newFleetAdmin(t, f.addr)
	return f
}

// newFleetAdmin dials a coordinator's admin API for a test.
func newFleetAdmin(t *testing.T, addr string) pb.AdminServiceClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAdminServiceClient(conn)
}

func (f *fleet) startCoordinator(extra ...string) *proc {
	args := append([]string{"coordinator", "--source", f.srcURI, "--target", f.dstURI, "--dir", f.dir, "--listen", f.addr}, coordinatorArgs...)
	f.coord = start(f.t, "coordinator", append(args, extra...)...)
	return f.coord
}

func (f *fleet) startWorker(name string, extra ...string) *proc {
	args := append([]string{"worker", "--coordinator", f.addr, "--source", f.srcURI, "--target", f.dstURI, "--jobs", "1", "--name", name}, extra...)
	p := start(f.t, name, args...)
	f.workers[name] = p
	return p
}

func (f *fleet) status() *pb.StatusResponse {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := f.admin.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil
	}
	return s
}

// waitFor polls cond every 100ms for up to 3 minutes.
func (f *fleet) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// midCopy waits until the big table's copy unit has streamed at least
// 20 MB, and returns the name of the worker running it.
func (f *fleet) midCopy() string {
	f.t.Helper()
	var holder string
	f.waitFor("caravan.events to be mid-COPY", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		units, err := f.admin.ListUnits(ctx, &pb.ListUnitsRequest{State: pb.UnitState_UNIT_STATE_RUNNING, Table: "caravan.events"})
		if err != nil {
			return false
		}
		for _, u := range units.GetUnits() {
			if u.GetUnit().GetKind() == pb.UnitKind_UNIT_KIND_COPY && u.GetBytes() > 20<<20 {
				holder = u.GetWorkerId()
				return true
			}
		}
		return false
	})
	s := f.status()
	for _, w := range s.GetWorkers() {
		if w.GetWorkerId() == holder {
			return w.GetName()
		}
	}
	f.t.Fatalf("worker %s holding the copy is not in status", holder)
	return ""
}

// finish waits for the coordinator and every live worker to exit 0, then
// verifies the target against the source, table by table: equal counts and
// checksums mean no row was lost or copied twice.
func (f *fleet) finish(skip ...string) {
	f.t.Helper()
	if code := f.coord.wait(f.t, 5*time.Minute); code != 0 {
		f.t.Fatalf("coordinator exited %d", code)
	}
	for name, w := range f.workers {
		if contains(skip, name) {
			continue
		}
		if code := w.wait(f.t, time.Minute); code != 0 {
			f.t.Fatalf("%s exited %d", name, code)
		}
	}
	mustVerify(f.t, f.srcURI, f.dstURI)
}

// unit returns the store's record of the big table's copy unit.
func (f *fleet) eventsCopy() store.Unit {
	f.t.Helper()
	st, err := store.Open(f.dir, store.Options{ReadOnly: true})
	if err != nil {
		f.t.Fatal(err)
	}
	defer st.Close()
	units, err := st.Units()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, u := range units {
		if u.Kind == "copy" && u.Table == "caravan.events" {
			return u
		}
	}
	f.t.Fatal("no copy unit for caravan.events")
	return store.Unit{}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestFaultKillWorkerMidCopy: SIGKILL one of three workers in the middle of
// the big table's COPY. Its lease expires, the unit is delivered again and
// another worker finishes it.
func TestFaultKillWorkerMidCopy(t *testing.T) {
	f := newFleet(t, faultRows)
	f.startCoordinator()
	for _, n := range []string{"w1", "w2", "w3"} {
		f.startWorker(n)
	}
	victim := f.midCopy()
	if err := f.workers[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f.finish(victim)
	if u := f.eventsCopy(); u.Attempts < 2 || u.WorkerID == "" {
		t.Errorf("events copy: attempts %d, want a second delivery after the kill", u.Attempts)
	}
}

// TestFaultKillCoordinatorMidCopy: SIGKILL the coordinator mid-copy and
// start it again on the same --dir. Done units stay done, the unfinished
// table is reset and recopied under a new epoch, and the workers reconnect.
func TestFaultKillCoordinatorMidCopy(t *testing.T) {
	f := newFleet(t, faultRows)
	first := f.startCoordinator()
	f.startWorker("w1")
	f.startWorker("w2")
	f.midCopy()
	before := f.status()
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, time.Minute)
	second := f.startCoordinator()
	f.finish()
	if !strings.Contains(second.output(), "resumed an unfinished migration") {
		t.Errorf("second coordinator did not say it resumed")
	}
	s := status(t, f.dir)
	var doneBefore int64
	for _, c := range before.GetUnits() {
		if c.GetState() == pb.UnitState_UNIT_STATE_DONE {
			doneBefore = c.GetCount()
		}
	}
	if doneBefore == 0 {
		t.Log("no unit was done before the kill; the restart redid everything")
	}
	var events *pb.TableStatus
	for _, tb := range s.GetTables() {
		if tb.GetSchema() == "caravan" && tb.GetName() == "events" {
			events = tb
		}
	}
	if events.GetEpoch() != 2 || events.GetEpochLsn() == "" {
		t.Errorf("caravan.events epoch = %d at %q, want epoch 2 with an LSN", events.GetEpoch(), events.GetEpochLsn())
	}
	if len(s.GetWarnings()) == 0 || !strings.Contains(s.GetWarnings()[0], "consistent across tables only if nothing wrote") {
		t.Errorf("status warnings = %v, want the offline-consistency warning", s.GetWarnings())
	}
}

// TestFaultRestartTarget: restart the target server mid-copy. The units
// that were writing fail and are delivered again.
func TestFaultRestartTarget(t *testing.T) {
	f := newFleet(t, faultRows)
	f.startCoordinator()
	f.startWorker("w1")
	f.startWorker("w2")
	f.midCopy()
	if err := f.dst.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.finish()
	if u := f.eventsCopy(); u.Attempts < 2 {
		t.Errorf("events copy attempts = %d, want a retry after the target restart", u.Attempts)
	}
}

// TestFaultTerminateSourceSessions: pg_terminate_backend every worker
// session on the source mid-copy; units fail, are retried, and the workers
// live on.
func TestFaultTerminateSourceSessions(t *testing.T) {
	f := newFleet(t, faultRows)
	f.startCoordinator()
	f.startWorker("w1")
	f.startWorker("w2")
	f.midCopy()
	conn, err := pgx.Connect(context.Background(), f.srcURI)
	if err != nil {
		t.Fatal(err)
	}
	var ended int
	err = conn.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE application_name LIKE 'pgcaravan unit %'`).Scan(&ended)
	conn.Close(context.Background())
	if err != nil || ended == 0 {
		t.Fatalf("terminated %d source sessions, err %v", ended, err)
	}
	f.finish()
	if u := f.eventsCopy(); u.Attempts < 2 {
		t.Errorf("events copy attempts = %d, want a retry after its source session was terminated", u.Attempts)
	}
}

// TestFaultStoppedWorker: SIGSTOP the worker running the big copy. It stops
// heartbeating; its lease expires; the coordinator ends its sessions (which
// hold the table's lock) and another worker finishes the unit. The metric
// of lease expirations counts it.
func TestFaultStoppedWorker(t *testing.T) {
	f := newFleet(t, faultRows)
	f.startCoordinator()
	f.startWorker("w1")
	f.startWorker("w2")
	victim := f.midCopy()
	p := f.workers[victim]
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// While it is stopped, the rest finishes without it.
	if code := f.coord.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("coordinator exited %d", code)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	mustVerify(t, f.srcURI, f.dstURI)
	if u := f.eventsCopy(); u.Attempts < 2 || u.State != store.StateDone {
		t.Errorf("events copy: attempts %d state %s, want done on a second delivery", u.Attempts, u.State)
	}
	if !strings.Contains(f.coord.output(), "ended the sessions of an expired lease") {
		t.Errorf("the coordinator did not fence the stopped worker's sessions")
	}
}

// TestFaultUnitAlwaysFails: a unit that fails on every delivery ends
// failed; the rest of the migration completes, status and the exit name the
// unit and its table; `pgcaravan retry` requeues it once the cause is fixed.
func TestFaultUnitAlwaysFails(t *testing.T) {
	f := newFleet(t, 50_000)
	ctx := context.Background()
	f.startCoordinator("--max-attempts", "2")
	f.waitFor("the copy phase", func() bool { return f.status().GetPhase() == pb.Phase_PHASE_COPY })
	// Sabotage: the target table disappears; and another table stays locked
	// so the coordinator is still running when the failure is retried.
	if err := f.dst.Exec(ctx, "app", `ALTER TABLE caravan.notes RENAME TO notes_hidden`); err != nil {
		t.Fatal(err)
	}
	lock, err := pgx.Connect(ctx, f.dstURI)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(ctx)
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE caravan.orders IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	f.startWorker("w1", "--jobs", "2")
	var failed *pb.FailedUnit
	f.waitFor("the notes copy to fail past its delivery limit", func() bool {
		for _, u := range f.status().GetFailedUnits() {
			if u.GetTable() == "caravan.notes" {
				failed = u
				return true
			}
		}
		return false
	})
	if failed.GetAttempts() != 2 || !strings.Contains(failed.GetError(), "does not exist") {
		t.Errorf("failed unit = %v, want 2 attempts and the target's error", failed)
	}
	out, code := run(t, time.Minute, "status", "--coordinator", f.addr)
	if code != 0 || !strings.Contains(out, "FAILED UNITS") || !strings.Contains(out, "caravan.notes") {
		t.Errorf("status --coordinator does not name the failed unit (exit %d):\n%s", code, out)
	}
	// Fix the cause, requeue, release the lock: the migration completes.
	if err := f.dst.Exec(ctx, "app", `ALTER TABLE caravan.notes_hidden RENAME TO notes`); err != nil {
		t.Fatal(err)
	}
	out, code = run(t, time.Minute, "retry", "--coordinator", f.addr, "--all-failed")
	if code != 0 || !strings.Contains(out, "requeued 1 unit") {
		t.Fatalf("retry exited %d:\n%s", code, out)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	f.finish()
}

// TestFaultFailedUnitsEndTheRunAndRestartRetries: with the cause left in
// place, the migration ends with exit 1 naming the failed unit and its
// table, every other table copied; a coordinator restarted after the fix
// retries it and finishes.
func TestFaultFailedUnitsEndTheRunAndRestartRetries(t *testing.T) {
	f := newFleet(t, 50_000)
	ctx := context.Background()
	f.startCoordinator("--max-attempts", "2")
	f.waitFor("the copy phase", func() bool { return f.status().GetPhase() == pb.Phase_PHASE_COPY })
	if err := f.dst.Exec(ctx, "app", `ALTER TABLE caravan.notes RENAME TO notes_hidden`); err != nil {
		t.Fatal(err)
	}
	w := f.startWorker("w1", "--jobs", "2")
	if code := f.coord.wait(t, 5*time.Minute); code != 1 {
		t.Fatalf("coordinator exited %d, want 1", code)
	}
	out := f.coord.output()
	if !strings.Contains(out, "unit(s) failed") || !strings.Contains(out, "caravan.notes") {
		t.Errorf("coordinator's exit does not name the failed unit:\n%s", tail(out, 20))
	}
	if code := w.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker exited %d", code)
	}
	s := status(t, f.dir)
	if s.GetPhase() != pb.Phase_PHASE_FAILED || len(s.GetFailedUnits()) != 1 {
		t.Fatalf("status after failure: phase %s, %d failed units", s.GetPhase(), len(s.GetFailedUnits()))
	}
	if err := f.dst.Exec(ctx, "app", `ALTER TABLE caravan.notes_hidden RENAME TO notes`); err != nil {
		t.Fatal(err)
	}
	f.startCoordinator()
	f.startWorker("w2")
	delete(f.workers, "w1")
	f.finish()
}

// TestWorkerSIGTERM: a worker told to stop gives its running unit back
// after the grace period (without spending a delivery) and exits 0; another
// worker finishes the unit.
func TestWorkerSIGTERM(t *testing.T) {
	f := newFleet(t, faultRows)
	f.startCoordinator()
	first := f.startWorker("w1", "--grace", "1s")
	f.midCopy()
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker exited %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(first.output(), "giving the unit back") {
		t.Errorf("worker did not give its unit back:\n%s", tail(first.output(), 20))
	}
	delete(f.workers, "w1")
	f.startWorker("w2")
	f.finish()
	if u := f.eventsCopy(); u.Attempts != 1 {
		t.Errorf("events copy attempts = %d, want 1: a released delivery does not count", u.Attempts)
	}
}

// TestMetricsHealthAndAuth: a coordinator beyond loopback needs a token;
// calls without it are refused except health checks; workers with the
// token work; coordinator and worker serve /metrics and gRPC health.
func TestMetricsHealthAndAuth(t *testing.T) {
	f := newFleet(t, 20_000)
	port := f.addr[strings.LastIndex(f.addr, ":")+1:]
	wide := "0.0.0.0:" + port
	out, code := run(t, time.Minute, "coordinator", "--source", f.srcURI, "--target", f.dstURI, "--dir", t.TempDir(), "--listen", wide)
	if code != 1 || !strings.Contains(out, "auth token is required") {
		t.Fatalf("coordinator beyond loopback without a token: exit %d:\n%s", code, out)
	}
	const token = "t0ken-for-the-test"
	coordMetrics, workerMetrics, workerHealth := freeAddr(t), freeAddr(t), freeAddr(t)
	f.coord = start(t, "coordinator", append([]string{"coordinator", "--source", f.srcURI, "--target", f.dstURI, "--dir", f.dir,
		"--listen", wide, "--auth-token", token, "--metrics-listen", coordMetrics}, coordinatorArgs...)...)
	ctx := context.Background()
	f.waitFor("the coordinator's health service", func() bool {
		conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return false
		}
		defer conn.Close()
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && h.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	if _, err := f.admin.Status(ctx, &pb.StatusRequest{}); grpcstatus.Code(err) != codes.Unauthenticated {
		t.Fatalf("Status without a token: %v, want Unauthenticated", err)
	}
	out, code = run(t, time.Minute, "status", "--coordinator", f.addr, "--auth-token", "wrong")
	if code != 1 || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("status with a wrong token: exit %d:\n%s", code, out)
	}
	f.waitFor("the copy phase", func() bool {
		out, code := run(t, time.Minute, "status", "--coordinator", f.addr, "--auth-token", token, "--json")
		return code == 0 && strings.Contains(out, "PHASE_COPY")
	})
	m := scrape(t, coordMetrics)
	for _, want := range []string{`pgcaravan_units{state="ready"}`, `pgcaravan_phase{phase="copy"} 1`,
		"pgcaravan_lease_expirations_total 0", "pgcaravan_workers_connected 0", "pgcaravan_bytes_estimated"} {
		if !strings.Contains(m, want) {
			t.Errorf("coordinator metrics lack %q", want)
		}
	}
	out, code = run(t, time.Minute, "worker", "--coordinator", f.addr, "--source", f.srcURI, "--target", f.dstURI)
	if code != 1 || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("worker without the token: exit %d:\n%s", code, out)
	}
	f.startWorker("w1", "--auth-token", token, "--metrics-listen", workerMetrics, "--health-listen", workerHealth)
	f.waitFor("the worker's health service", func() bool {
		conn, err := grpc.NewClient(workerHealth, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return false
		}
		defer conn.Close()
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && h.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	f.waitFor("the worker to report done units", func() bool {
		return strings.Contains(scrape(t, workerMetrics), `pgcaravan_worker_units_total{kind="copy",outcome="done"}`)
	})
	f.finish()
}

// TestPasswordsNeverShown: connection strings carry a password; it appears
// in no output, log, status or error, on success and on failure.
func TestPasswordsNeverShown(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	const secret = "Sup3rSecret-pw"
	src := smallSource(t)
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	withPassword := func(uri string) string { return strings.Replace(uri, "postgres@", "postgres:"+secret+"@", 1) }
	srcURI, dstURI := withPassword(src.URI("app")), withPassword(dst.URI("app"))
	dir := t.TempDir()
	var seen strings.Builder
	out, code := run(t, 5*time.Minute, "clone", "--log-level", "trace", "--source", srcURI, "--target", dstURI, "--dir", dir)
	seen.WriteString(out)
	if code != 0 {
		t.Fatalf("clone exited %d:\n%s", code, out)
	}
	for _, args := range [][]string{
		{"status", "--dir", dir, "--json"},
		{"status", "--dir", dir},
		// Failures: a database that does not exist, an unreachable port, a
		// non-empty target (pg_restore's own errors).
		{"clone", "--quiet", "--source", srcURI, "--target", withPassword(dst.URI("nope")), "--dir", t.TempDir()},
		{"clone", "--quiet", "--source", strings.Replace(srcURI, fmt.Sprint(src.Port()), "1", 1), "--target", dstURI, "--dir", t.TempDir()},
		{"clone", "--quiet", "--source", srcURI, "--target", dstURI, "--dir", t.TempDir()},
		{"verify", "--source", srcURI, "--target", withPassword(dst.URI("nope"))},
	} {
		out, _ := run(t, 5*time.Minute, args...)
		seen.WriteString(out)
	}
	logs, err := os.ReadFile(filepath.Join(dir, "pgcaravan.log"))
	if err != nil {
		t.Fatal(err)
	}
	seen.Write(logs)
	db, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	seen.Write(db)
	if strings.Contains(seen.String(), secret) {
		i := strings.Index(seen.String(), secret)
		t.Fatalf("the password appears: …%s…", seen.String()[max(0, i-200):i+len(secret)])
	}
	if !strings.Contains(seen.String(), "xxxxx") {
		t.Errorf("no redacted connection string was shown at all; the test may not exercise what it claims")
	}
}

// scrape returns the text of a /metrics endpoint.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/metrics", addr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
