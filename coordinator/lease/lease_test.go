package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
)

func TestInitialState(t *testing.T) {
	if s := InitialState(plan.Unit{ID: 1}); s != store.StateReady {
		t.Errorf("no deps: %s, want ready", s)
	}
	if s := InitialState(plan.Unit{ID: 2, DependsOn: []uint64{1}}); s != store.StateBlocked {
		t.Errorf("deps: %s, want blocked", s)
	}
}

func TestAcquireLargestReadyFirst(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	f.wantStates(map[uint64]store.State{1: store.StateReady, 2: store.StateReady, 3: store.StateBlocked,
		4: store.StateBlocked, 5: store.StateReady, 6: store.StateBlocked})

	before := time.Now()
	l := f.acquireID(2)
	if l.Attempt != 1 || l.Unit.Attempts != 1 || l.Token == "" || l.Unit.Token != l.Token {
		t.Errorf("first lease: attempt %d/%d token %q/%q", l.Attempt, l.Unit.Attempts, l.Token, l.Unit.Token)
	}
	if l.Unit.State != store.StateRunning || l.Unit.WorkerID != f.worker {
		t.Errorf("leased unit is %s on %q, want running on %q", l.Unit.State, l.Unit.WorkerID, f.worker)
	}
	if l.Expiry.Before(before.Add(testConfig().TTL)) {
		t.Errorf("lease expiry %v is less than a TTL after %v", l.Expiry, before)
	}
	if s := f.stored(2); s.State != store.StateRunning || s.Token != l.Token || s.Attempts != 1 || s.WorkerID != f.worker {
		t.Errorf("the lease is not in the store: %+v", s)
	}
	f.acquireID(1)
	f.acquireID(5)
	// 3, 4 and 6 wait for 2; nothing else is ready.
	f.acquireNone()
	if f.b.Finished() {
		t.Error("Finished while units are running")
	}
	tokens := map[string]bool{}
	for _, u := range f.b.Snapshot().Units {
		if u.State == store.StateRunning {
			if tokens[u.Token] {
				t.Errorf("token %q handed out twice", u.Token)
			}
			tokens[u.Token] = true
		}
	}
}

func TestAcquireTieGoesToLowestID(t *testing.T) {
	f := newFixture(t, testConfig(), []plan.Unit{
		{ID: 1, Kind: plan.KindCopy, Size: 5}, {ID: 2, Kind: plan.KindCopy, Size: 7}, {ID: 3, Kind: plan.KindCopy, Size: 7},
	})
	f.acquireID(2)
	f.acquireID(3)
	f.acquireID(1)
}

func TestAcquireKinds(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	f.acquireID(5, plan.KindSequences)
	// The index is blocked and no other index exists.
	f.acquireNone(plan.KindIndex, plan.KindForeignKey)
	f.acquireID(2, plan.KindIndex, plan.KindCopy)
	f.acquireID(1, plan.KindCopy)
	f.acquireNone(plan.KindCopy)
}

func TestBlockedUntilDependenciesComplete(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	a := f.acquireID(2)
	f.acquireNone(plan.KindIndex, plan.KindConstraint, plan.KindForeignKey)

	if err := f.b.Complete(f.worker, a.Unit.ID, a.Token, 1234, 56789); err != nil {
		t.Fatal(err)
	}
	done := f.stored(2)
	if done.State != store.StateDone || done.Rows != 1234 || done.Bytes != 56789 || done.Token != "" ||
		done.FinishedAt.IsZero() || done.WorkerID != f.worker {
		t.Errorf("completed unit in the store: %+v", done)
	}
	// 3 needs only 2; 4 also needs 3; 6 needs 1 and 4.
	f.wantStates(map[uint64]store.State{2: store.StateDone, 3: store.StateReady, 4: store.StateBlocked, 6: store.StateBlocked})
	f.acquireNone(plan.KindConstraint, plan.KindForeignKey)
	idx := f.acquireID(3, plan.KindIndex)
	f.complete(idx)
	f.wantStates(map[uint64]store.State{4: store.StateReady, 6: store.StateBlocked})
	f.complete(f.acquireID(4, plan.KindConstraint))
	// 6 still waits for 1.
	f.wantStates(map[uint64]store.State{6: store.StateBlocked})
	f.complete(f.acquireID(1, plan.KindCopy))
	f.wantStates(map[uint64]store.State{6: store.StateReady})
	f.complete(f.acquireID(6))
	f.complete(f.acquireID(5))
	if !f.b.Finished() {
		t.Error("not Finished with every unit done")
	}
	l, finished, err := f.b.Acquire(context.Background(), f.worker, nil, time.Minute)
	if l != nil || !finished || err != nil {
		t.Errorf("Acquire after the end = %+v, %t, %v; want finished at once", l, finished, err)
	}
}

func TestStaleAndWrongTokens(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	l := f.acquireID(2)
	before := f.unit(2)

	for name, call := range map[string]func() error{
		"complete with a wrong token": func() error { return f.b.Complete(f.worker, 2, "not-the-token", 1, 1) },
		"complete with no token":      func() error { return f.b.Complete(f.worker, 2, "", 1, 1) },
		"complete a ready unit":       func() error { return f.b.Complete(f.worker, 1, l.Token, 1, 1) },
		"complete a blocked unit":     func() error { return f.b.Complete(f.worker, 3, "", 1, 1) },
		"heartbeat with a wrong token": func() error {
			_, err := f.b.Heartbeat(f.worker, 2, "not-the-token", 1, 1)
			return err
		},
		"fail with a wrong token": func() error {
			_, err := f.b.Fail(f.worker, 2, "not-the-token", "boom", false)
			return err
		},
	} {
		if err := call(); !errors.Is(err, ErrStaleToken) {
			t.Errorf("%s: %v, want ErrStaleToken", name, err)
		}
	}
	if after := f.unit(2); after.State != store.StateRunning || after.Token != l.Token || after.Attempts != before.Attempts ||
		after.Rows != 0 || !after.LeaseExpiry.Equal(before.LeaseExpiry) || after.LastError != "" {
		t.Errorf("a rejected call changed the unit:\nbefore %+v\n after %+v", before, after)
	}
	f.wantStates(map[uint64]store.State{1: store.StateReady, 2: store.StateRunning, 3: store.StateBlocked})

	// The right token still works, once.
	f.complete(l)
	if err := f.b.Complete(f.worker, 2, l.Token, 1, 1); !errors.Is(err, ErrStaleToken) {
		t.Errorf("second complete: %v, want ErrStaleToken", err)
	}
	if u := f.unit(2); u.State != store.StateDone || u.Rows != 10 {
		t.Errorf("a second complete changed the unit: %+v", u)
	}

	for name, err := range map[string]error{
		"complete":  f.b.Complete(f.worker, 99, "x", 0, 0),
		"heartbeat": func() error { _, err := f.b.Heartbeat(f.worker, 99, "x", 0, 0); return err }(),
		"fail":      func() error { _, err := f.b.Fail(f.worker, 99, "x", "r", false); return err }(),
		"retry":     f.b.Retry(99),
	} {
		if !errors.Is(err, ErrUnknownUnit) {
			t.Errorf("%s of unit 99: %v, want ErrUnknownUnit", name, err)
		}
	}
}

func TestUnknownWorker(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	l := f.acquireID(2)
	const nobody = "nobody"
	if _, _, err := f.b.Acquire(context.Background(), nobody, nil, 0); !errors.Is(err, ErrUnknownWorker) {
		t.Errorf("Acquire: %v, want ErrUnknownWorker", err)
	}
	if _, err := f.b.Heartbeat(nobody, 2, l.Token, 0, 0); !errors.Is(err, ErrUnknownWorker) {
		t.Errorf("Heartbeat: %v, want ErrUnknownWorker", err)
	}
	if err := f.b.Complete(nobody, 2, l.Token, 0, 0); !errors.Is(err, ErrUnknownWorker) {
		t.Errorf("Complete: %v, want ErrUnknownWorker", err)
	}
	if _, err := f.b.Fail(nobody, 2, l.Token, "x", false); !errors.Is(err, ErrUnknownWorker) {
		t.Errorf("Fail: %v, want ErrUnknownWorker", err)
	}
	if u := f.unit(2); u.State != store.StateRunning || u.Token != l.Token {
		t.Errorf("calls from an unknown worker changed the unit: %+v", u)
	}
	f.wantStates(map[uint64]store.State{1: store.StateReady})

	// A second registered worker may finish the unit with its token.
	other, err := f.b.RegisterWorker("other", 1)
	if err != nil {
		t.Fatal(err)
	}
	if other == f.worker || other == "" {
		t.Fatalf("RegisterWorker gave ID %q (first worker %q)", other, f.worker)
	}
	if err := f.b.Complete(other, 2, l.Token, 0, 0); err != nil {
		t.Errorf("Complete from another registered worker with the right token: %v", err)
	}
	ws, err := f.st.Workers()
	if err != nil || len(ws) != 2 {
		t.Errorf("workers in the store: %+v, %v; want 2", ws, err)
	}
	snap := f.b.Snapshot()
	if len(snap.Workers) != 2 || snap.Workers[0].ID != f.worker || snap.Workers[1].ID != other {
		t.Errorf("Snapshot workers %+v, want %s then %s", snap.Workers, f.worker, other)
	}
}

func TestPauseAndResume(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	f.b.SetPaused(true)
	if !f.b.Paused() || !f.b.Snapshot().Paused {
		t.Error("not Paused after SetPaused(true)")
	}
	// While paused, a long-poll ends empty-handed when its wait is over.
	l, finished, err := f.b.Acquire(context.Background(), f.worker, nil, 50*time.Millisecond)
	if l != nil || finished || err != nil {
		t.Fatalf("Acquire while paused = %+v, %t, %v; want no lease", l, finished, err)
	}
	if f.b.Finished() {
		t.Error("paused broker with ready units says Finished")
	}

	// A long-poll waiting through the pause gets a unit on Resume.
	got := make(chan *Lease, 1)
	go func() {
		l, _, err := f.b.Acquire(context.Background(), f.worker, nil, time.Minute)
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		got <- l
	}()
	time.Sleep(20 * time.Millisecond) // let it start waiting; the test passes either way
	select {
	case l := <-got:
		t.Fatalf("Acquire returned %+v while paused", l)
	default:
	}
	f.b.SetPaused(false)
	select {
	case l := <-got:
		if l == nil || l.Unit.ID != 2 {
			t.Errorf("Acquire after Resume = %+v, want unit 2", l)
		}
	case <-time.After(eventually):
		t.Fatal("Resume did not wake the waiting Acquire")
	}
	if f.b.Paused() {
		t.Error("still Paused after SetPaused(false)")
	}
}

func TestLongPollWakesWhenDependencyCompletes(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	dep := f.acquireID(2)

	got := make(chan *Lease, 1)
	go func() {
		l, _, err := f.b.Acquire(context.Background(), f.worker, []plan.Kind{plan.KindIndex}, time.Minute)
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		got <- l
	}()
	time.Sleep(20 * time.Millisecond) // let it start waiting; the test passes either way
	select {
	case l := <-got:
		t.Fatalf("Acquire(index) returned %+v before its dependency completed", l)
	default:
	}
	f.complete(dep)
	select {
	case l := <-got:
		if l == nil || l.Unit.ID != 3 {
			t.Errorf("woken Acquire = %+v, want unit 3", l)
		}
	case <-time.After(eventually):
		t.Fatal("completing the dependency did not wake the long-poll (wait was a minute)")
	}
}

func TestAcquireHonoursContext(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	f.acquireID(2)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		l, _, err := f.b.Acquire(ctx, f.worker, []plan.Kind{plan.KindIndex}, time.Minute)
		if l != nil {
			t.Errorf("cancelled Acquire leased unit %d", l.Unit.ID)
		}
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Acquire: %v, want context.Canceled", err)
		}
	case <-time.After(eventually):
		t.Fatal("Acquire ignored its cancelled context")
	}
}

func TestCoordinatorRestart(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	f.complete(f.acquireID(2)) // done; releases 3
	running := f.acquireID(3)
	other := f.acquireID(1)
	hb, err := f.b.Heartbeat(f.worker, 3, running.Token, 77, 88)
	if err != nil || hb.IsZero() {
		t.Fatal(err)
	}

	// A new broker over the same store, as a restarted coordinator has.
	b2 := f.newBroker(testConfig())
	f.b = b2
	f.wantStates(map[uint64]store.State{1: store.StateReady, 2: store.StateDone, 3: store.StateReady,
		4: store.StateBlocked, 5: store.StateReady, 6: store.StateBlocked})
	for _, id := range []uint64{1, 3} {
		u := f.unit(id)
		if u.Token != "" || u.WorkerID != "" || u.Attempts != 1 {
			t.Errorf("unit %d after restart: token %q worker %q attempts %d; want no lease, 1 attempt kept", id, u.Token, u.WorkerID, u.Attempts)
		}
	}
	if u := f.unit(2); u.Rows != 10 || u.Bytes != 20 {
		t.Errorf("done unit lost its counts: %+v", u)
	}
	// The old leases are gone: their tokens are stale on the new broker.
	if err := b2.Complete(f.worker, 3, running.Token, 1, 1); !errors.Is(err, ErrStaleToken) {
		t.Errorf("complete with a lease from before the restart: %v, want ErrStaleToken", err)
	}
	if _, err := b2.Heartbeat(f.worker, 1, other.Token, 1, 1); !errors.Is(err, ErrStaleToken) {
		t.Errorf("heartbeat with a lease from before the restart: %v, want ErrStaleToken", err)
	}
	// The worker registered before the restart is still known, and the
	// redelivery counts as a second attempt.
	l := f.acquireID(3)
	if l.Attempt != 2 {
		t.Errorf("redelivery after restart: attempt %d, want 2", l.Attempt)
	}
	f.complete(l)
	f.wantStates(map[uint64]store.State{4: store.StateReady})
	// The store now says what the new broker says.
	if u := f.stored(3); u.State != store.StateDone || u.Attempts != 2 {
		t.Errorf("unit 3 in the store: %+v", u)
	}
}

func TestSettled(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	isCopy := func(u *store.Unit) bool { return u.Kind == plan.KindCopy }
	none := func(*store.Unit) bool { return false }
	if f.b.Settled(isCopy) {
		t.Error("copies Settled before any ran")
	}
	if !f.b.Settled(none) {
		t.Error("an empty selection is not Settled")
	}
	a := f.acquireID(2)
	b := f.acquireID(1)
	if f.b.Settled(isCopy) {
		t.Error("copies Settled while running")
	}
	f.complete(a)
	if f.b.Settled(isCopy) {
		t.Error("copies Settled with one running")
	}
	f.complete(b)
	if !f.b.Settled(isCopy) {
		t.Error("copies not Settled when all are done")
	}
	if f.b.Settled(func(u *store.Unit) bool { return true }) {
		t.Error("everything Settled with units left")
	}
}

func TestChangedSignalsStateChanges(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	for name, change := range map[string]func(){
		"lease":  func() { f.acquireID(5, plan.KindSequences) },
		"pause":  func() { f.b.SetPaused(true) },
		"resume": func() { f.b.SetPaused(false) },
	} {
		ch := f.b.Changed()
		change()
		select {
		case <-ch:
		case <-time.After(eventually):
			t.Errorf("%s did not close Changed", name)
		}
	}
}

// TestConcurrentWorkers runs several workers against one broker, with the
// expiry scan on, and checks every unit is done exactly once.
func TestConcurrentWorkers(t *testing.T) {
	cfg := testConfig()
	cfg.TTL = time.Minute // no expiry: each unit must be leased exactly once
	var units []plan.Unit
	for i := 1; i <= 60; i++ {
		u := plan.Unit{ID: uint64(i), Kind: plan.KindCopy, Size: int64(i % 7)}
		if i > 20 {
			u.Kind = plan.KindIndex
			u.DependsOn = []uint64{uint64(i - 20)}
		}
		if i > 40 {
			u.Kind = plan.KindForeignKey
			u.DependsOn = []uint64{uint64(i - 20), uint64(i - 40)}
		}
		units = append(units, u)
	}
	f := newFixture(t, cfg, units)
	runBroker(t, f.b)

	var mu sync.Mutex
	leased := map[uint64]int{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		id, err := f.b.RegisterWorker(fmt.Sprintf("w%d", w), 1)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				l, finished, err := f.b.Acquire(context.Background(), id, nil, eventually)
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				if finished {
					return
				}
				if l == nil {
					t.Error("Acquire waited 5s with work left")
					return
				}
				mu.Lock()
				leased[l.Unit.ID]++
				mu.Unlock()
				for _, d := range l.Unit.DependsOn {
					if s := f.unit(d).State; s != store.StateDone {
						t.Errorf("unit %d leased while its dependency %d is %s", l.Unit.ID, d, s)
					}
				}
				if _, err := f.b.Heartbeat(id, l.Unit.ID, l.Token, 1, 1); err != nil {
					t.Errorf("heartbeat: %v", err)
				}
				if err := f.b.Complete(id, l.Unit.ID, l.Token, 1, 1); err != nil {
					t.Errorf("complete: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for _, u := range units {
		if leased[u.ID] != 1 {
			t.Errorf("unit %d leased %d times, want 1", u.ID, leased[u.ID])
		}
	}
	if !f.b.Finished() {
		t.Error("not Finished")
	}
	stored, err := f.st.Units()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range stored {
		if u.State != store.StateDone {
			t.Errorf("unit %d is %s in the store, want done", u.ID, u.State)
		}
	}
}
