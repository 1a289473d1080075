package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventually is how long a test waits for something that must happen soon.
// It is a bound on a hang, not a timing assertion.
const eventually = 5 * time.Second

func testConfig() Config {
	return Config{TTL: 200 * time.Millisecond, ScanInterval: 20 * time.Millisecond, RedeliveryDelay: 10 * time.Millisecond,
		MaxRedeliveryDelay: 50 * time.Millisecond, MaxAttempts: 3}
}

// The test plan:
//
//	1 copy  a     size 100
//	2 copy  b     size 300
//	3 index b     size 300  <- 2
//	4 constraint b size 300 <- 2, 3
//	5 sequences   size 0
//	6 foreign_key size 400  <- 1, 4
func testUnits() []plan.Unit {
	return []plan.Unit{
		{ID: 1, Kind: plan.KindCopy, TableOID: 10, Table: "s.a", Description: "whole table", Size: 100, Transactional: true},
		{ID: 2, Kind: plan.KindCopy, TableOID: 20, Table: "s.b", Description: "whole table", Size: 300, Transactional: true},
		{ID: 3, Kind: plan.KindIndex, TableOID: 20, Table: "s.b", Description: "b_idx", Size: 300, DependsOn: []uint64{2}},
		{ID: 4, Kind: plan.KindConstraint, TableOID: 20, Table: "s.b", Description: "b_pkey", Size: 300, DependsOn: []uint64{2, 3}},
		{ID: 5, Kind: plan.KindSequences, Description: "1 sequences", SQL: "SELECT 1;"},
		{ID: 6, Kind: plan.KindForeignKey, TableOID: 20, Table: "s.b", Description: "b_a_fkey", Size: 400, DependsOn: []uint64{1, 4}},
	}
}

type fixture struct {
	t      *testing.T
	dir    string
	st     *store.Store
	b      *Broker
	worker string
}

// newFixture saves units as a fresh plan in a store in a temp dir and starts
// a broker over it with one registered worker.
func newFixture(t *testing.T, cfg Config, units []plan.Unit) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.SavePlan(plan.Plan{Units: units}, store.Epoch{ID: 1}, InitialState); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, dir: dir, st: st}
	f.b = f.newBroker(cfg)
	if f.worker, err = f.b.RegisterWorker("test-worker", 4); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) newBroker(cfg Config) *Broker {
	f.t.Helper()
	b, err := New(cfg, f.st, hclog.NewNullLogger())
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// acquire leases a unit that must be ready now.
func (f *fixture) acquire(kinds ...plan.Kind) *Lease {
	f.t.Helper()
	l, finished, err := f.b.Acquire(context.Background(), f.worker, kinds, 0)
	if err != nil || finished || l == nil {
		f.t.Fatalf("Acquire(%v) = %v, finished=%t, %v; want a lease", kinds, l, finished, err)
	}
	return l
}

// acquireID leases a unit and checks which one it is.
func (f *fixture) acquireID(want uint64, kinds ...plan.Kind) *Lease {
	f.t.Helper()
	l := f.acquire(kinds...)
	if l.Unit.ID != want {
		f.t.Fatalf("Acquire(%v) leased unit %d, want %d", kinds, l.Unit.ID, want)
	}
	return l
}

// acquireNone checks that nothing is handed out now.
func (f *fixture) acquireNone(kinds ...plan.Kind) {
	f.t.Helper()
	l, finished, err := f.b.Acquire(context.Background(), f.worker, kinds, 0)
	if err != nil || finished || l != nil {
		f.t.Fatalf("Acquire(%v) = %+v, finished=%t, %v; want nothing yet", kinds, l, finished, err)
	}
}

func (f *fixture) complete(l *Lease) {
	f.t.Helper()
	if err := f.b.Complete(f.worker, l.Unit.ID, l.Token, 10, 20); err != nil {
		f.t.Fatalf("complete unit %d: %v", l.Unit.ID, err)
	}
}

// unit is the broker's view of one unit.
func (f *fixture) unit(id uint64) store.Unit {
	f.t.Helper()
	for _, u := range f.b.Snapshot().Units {
		if u.ID == id {
			return u
		}
	}
	f.t.Fatalf("no unit %d", id)
	return store.Unit{}
}

// stored is the store's view of one unit.
func (f *fixture) stored(id uint64) store.Unit {
	f.t.Helper()
	units, err := f.st.Units()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, u := range units {
		if u.ID == id {
			return u
		}
	}
	f.t.Fatalf("no unit %d in the store", id)
	return store.Unit{}
}

func (f *fixture) states() map[uint64]store.State {
	out := map[uint64]store.State{}
	for _, u := range f.b.Snapshot().Units {
		out[u.ID] = u.State
	}
	return out
}

func (f *fixture) wantStates(want map[uint64]store.State) {
	f.t.Helper()
	got := f.states()
	for id, w := range want {
		if got[id] != w {
			f.t.Errorf("unit %d is %s, want %s (all: %v)", id, got[id], w, got)
		}
		if s := f.stored(id).State; s != w {
			f.t.Errorf("unit %d is %s in the store, want %s", id, s, w)
		}
	}
}

// waitFor polls cond until it holds, failing the test after eventually.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v", what, eventually)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runBroker runs b.Run until the test ends or the returned stop is called.
func runBroker(t *testing.T, b *Broker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// fakeClock is a settable clock for tests that must not depend on timing.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func useFakeClock(b *Broker) *fakeClock {
	c := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	b.now = c.Now
	return c
}

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

func TestHeartbeatExtendsLease(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	clock := useFakeClock(f.b)
	ttl := testConfig().TTL
	l := f.acquireID(2)
	if want := clock.Now().Add(ttl); !l.Expiry.Equal(want) {
		t.Errorf("expiry %v, want now+TTL %v", l.Expiry, want)
	}

	// Just before the lease ends, a heartbeat pushes it a TTL further.
	clock.Add(ttl - time.Millisecond)
	exp, err := f.b.Heartbeat(f.worker, 2, l.Token, 500, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(ttl); !exp.Equal(want) || !exp.After(l.Expiry) {
		t.Errorf("heartbeat expiry %v, want %v (after %v)", exp, want, l.Expiry)
	}
	if u := f.unit(2); u.Rows != 500 || u.Bytes != 4096 || !u.LeaseExpiry.Equal(exp) {
		t.Errorf("after heartbeat: rows %d bytes %d expiry %v", u.Rows, u.Bytes, u.LeaseExpiry)
	}

	// Past the first expiry, the heartbeat keeps the lease alive.
	clock.Add(ttl / 2)
	if err := f.b.expire(); err != nil {
		t.Fatal(err)
	}
	if u := f.unit(2); u.State != store.StateRunning || u.Token != l.Token {
		t.Fatalf("a heartbeated lease expired: %+v", u)
	}

	// Without further heartbeats, it ends.
	clock.Add(ttl)
	if err := f.b.expire(); err != nil {
		t.Fatal(err)
	}
	u := f.unit(2)
	if u.State != store.StateReady || u.Token != "" || !strings.Contains(u.LastError, "lease expired") {
		t.Errorf("after expiry: %+v", u)
	}
	if !u.NotBefore.Equal(clock.Now().Add(testConfig().RedeliveryDelay)) {
		t.Errorf("redelivery not before %v, want now+RedeliveryDelay", u.NotBefore)
	}
	if _, err := f.b.Heartbeat(f.worker, 2, l.Token, 1, 1); !errors.Is(err, ErrStaleToken) {
		t.Errorf("heartbeat after expiry: %v, want ErrStaleToken", err)
	}
	if n := f.b.Snapshot().Expirations; n != 1 {
		t.Errorf("%d expirations, want 1", n)
	}
}

func TestExpiredLeaseIsRedelivered(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	stop := runBroker(t, f.b)
	first := f.acquireID(2)
	f.complete(f.acquireID(1)) // the only other copy unit, out of the way

	// Stop heartbeating: the scan takes the lease back.
	waitFor(t, "the unheartbeated lease is taken back", func() bool {
		return f.unit(2).State != store.StateRunning
	})
	stop() // no further expiry can race with the checks below
	u := f.unit(2)
	if u.State != store.StateReady || u.Attempts != 1 || u.Token != "" || !strings.Contains(u.LastError, "lease expired") {
		t.Fatalf("expired unit: %+v, want ready after 1 attempt with the expiry as its last error", u)
	}
	if s := f.stored(2); s.State != store.StateReady || s.LastError != u.LastError {
		t.Errorf("expiry not in the store: %+v", s)
	}
	if n := f.b.Snapshot().Expirations; n != 1 {
		t.Errorf("%d expirations, want 1", n)
	}

	// The redelivery waits out its delay inside Acquire.
	l, finished, err := f.b.Acquire(context.Background(), f.worker, []plan.Kind{plan.KindCopy}, eventually)
	if err != nil || finished || l == nil {
		t.Fatalf("Acquire after expiry = %+v, %t, %v", l, finished, err)
	}
	if l.Unit.ID != 2 || l.Attempt != 2 || l.Token == first.Token {
		t.Fatalf("redelivery: unit %d attempt %d (token changed: %t), want unit 2 attempt 2 with a new token",
			l.Unit.ID, l.Attempt, l.Token != first.Token)
	}
	if err := f.b.Complete(f.worker, 2, first.Token, 1, 1); !errors.Is(err, ErrStaleToken) {
		t.Errorf("complete with the expired lease's token: %v, want ErrStaleToken", err)
	}
	if _, err := f.b.Heartbeat(f.worker, 2, first.Token, 1, 1); !errors.Is(err, ErrStaleToken) {
		t.Errorf("heartbeat with the expired lease's token: %v, want ErrStaleToken", err)
	}
	f.complete(l)
	if u := f.unit(2); u.State != store.StateDone || u.LastError != "" {
		t.Errorf("after completing the redelivery: %+v, want done with no error", u)
	}
	f.wantStates(map[uint64]store.State{3: store.StateReady})
}

func TestFailPastDeliveryLimit(t *testing.T) {
	f := newFixture(t, testConfig(), testUnits())
	l := f.acquireID(2)
	f.complete(f.acquireID(1)) // the other copy unit, out of the way
	for attempt := 1; ; attempt++ {
		if l.Unit.ID != 2 || l.Attempt != attempt {
			t.Fatalf("leased unit %d attempt %d, want unit 2 attempt %d", l.Unit.ID, l.Attempt, attempt)
		}
		state, err := f.b.Fail(f.worker, 2, l.Token, fmt.Sprintf("boom %d", attempt), false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.b.Fail(f.worker, 2, l.Token, "again", false); !errors.Is(err, ErrStaleToken) {
			t.Errorf("second Fail with the same token: %v, want ErrStaleToken", err)
		}
		if attempt == testConfig().MaxAttempts {
			if state != store.StateFailed {
				t.Errorf("Fail on the last attempt: %s, want failed", state)
			}
			break
		}
		if state != store.StateReady {
			t.Errorf("Fail on attempt %d: %s, want ready", attempt, state)
		}
		if u := f.unit(2); u.LastError != fmt.Sprintf("boom %d", attempt) || u.NotBefore.IsZero() {
			t.Errorf("after attempt %d: %+v, want the error kept and a redelivery delay", attempt, u)
		}
		// The redelivery waits out its delay inside Acquire.
		var finished bool
		l, finished, err = f.b.Acquire(context.Background(), f.worker, []plan.Kind{plan.KindCopy}, eventually)
		if err != nil || finished || l == nil {
			t.Fatalf("Acquire after attempt %d = %+v, %t, %v", attempt, l, finished, err)
		}
	}
	u := f.unit(2)
	if u.State != store.StateFailed || u.Attempts != 3 || u.LastError != "boom 3" || u.Token != "" {
		t.Errorf("failed unit: %+v", u)
	}
	if s := f.stored(2); s.State != store.StateFailed || s.LastError != "boom 3" || s.Attempts != 3 {
		t.Errorf("failed unit in the store: %+v", s)
	}
	// Its dependents stay blocked; the rest goes on.
	f.wantStates(map[uint64]store.State{1: store.StateDone, 3: store.StateBlocked, 4: store.StateBlocked, 6: store.StateBlocked})
	if f.b.Finished() {
		t.Error("Finished while the sequences unit is ready")
	}
	f.complete(f.acquireID(5))
	if !f.b.Finished() {
		t.Error("not Finished with only units blocked behind a failed one left")
	}
	if l, finished, err := f.b.Acquire(context.Background(), f.worker, nil, time.Minute); l != nil || !finished || err != nil {
		t.Errorf("Acquire = %+v, %t, %v; want finished at once", l, finished, err)
	}
	if !f.b.Settled(func(u *store.Unit) bool { return u.Kind == plan.KindCopy }) {
		t.Error("copy units not Settled with one done and one failed")
	}
	if f.b.Settled(func(u *store.Unit) bool { return u.TableOID == 20 }) {
		t.Error("table b Settled with blocked units")
	}
}

func TestExpiryPastDeliveryLimitFails(t *testing.T) {
	f := newFixture(t, testConfig(), []plan.Unit{{ID: 1, Kind: plan.KindCopy, Size: 1}, {ID: 2, Kind: plan.KindIndex, DependsOn: []uint64{1}}})
	clock := useFakeClock(f.b)
	for attempt := 1; attempt <= 3; attempt++ {
		l := f.acquireID(1)
		if l.Attempt != attempt {
			t.Fatalf("attempt %d, want %d", l.Attempt, attempt)
		}
		clock.Add(testConfig().TTL)
		if err := f.b.expire(); err != nil {
			t.Fatal(err)
		}
		clock.Add(testConfig().MaxRedeliveryDelay)
	}
	u := f.unit(1)
	if u.State != store.StateFailed || !strings.Contains(u.LastError, "lease expired") || !strings.Contains(u.LastError, f.worker) {
		t.Errorf("unit expired 3 times: %+v, want failed naming the worker", u)
	}
	if n := f.b.Snapshot().Expirations; n != 3 {
		t.Errorf("%d expirations, want 3", n)
	}
	f.wantStates(map[uint64]store.State{1: store.StateFailed, 2: store.StateBlocked})
	if !f.b.Finished() {
		t.Error("not Finished")
	}
}

func TestRedeliveryDelayGrows(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAttempts = 10
	f := newFixture(t, cfg, []plan.Unit{{ID: 1, Kind: plan.KindCopy, Size: 1}})
	clock := useFakeClock(f.b)
	for i, want := range []time.Duration{10, 20, 40, 50, 50, 50} {
		want *= time.Millisecond
		l := f.acquireID(1)
		if _, err := f.b.Fail(f.worker, 1, l.Token, "x", false); err != nil {
			t.Fatal(err)
		}
		u := f.unit(1)
		if got := u.NotBefore.Sub(clock.Now()); got != want {
			t.Errorf("after attempt %d: delay %v, want %v", i+1, got, want)
		}
		// Not before the delay...
		clock.Add(want - time.Nanosecond)
		f.acquireNone()
		// ...but at it.
		clock.Add(time.Nanosecond)
	}
}

func TestRetry(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAttempts = 1
	f := newFixture(t, cfg, testUnits())
	l := f.acquireID(2)
	if err := f.b.Retry(2); !errors.Is(err, ErrNotFailed) {
		t.Errorf("Retry of a running unit: %v, want ErrNotFailed", err)
	}
	for _, id := range []uint64{1, 3} {
		if err := f.b.Retry(id); !errors.Is(err, ErrNotFailed) {
			t.Errorf("Retry of %s unit %d: %v, want ErrNotFailed", f.unit(id).State, id, err)
		}
	}
	if state, err := f.b.Fail(f.worker, 2, l.Token, "disk full", false); err != nil || state != store.StateFailed {
		t.Fatalf("Fail = %s, %v; want failed (MaxAttempts 1)", state, err)
	}
	f.acquireNone(plan.KindIndex)
	if err := f.b.Retry(3); !errors.Is(err, ErrNotFailed) {
		t.Errorf("Retry of a unit blocked behind a failed one: %v, want ErrNotFailed", err)
	}

	if err := f.b.Retry(2); err != nil {
		t.Fatal(err)
	}
	u := f.unit(2)
	if u.State != store.StateReady || u.Attempts != 0 || !u.NotBefore.IsZero() {
		t.Errorf("retried unit: %+v, want ready with attempts reset", u)
	}
	if s := f.stored(2); s.State != store.StateReady || s.Attempts != 0 {
		t.Errorf("retried unit in the store: %+v", s)
	}
	if err := f.b.Retry(2); !errors.Is(err, ErrNotFailed) {
		t.Errorf("second Retry: %v, want ErrNotFailed", err)
	}
	l = f.acquireID(2)
	if l.Attempt != 1 {
		t.Errorf("lease after Retry: attempt %d, want 1", l.Attempt)
	}
	f.complete(l)
	f.wantStates(map[uint64]store.State{2: store.StateDone, 3: store.StateReady})
}

func TestRetryWakesFinishedBroker(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAttempts = 1
	f := newFixture(t, cfg, []plan.Unit{{ID: 1, Kind: plan.KindCopy, Size: 1}, {ID: 2, Kind: plan.KindIndex, DependsOn: []uint64{1}}})
	l := f.acquireID(1)
	if _, err := f.b.Fail(f.worker, 1, l.Token, "x", false); err != nil {
		t.Fatal(err)
	}
	if !f.b.Finished() {
		t.Fatal("not Finished with the only runnable unit failed")
	}
	changed := f.b.Changed()
	if err := f.b.Retry(1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(eventually):
		t.Error("Retry did not signal Changed")
	}
	if f.b.Finished() {
		t.Error("Finished after Retry made a unit ready")
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
