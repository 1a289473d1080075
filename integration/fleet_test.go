package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/integration/datagen"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// TestFleetProcesses is issue #2's end-to-end check: a coordinator process
// and two worker processes clone pagila plus a generated schema with a
// 1M-row table, and the verifier finds the target equal to the source, table
// by table, definition by definition, sequence by sequence.
func TestFleetProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end fleet test: skipped with -short")
	}
	ctx := context.Background()
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	pgtest.LoadPagila(t, src, "app")
	if err := datagen.Generate(ctx, src.URI("app"), datagen.Options{BigRows: 1_000_000}); err != nil {
		t.Fatalf("generate: %v", err)
	}
	if err := dst.CreateDatabase(ctx, "app_copy"); err != nil {
		t.Fatal(err)
	}
	srcURI, dstURI := src.URI("app"), dst.URI("app_copy")
	dir := t.TempDir()
	addr := freeAddr(t)

	began := time.Now()
	coord := start(t, "coordinator", "coordinator", "--source", srcURI, "--target", dstURI, "--dir", dir, "--listen", addr)
	w1 := start(t, "worker-1", "worker", "--coordinator", addr, "--source", srcURI, "--target", dstURI, "--jobs", "2", "--name", "w1")
	w2 := start(t, "worker-2", "worker", "--coordinator", addr, "--source", srcURI, "--target", dstURI, "--jobs", "2", "--name", "w2")

	if code := coord.wait(t, 15*time.Minute); code != 0 {
		t.Fatalf("coordinator exited %d", code)
	}
	wall := time.Since(began)
	for _, w := range []*proc{w1, w2} {
		if code := w.wait(t, time.Minute); code != 0 {
			t.Fatalf("%s exited %d", w.name, code)
		}
	}
	if !strings.Contains(coord.output(), "migration complete") {
		t.Errorf("coordinator did not say the migration is complete")
	}

	// The store answers after the coordinator has gone.
	s := status(t, dir)
	if s.GetPhase() != pb.Phase_PHASE_DONE {
		t.Fatalf("phase = %s, want done", s.GetPhase())
	}
	for _, c := range s.GetUnits() {
		if c.GetState() != pb.UnitState_UNIT_STATE_DONE && c.GetCount() != 0 {
			t.Errorf("%d units %s at the end", c.GetCount(), c.GetState())
		}
	}
	var events *pb.TableStatus
	for _, tb := range s.GetTables() {
		if tb.GetState() != pb.TableState_TABLE_STATE_DONE {
			t.Errorf("table %s.%s is %s", tb.GetSchema(), tb.GetName(), tb.GetState())
		}
		if tb.GetSchema() == "caravan" && tb.GetName() == "events" {
			events = tb
		}
	}
	if events == nil || events.GetRows() != 1_000_000 {
		t.Fatalf("caravan.events status = %v, want 1000000 rows copied", events)
	}
	t.Logf("1M-row caravan.events: copy %d ms, indexes %d ms; whole clone (2 worker processes x 2 jobs) %s",
		events.GetCopyMillis(), events.GetIndexMillis(), wall.Round(time.Millisecond))

	// Both worker processes did work.
	byWorker := map[string]int{}
	st, err := store.Open(dir, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	units, err := st.Units()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		byWorker[u.WorkerID]++
	}
	if len(byWorker) != 2 {
		t.Errorf("units by worker = %v, want both workers to have run units", byWorker)
	}

	// The verifier compares everything; equal row counts and checksums also
	// show that no unit was applied twice.
	mustVerify(t, srcURI, dstURI)
	// pgcaravan's own schema is gone from the target.
	conn, err := pgx.Connect(ctx, dstURI)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'pgcaravan'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("pgcaravan schema left on the target (count %d, err %v)", n, err)
	}
}
