package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
)

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
