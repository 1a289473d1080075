package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// TestPrecheckCLI runs `pgcaravan precheck --follow` against a
// misconfigured source and a non-empty target: the table names every
// problem with its level and what to do, and the exit code is 1.
func TestPrecheckCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
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
	err := src.Exec(ctx, "app", `CREATE ROLE auditor;
		CREATE TABLE public.log (at timestamptz, line text); ALTER TABLE public.log OWNER TO app;
		GRANT SELECT ON public.log TO auditor;
		SELECT pg_create_physical_replication_slot('abandoned', true)`)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Exec(ctx, "app", `CREATE TABLE public.log (x int)`); err != nil {
		t.Fatal(err)
	}
	srcURI := strings.Replace(src.URI("app"), "postgres://postgres@", "postgres://app@", 1)
	args := []string{"precheck", "--source", srcURI, "--target", dst.URI("app"), "--follow", "--wal-sample", "200ms"}
	out, code := run(t, 2*time.Minute, args...)
	if code != 1 {
		t.Fatalf("precheck of a misconfigured source exited %d, want 1:\n%s", code, out)
	}
	t.Logf("precheck output:\n%s", out)
	for _, want := range []string{
		"RESULT", "CHECK", "DETAIL",
		"FAIL    follow", `wal_level is "replica"`, "REPLICATION",
		"WARN    replica_identity", "public.log", "--replica-identity-full",
		"FAIL    roles", "auditor",
		"FAIL    target_empty", "table public.log",
		"WARN    inactive_slots", "abandoned",
		"WARN    forecast_space",
		"check(s) failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("precheck output lacks %q:\n%s", want, out)
		}
	}

	out, code = run(t, 2*time.Minute, append(args, "--json")...)
	if code != 1 {
		t.Fatalf("precheck --json exited %d, want 1:\n%s", code, out)
	}
	var resp pb.PrecheckResponse
	if err := protojson.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &resp); err != nil {
		t.Fatalf("precheck --json: %v\n%s", err, out)
	}
	if !resp.GetFailed() || len(resp.GetChecks()) < 10 || resp.GetForecast().GetAssumedCopyBytesPerSecond() <= 0 {
		t.Errorf("precheck --json = %v", &resp)
	}
}

// TestPrecheckAdminAPI calls AdminService/Precheck on a running
// coordinator, through real gRPC and through `precheck --coordinator`.
func TestPrecheckAdminAPI(t *testing.T) {
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
	start(t, "coordinator", "coordinator", "--source", src.URI("app"), "--target", dst.URI("app"), "--dir", dir, "--listen", addr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)

	// Precheck needs the coordinator's migration set up (its controller).
	var resp *pb.PrecheckResponse
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		resp, err = admin.Precheck(cctx, &pb.PrecheckRequest{WalSample: durationpb.New(200 * time.Millisecond), LongTransaction: durationpb.New(time.Hour)})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Precheck never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	levels := map[string]pb.CheckLevel{}
	for _, c := range resp.GetChecks() {
		levels[c.GetName()] = c.GetLevel()
		if c.GetLevel() == pb.CheckLevel_CHECK_LEVEL_FAIL {
			t.Errorf("check %s failed on a healthy pair: %s", c.GetName(), c.GetMessage())
		}
		if strings.Contains(c.GetMessage(), "postgres://") && strings.Contains(c.GetMessage(), "password") {
			t.Errorf("check %s shows a connection string: %s", c.GetName(), c.GetMessage())
		}
	}
	for _, name := range []string{"source_connection", "target_connection", "pg_dump", "target_empty", "extensions", "roles", "inactive_slots", "forecast_wal"} {
		if levels[name] != pb.CheckLevel_CHECK_LEVEL_PASS {
			t.Errorf("check %s = %v, want PASS (all: %v)", name, levels[name], levels)
		}
	}
	if _, ok := levels["follow"]; ok {
		t.Error("the follow check ran on a coordinator without --follow, unasked")
	}
	if resp.GetFailed() || resp.GetForecast().GetDataBytes() <= 0 {
		t.Errorf("Precheck = failed %v, forecast %v", resp.GetFailed(), resp.GetForecast())
	}
	if _, err := admin.Precheck(ctx, &pb.PrecheckRequest{WalSample: durationpb.New(time.Hour)}); err == nil || !strings.Contains(err.Error(), "wal_sample") {
		t.Errorf("Precheck with a one-hour WAL sample = %v, want InvalidArgument naming wal_sample", err)
	}

	out, code := run(t, 2*time.Minute, "precheck", "--coordinator", addr, "--wal-sample", "200ms", "--long-transaction", "1h")
	if code != 0 || !strings.Contains(out, "PASS    target_empty") || !strings.Contains(out, "0 failed") {
		t.Errorf("precheck --coordinator exited %d:\n%s", code, out)
	}
}
