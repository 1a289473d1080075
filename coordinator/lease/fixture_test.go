package lease

import (
	"context"
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
