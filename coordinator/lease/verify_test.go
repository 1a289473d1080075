package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
)

// TestVerifyUnits: verify units added to a finished plan are handed only to
// loops that take them, completed with their sums, redelivered after an
// expired lease, removed on demand, and dropped by a new broker; a held
// broker keeps idle workers waiting until it lets them go.
func TestVerifyUnits(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits()[4:5])
	f.b.HoldWorkers(true)
	l := f.acquireID(5)
	if err := f.b.Complete(f.worker, l.Unit.ID, l.Token, 0, 0); err != nil {
		t.Fatal(err)
	}
	// Held: no unit, but not finished either.
	if l, finished, err := f.b.Acquire(context.Background(), f.worker, nil, 0); l != nil || finished || err != nil {
		t.Fatalf("held Acquire = %v, finished=%t, %v; want nothing, not finished", l, finished, err)
	}
	if n := f.b.Takers(store.KindVerify, time.Minute); n != 1 {
		t.Errorf("Takers = %d, want the one worker that asked for any kind", n)
	}
	lo := int64(10)
	ids, err := f.b.AddUnits([]store.Unit{
		{Unit: plan.Unit{Kind: store.KindVerify, Table: "s.a", Size: 5}, Verify: &store.VerifyRange{Schema: "s", Table: "a", Key: "id", Lower: &lo}},
		{Unit: plan.Unit{Kind: store.KindVerify, Table: "s.b", Size: 9}, Verify: &store.VerifyRange{Schema: "s", Table: "b"}},
	})
	if err != nil || len(ids) != 2 || ids[0] != 6 || ids[1] != 7 {
		t.Fatalf("AddUnits = %v, %v; want ids 6 and 7", ids, err)
	}
	f.acquireNone(plan.KindCopy)
	l = f.acquireID(7, store.KindVerify)
	if err := f.b.Complete(f.worker, l.Unit.ID, "stale", 0, 0); !errors.Is(err, ErrStaleToken) {
		t.Errorf("complete with a stale token = %v", err)
	}
	src, tgt := store.RangeSum{Rows: 3, Sum: "42"}, store.RangeSum{Rows: 3, Sum: "41"}
	if err := f.b.CompleteVerify(f.worker, l.Unit.ID, l.Token, src, tgt); err != nil {
		t.Fatal(err)
	}
	got := f.b.Units([]uint64{7})
	if len(got) != 1 || got[0].State != store.StateDone || *got[0].Verify.Source != src || *got[0].Verify.Target != tgt {
		t.Fatalf("unit 7 after CompleteVerify = %+v", got)
	}
	// An expired verify lease is delivered again, like any other.
	l = f.acquireID(6, store.KindVerify)
	deadline := time.Now().Add(eventually)
	for f.b.Units([]uint64{6})[0].State == store.StateRunning {
		if err := f.b.expire(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the verify lease never expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := f.b.CompleteVerify(f.worker, 6, l.Token, src, src); !errors.Is(err, ErrStaleToken) {
		t.Errorf("complete of an expired verify lease = %v, want stale", err)
	}
	if err := f.b.RemoveUnits([]uint64{6}); err != nil {
		t.Fatal(err)
	}
	if got := f.b.Units([]uint64{6, 7}); len(got) != 1 {
		t.Errorf("after RemoveUnits(6): %d units, want 7 only", len(got))
	}
	// A new broker (a restarted coordinator) drops the verify units.
	b2 := f.newBroker(testConfig())
	if got := b2.Units([]uint64{7}); len(got) != 0 {
		t.Errorf("a new broker kept verify unit 7")
	}
	if units, err := f.st.Units(); err != nil || len(units) != 1 {
		t.Errorf("store after a new broker: %d units, %v; want the plan's one", len(units), err)
	}
	// Let go: an idle worker hears the migration finished.
	f.b.HoldWorkers(false)
	if l, finished, err := f.b.Acquire(context.Background(), f.worker, nil, 0); l != nil || err != nil || !finished {
		t.Fatalf("Acquire after HoldWorkers(false) = %v, finished=%t, %v; want finished", l, finished, err)
	}
}
