package rpcserver

import (
	"context"
	"testing"
	"time"

	"github.com/pgcaravan/pgcaravan/coordinator/lease"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/testlog"
)

// A worker that registers while the coordinator is still planning is
// answered as soon as the plan is ready, instead of being told to retry and
// backing off past that moment.
func TestRegisterWaitsForSetup(t *testing.T) {
	logger := testlog.New(t)
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(Config{HeartbeatInterval: time.Second, MaxWait: time.Second}, st, logger)

	type answer struct {
		resp *pb.RegisterWorkerResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := s.RegisterWorker(context.Background(), &pb.RegisterWorkerRequest{Name: "w", Jobs: 1})
		done <- answer{resp, err}
	}()
	select {
	case a := <-done:
		t.Fatalf("RegisterWorker answered before the migration was set up: %v, %v", a.resp, a.err)
	case <-time.After(100 * time.Millisecond):
	}

	s.SetMigration(store.Meta{MigrationID: "m1"})
	b, err := lease.New(lease.Config{TTL: time.Minute, MaxAttempts: 3, ScanInterval: time.Second}, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	s.SetBroker(b, "snap")
	select {
	case a := <-done:
		if a.err != nil || a.resp.GetMigrationId() != "m1" || a.resp.GetWorkerId() == "" {
			t.Fatalf("RegisterWorker = %v, %v; want a worker id in migration m1", a.resp, a.err)
		}
	case <-time.After(registerWait - time.Second):
		t.Fatal("RegisterWorker still waiting after the migration was set up")
	}

	// A registration whose caller gives up first ends with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(Config{}, st, logger).RegisterWorker(ctx, &pb.RegisterWorkerRequest{Name: "x"}); err == nil {
		t.Error("RegisterWorker with a cancelled context before setup succeeded")
	}
}
