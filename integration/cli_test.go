package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	"github.com/pgcaravan/pgcaravan/integration/datagen"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// smallSource is a cluster with the generated sample schema at a small size.
func smallSource(t *testing.T) *pgtest.Cluster {
	t.Helper()
	src := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := datagen.Generate(ctx, src.URI("app"), datagen.Options{BigRows: 20_000, LargeObjects: 20}); err != nil {
		t.Fatalf("generate: %v", err)
	}
	return src
}

func mustVerify(t *testing.T, srcURI, dstURI string) {
	t.Helper()
	rep, err := verify.Compare(context.Background(), srcURI, dstURI, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		var b strings.Builder
		rep.Print(&b)
		t.Fatalf("target differs from source:\n%s", b.String())
	}
}

// TestAdminAPIWhileRunning starts a coordinator with no worker, so it sits in
// the copy phase, and checks what an operator's grpcurl sees: reflection,
// health, Status, ListTables, ListUnits, Pause/Resume. Then a worker
// finishes the job.
func TestAdminAPIWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src := smallSource(t)
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	dir, addr := t.TempDir(), freeAddr(t)
	coord := start(t, "coordinator", "coordinator", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--listen", addr)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)

	// Wait for the plan: the phase becomes copy.
	var s *pb.StatusResponse
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err = admin.Status(cctx, &pb.StatusRequest{})
		cancel()
		if err == nil && s.GetPhase() == pb.Phase_PHASE_COPY {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator never reached the copy phase: %v %v", s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.GetSnapshot() == "" || s.GetMigrationId() == "" || s.GetSource().GetDatabase() != "app" {
		t.Errorf("status lacks snapshot, migration id or source: %v", s)
	}
	if s.GetRowsTotalEstimate() <= 0 || len(s.GetTables()) == 0 {
		t.Errorf("status has no tables or estimates: %v", s)
	}

	// Reflection lists the services, as `grpcurl list` does.
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	stream.CloseSend()
	for _, want := range []string{"pgcaravan.v1.AdminService", "pgcaravan.v1.CoordinatorService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v", h, err)
	}

	tables, err := admin.ListTables(ctx, &pb.ListTablesRequest{})
	if err != nil || len(tables.GetTables()) != len(s.GetTables()) {
		t.Errorf("ListTables = %d tables, %v; status has %d", len(tables.GetTables()), err, len(s.GetTables()))
	}
	ready, err := admin.ListUnits(ctx, &pb.ListUnitsRequest{State: pb.UnitState_UNIT_STATE_READY})
	if err != nil || len(ready.GetUnits()) == 0 {
		t.Fatalf("ListUnits(ready) = %v, %v", ready, err)
	}
	for _, u := range ready.GetUnits() {
		if len(u.GetDependsOn()) != 0 && u.GetUnit().GetKind() == pb.UnitKind_UNIT_KIND_INDEX {
			t.Errorf("index unit %d is ready before its table's copy", u.GetUnit().GetId())
		}
	}
	events, err := admin.ListUnits(ctx, &pb.ListUnitsRequest{Table: "caravan.events"})
	if err != nil || len(events.GetUnits()) < 3 {
		t.Errorf("ListUnits(table caravan.events) = %d units, %v", len(events.GetUnits()), err)
	}

	// Paused, a worker gets nothing; resumed, it finishes the migration.
	if _, err := admin.Pause(ctx, &pb.PauseRequest{}); err != nil {
		t.Fatal(err)
	}
	w := start(t, "worker", "worker", "--coordinator", addr, "--source", src.URI("app"), "--target", dst.URI("app"), "--jobs", "2")
	time.Sleep(2 * time.Second)
	if s, err := admin.Status(ctx, &pb.StatusRequest{}); err != nil || !s.GetPaused() || s.GetRowsDone() != 0 {
		t.Errorf("while paused: paused=%v rows_done=%d err=%v", s.GetPaused(), s.GetRowsDone(), err)
	} else if len(s.GetWorkers()) != 1 {
		t.Errorf("status shows %d connected workers, want 1", len(s.GetWorkers()))
	}
	if _, err := admin.Resume(ctx, &pb.ResumeRequest{}); err != nil {
		t.Fatal(err)
	}
	if code := coord.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("coordinator exited %d", code)
	}
	if code := w.wait(t, time.Minute); code != 0 {
		t.Fatalf("worker exited %d", code)
	}
	mustVerify(t, src.URI("app"), dst.URI("app"))
}

// TestCloneTargetNotEmpty: a clone into a target that already has the
// objects refuses and lists them; --drop-if-exists replaces them.
func TestCloneTargetNotEmpty(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src := smallSource(t)
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	if err := dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := dst.Exec(ctx, "app", `CREATE SCHEMA caravan; CREATE TABLE caravan.events (x int); INSERT INTO caravan.events VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, 5*time.Minute, "clone", "--quiet", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", t.TempDir())
	if code != 1 {
		t.Fatalf("clone into a non-empty target exited %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"target is not empty", `table caravan.events`, `schema caravan`, "--drop-if-exists"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, code = run(t, 5*time.Minute, "clone", "--quiet", "--drop-if-exists", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("clone --drop-if-exists exited %d:\n%s", code, out)
	}
	for _, want := range []string{"TABLE", "ROWS", "COPY", "INDEXES", "caravan.events", "PHASE", "total wall time", "clone complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	mustVerify(t, src.URI("app"), dst.URI("app"))
}

// TestCloneMissingRole: objects owned by a role the target lacks make a
// clear error that leaves the target untouched; --no-owner --no-acl clones.
func TestCloneMissingRole(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Exec(ctx, "app", `CREATE ROLE "app owner"; CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;
		ALTER TABLE t OWNER TO "app owner"; GRANT SELECT ON t TO PUBLIC;`); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, 2*time.Minute, "clone", "--quiet", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", t.TempDir())
	if code != 1 || !strings.Contains(out, `role "app owner" does not exist`) || !strings.Contains(out, "--no-owner") {
		t.Fatalf("clone with a missing role: exit %d, want 1 and a hint:\n%s", code, out)
	}
	// The pre-data restore ran in one transaction: nothing is left behind.
	out, code = run(t, 2*time.Minute, "clone", "--quiet", "--no-owner", "--no-acl", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("clone --no-owner --no-acl exited %d:\n%s", code, out)
	}
}

// TestBadInput: unreachable servers, unparseable URIs, a worker pointed at
// the wrong database. Each gets a clear error naming the input, and no
// password is ever printed.
func TestBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	out, code := run(t, time.Minute, "clone", "--quiet", "--source", "postgres://u:hunter2@127.0.0.1:1/app?connect_timeout=2",
		"--target", "postgres://u:hunter2@127.0.0.1:1/other", "--dir", t.TempDir())
	if code != 1 || !strings.Contains(out, "source") || !strings.Contains(out, "cannot connect") {
		t.Errorf("unreachable source: exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("password printed:\n%s", out)
	}
	out, code = run(t, time.Minute, "clone", "--source", "postgres://u:hunter2@host:notaport/app", "--target", "postgres://h/x", "--dir", t.TempDir())
	if code != 1 || !strings.Contains(out, "source") || strings.Contains(out, "hunter2") {
		t.Errorf("bad URI: exit %d:\n%s", code, out)
	}
	out, code = run(t, time.Minute, "clone", "--target", "postgres://h/x")
	if code == 0 || !strings.Contains(out, "--source") {
		t.Errorf("missing --source: exit %d:\n%s", code, out)
	}
	out, code = run(t, time.Minute, "status")
	if code != 2 {
		t.Errorf("status without --dir: exit %d, want 2:\n%s", code, out)
	}

	// A worker whose --source is the target is refused before any work.
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
	dir, addr := t.TempDir(), freeAddr(t)
	coord := start(t, "coordinator", "coordinator", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--listen", addr)
	out, code = run(t, 2*time.Minute, "worker", "--coordinator", addr, "--source", dst.URI("app"), "--target", dst.URI("app"))
	if code != 1 || !strings.Contains(out, "another database") || !strings.Contains(out, "fix --source") {
		t.Errorf("worker with the wrong --source: exit %d:\n%s", code, out)
	}
	// A right worker finishes the job.
	out, code = run(t, 2*time.Minute, "worker", "--coordinator", addr, "--source", src.URI("app"), "--target", dst.URI("app"))
	if code != 0 {
		t.Errorf("worker exited %d:\n%s", code, out)
	}
	if code := coord.wait(t, time.Minute); code != 0 {
		t.Fatalf("coordinator exited %d", code)
	}
	// A second coordinator on the same --dir sees the migration is complete.
	out, code = run(t, time.Minute, "coordinator", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--listen", freeAddr(t))
	if code != 0 || !strings.Contains(out, "already complete") {
		t.Errorf("coordinator on a finished --dir: exit %d:\n%s", code, out)
	}
	out, code = run(t, time.Minute, "coordinator", "--source", src.URI("app"), "--target", src.URI("postgres"), "--dir", dir, "--listen", freeAddr(t))
	if code != 1 || !strings.Contains(out, "another migration") {
		t.Errorf("coordinator on another migration's --dir: exit %d:\n%s", code, out)
	}
}
