// Package lease hands units to workers and takes them back. A lease has a
// token and an expiry; a heartbeat extends it; an expired or failed lease is
// delivered again after a growing delay, and past the delivery limit the unit
// is failed while the rest of the migration goes on. Every state change is
// written to the store before it is answered, so a restarted coordinator
// resumes where this one stopped. Model: Nomad's eval_broker.
//
// The broker is in-memory state over the store; it does not know gRPC or
// PostgreSQL.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
)

var (
	// ErrUnknownUnit means no unit has that ID.
	ErrUnknownUnit = errors.New("lease: unit not found")
	// ErrStaleToken means the lease was taken back (expired, or redelivered)
	// and the caller no longer holds it.
	ErrStaleToken = errors.New("lease: stale lease token")
	// ErrUnknownWorker means the worker must register (again).
	ErrUnknownWorker = errors.New("lease: worker not registered")
	// ErrNotFailed means RetryUnit was called on a unit that has not failed.
	ErrNotFailed = errors.New("lease: unit has not failed")
	// ErrNotVerify means a verify result was reported for another kind of unit.
	ErrNotVerify = errors.New("lease: not a verify unit")
)

// Config tunes the broker. Tests shrink the durations.
type Config struct {
	// TTL is how long a lease lives without a heartbeat.
	TTL time.Duration
	// MaxAttempts is the delivery limit.
	MaxAttempts int
	// RedeliveryDelay is the delay before the second delivery; it doubles
	// with each further one, up to MaxRedeliveryDelay.
	RedeliveryDelay    time.Duration
	MaxRedeliveryDelay time.Duration
	// ScanInterval is how often expired leases are looked for.
	ScanInterval time.Duration
}

// DefaultConfig is what the coordinator runs with unless told otherwise.
func DefaultConfig() Config {
	return Config{TTL: 30 * time.Second, MaxAttempts: 5, RedeliveryDelay: time.Second,
		MaxRedeliveryDelay: time.Minute, ScanInterval: 2 * time.Second}
}

// Lease is a unit handed to a worker.
type Lease struct {
	Unit    store.Unit
	Token   string
	Expiry  time.Time
	Attempt int
}

// Counts are units by state.
type Counts map[store.State]int

// Broker holds the units and their leases.
type Broker struct {
	cfg Config
	st  *store.Store
	log hclog.Logger
	now func() time.Time

	mu         sync.Mutex
	units      map[uint64]*store.Unit
	ids        []uint64
	dependents map[uint64][]uint64
	workers    map[string]*store.Worker
	paused     bool
	// changed is closed (and replaced) whenever a unit changes state, to
	// wake long-polls and watchers.
	changed      chan struct{}
	expirations  int
	redeliveries int
	// fence, when set, is called with an expired lease before its unit is
	// delivered again, to end the old holder's database sessions (a
	// stopped worker would otherwise keep its locks).
	fence func(store.Unit)
	// hold keeps idle workers waiting instead of telling them the
	// migration finished: a --follow migration still has verify units to
	// hand out until it is cleaned up.
	hold bool
	// polled is, by worker, when it last asked for each kind ("" for
	// any): who would take a unit of a kind.
	polled map[string]map[plan.Kind]time.Time
}

// New loads every unit from the store. Units that were running when a
// previous coordinator stopped are made ready again: their worker's lease
// died with it (the coordinator fences their sessions before this), and the
// done-marker check on the target makes a redelivery harmless.
func New(cfg Config, st *store.Store, logger hclog.Logger) (*Broker, error) {
	b := &Broker{cfg: cfg, st: st, log: logger.Named("lease"), now: time.Now,
		units: map[uint64]*store.Unit{}, dependents: map[uint64][]uint64{},
		workers: map[string]*store.Worker{}, changed: make(chan struct{}), polled: map[string]map[plan.Kind]time.Time{}}
	units, err := st.Units()
	if err != nil {
		return nil, fmt.Errorf("load units: %w", err)
	}
	var reset []store.Unit
	var stale []uint64
	for i := range units {
		u := &units[i]
		// Verify units belong to a Verify call, which ended with the
		// previous coordinator; its results are in verify.db.
		if u.Kind == store.KindVerify {
			stale = append(stale, u.ID)
			continue
		}
		b.units[u.ID] = u
		b.ids = append(b.ids, u.ID)
		for _, d := range u.DependsOn {
			b.dependents[d] = append(b.dependents[d], u.ID)
		}
		if u.State == store.StateRunning {
			u.State, u.WorkerID, u.Token = store.StateReady, "", ""
			reset = append(reset, *u)
		}
	}
	if len(stale) > 0 {
		if err := st.DeleteUnits(stale...); err != nil {
			return nil, fmt.Errorf("remove the verify units of an earlier coordinator: %w", err)
		}
	}
	if len(reset) > 0 {
		b.log.Info("units that were running are delivered again", "units", len(reset))
		if err := st.PutUnits(reset...); err != nil {
			return nil, err
		}
	}
	workers, err := st.Workers()
	if err != nil {
		return nil, fmt.Errorf("load workers: %w", err)
	}
	for i := range workers {
		b.workers[workers[i].ID] = &workers[i]
	}
	return b, nil
}

// SetFence installs the function that ends an expired lease's sessions.
func (b *Broker) SetFence(fn func(store.Unit)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fence = fn
}

// InitialState is the state a freshly planned unit starts in.
func InitialState(u plan.Unit) store.State {
	if len(u.DependsOn) == 0 {
		return store.StateReady
	}
	return store.StateBlocked
}

// Run looks for expired leases until ctx is done.
func (b *Broker) Run(ctx context.Context) error {
	interval := b.cfg.ScanInterval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := b.expire(); err != nil {
				return err
			}
		}
	}
}

func (b *Broker) expire() error {
	// 1. Find expired leases.
	b.mu.Lock()
	now := b.now()
	var expired []store.Unit
	for _, id := range b.ids {
		u := b.units[id]
		if u.State == store.StateRunning && !now.Before(u.LeaseExpiry) {
			expired = append(expired, *u)
		}
	}
	fence := b.fence
	b.mu.Unlock()
	if len(expired) == 0 {
		return nil
	}
	// 2. Fence them outside the lock: their holders' sessions end, with
	// their locks and uncommitted rows, before anyone else gets the unit.
	if fence != nil {
		for _, u := range expired {
			fence(u)
		}
	}
	// 3. Deliver again those still held by the same expired lease.
	b.mu.Lock()
	defer b.mu.Unlock()
	var changed []store.Unit
	for _, old := range expired {
		u := b.units[old.ID]
		if u.State != store.StateRunning || u.Token != old.Token || b.now().Before(u.LeaseExpiry) {
			continue
		}
		b.expirations++
		b.log.Warn("lease expired", "unit_id", u.ID, "table", u.Table, "worker_id", u.WorkerID, "attempt", u.Attempts)
		b.failLocked(u, fmt.Sprintf("lease expired: worker %s stopped heartbeating", u.WorkerID))
		changed = append(changed, *u)
	}
	return b.commit(changed)
}

// RegisterWorker records a worker and returns its ID.
func (b *Broker) RegisterWorker(name string, jobs int) (string, error) {
	w := store.Worker{ID: newToken()[:12], Name: name, Jobs: jobs, RegisteredAt: b.now(), LastSeen: b.now()}
	if err := b.st.PutWorker(w); err != nil {
		return "", fmt.Errorf("register worker %s: %w", name, err)
	}
	b.mu.Lock()
	b.workers[w.ID] = &w
	b.mu.Unlock()
	return w.ID, nil
}

func (b *Broker) touchLocked(workerID string) error {
	w, ok := b.workers[workerID]
	if !ok {
		return fmt.Errorf("worker %q: %w", workerID, ErrUnknownWorker)
	}
	w.LastSeen = b.now()
	return nil
}

// Acquire waits up to wait for a ready unit of one of kinds (any kind when
// empty) and leases it to the worker. It returns finished=true when no unit
// will ever be ready again.
func (b *Broker) Acquire(ctx context.Context, workerID string, kinds []plan.Kind, wait time.Duration) (*Lease, bool, error) {
	deadline := b.now().Add(wait)
	for {
		b.mu.Lock()
		if err := b.touchLocked(workerID); err != nil {
			b.mu.Unlock()
			return nil, false, err
		}
		b.notePollLocked(workerID, kinds)
		if b.finishedLocked() && (!b.hold || b.anyFailedLocked()) {
			b.mu.Unlock()
			return nil, true, nil
		}
		u, retryAt := b.pickLocked(kinds)
		if u != nil {
			l, err := b.leaseLocked(u, workerID)
			b.mu.Unlock()
			return l, false, err
		}
		changed := b.changed
		b.mu.Unlock()

		now := b.now()
		if !now.Before(deadline) {
			return nil, false, nil
		}
		sleep := deadline.Sub(now)
		if !retryAt.IsZero() && retryAt.Sub(now) < sleep {
			sleep = max(retryAt.Sub(now), time.Millisecond)
		}
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, false, ctx.Err()
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// pickLocked returns the largest ready unit of the kinds, or nil and the
// earliest time a delayed redelivery becomes available.
func (b *Broker) pickLocked(kinds []plan.Kind) (*store.Unit, time.Time) {
	if b.paused {
		return nil, time.Time{}
	}
	now := b.now()
	var best *store.Unit
	var retryAt time.Time
	for _, id := range b.ids {
		u := b.units[id]
		if u.State != store.StateReady || !kindIn(u.Kind, kinds) {
			continue
		}
		if now.Before(u.NotBefore) {
			if retryAt.IsZero() || u.NotBefore.Before(retryAt) {
				retryAt = u.NotBefore
			}
			continue
		}
		if best == nil || u.Size > best.Size {
			best = u
		}
	}
	return best, retryAt
}

func kindIn(k plan.Kind, kinds []plan.Kind) bool {
	if len(kinds) == 0 {
		return true
	}
	for _, want := range kinds {
		if k == want {
			return true
		}
	}
	return false
}

func (b *Broker) leaseLocked(u *store.Unit, workerID string) (*Lease, error) {
	prev := *u
	u.State = store.StateRunning
	u.WorkerID = workerID
	u.Token = newToken()
	u.Attempts++
	u.LeaseExpiry = b.now().Add(b.cfg.TTL)
	u.StartedAt = b.now()
	u.Rows, u.Bytes = 0, 0
	if err := b.st.PutUnits(*u); err != nil {
		*u = prev
		return nil, fmt.Errorf("lease unit %d: %w", u.ID, err)
	}
	if u.Attempts > 1 {
		b.redeliveries++
	}
	b.log.Info("unit leased", "unit_id", u.ID, "kind", u.Kind, "table", u.Table, "worker_id", workerID, "attempt", u.Attempts)
	b.broadcastLocked()
	return &Lease{Unit: *u, Token: u.Token, Expiry: u.LeaseExpiry, Attempt: u.Attempts}, nil
}

// holderLocked returns the unit if token is its current lease.
func (b *Broker) holderLocked(unitID uint64, token string) (*store.Unit, error) {
	u, ok := b.units[unitID]
	if !ok {
		return nil, fmt.Errorf("unit %d: %w", unitID, ErrUnknownUnit)
	}
	if u.State != store.StateRunning || u.Token != token {
		return nil, fmt.Errorf("unit %d: %w", unitID, ErrStaleToken)
	}
	return u, nil
}

// Heartbeat extends a lease and records progress.
func (b *Broker) Heartbeat(workerID string, unitID uint64, token string, rows, bytes int64) (time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.touchLocked(workerID); err != nil {
		return time.Time{}, err
	}
	u, err := b.holderLocked(unitID, token)
	if err != nil {
		return time.Time{}, err
	}
	u.LeaseExpiry = b.now().Add(b.cfg.TTL)
	u.Rows, u.Bytes = rows, bytes
	return u.LeaseExpiry, nil
}

// Complete marks a unit done and releases the units waiting for it.
func (b *Broker) Complete(workerID string, unitID uint64, token string, rows, bytes int64) error {
	return b.complete(workerID, unitID, token, rows, bytes, nil)
}

func (b *Broker) complete(workerID string, unitID uint64, token string, rows, bytes int64, result func(*store.Unit) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.touchLocked(workerID); err != nil {
		return err
	}
	u, err := b.holderLocked(unitID, token)
	if err != nil {
		return err
	}
	prev := *u
	if result != nil {
		if err := result(u); err != nil {
			*u = prev
			return err
		}
	}
	u.State, u.Token, u.WorkerID = store.StateDone, "", workerID
	u.Rows, u.Bytes, u.FinishedAt, u.LastError = rows, bytes, b.now(), ""
	changed := []store.Unit{*u}
	var released []*store.Unit
	for _, d := range b.dependents[u.ID] {
		dep := b.units[d]
		if dep.State == store.StateBlocked && b.depsDoneLocked(dep) {
			dep.State = store.StateReady
			released = append(released, dep)
			changed = append(changed, *dep)
		}
	}
	if err := b.st.PutUnits(changed...); err != nil {
		*u = prev
		for _, r := range released {
			r.State = store.StateBlocked
		}
		return fmt.Errorf("complete unit %d: %w", unitID, err)
	}
	b.log.Info("unit done", "unit_id", u.ID, "kind", u.Kind, "table", u.Table, "rows", rows, "bytes", bytes,
		"millis", u.FinishedAt.Sub(u.StartedAt).Milliseconds(), "released", len(released))
	b.broadcastLocked()
	return nil
}

func (b *Broker) depsDoneLocked(u *store.Unit) bool {
	for _, d := range u.DependsOn {
		if b.units[d].State != store.StateDone {
			return false
		}
	}
	return true
}

// Fail records a failed attempt. The unit is delivered again after a delay,
// or failed for good past the delivery limit. A released unit (its worker
// is stopping) is ready again at once and the delivery does not count. It
// returns the new state.
func (b *Broker) Fail(workerID string, unitID uint64, token, reason string, release bool) (store.State, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.touchLocked(workerID); err != nil {
		return "", err
	}
	u, err := b.holderLocked(unitID, token)
	if err != nil {
		return "", err
	}
	if release {
		u.State, u.Token, u.NotBefore = store.StateReady, "", time.Time{}
		u.Attempts = max(u.Attempts-1, 0)
		b.log.Info("unit released by its worker", "unit_id", u.ID, "table", u.Table, "worker_id", workerID)
	} else {
		b.failLocked(u, reason)
	}
	if err := b.commit([]store.Unit{*u}); err != nil {
		return "", err
	}
	return u.State, nil
}

// failLocked moves a running unit to ready (after a delay) or failed.
func (b *Broker) failLocked(u *store.Unit, reason string) {
	u.LastError = reason
	u.Token = ""
	u.FinishedAt = b.now()
	if u.Attempts >= b.cfg.MaxAttempts {
		u.State = store.StateFailed
		b.log.Error("unit failed past its delivery limit", "unit_id", u.ID, "kind", u.Kind, "table", u.Table,
			"attempts", u.Attempts, "error", reason)
		return
	}
	delay := b.cfg.RedeliveryDelay << max(u.Attempts-1, 0)
	if delay > b.cfg.MaxRedeliveryDelay || delay <= 0 {
		delay = b.cfg.MaxRedeliveryDelay
	}
	u.State = store.StateReady
	u.NotBefore = b.now().Add(delay)
	b.log.Warn("unit failed, delivering again", "unit_id", u.ID, "kind", u.Kind, "table", u.Table,
		"attempt", u.Attempts, "delay", delay, "error", reason)
}

func (b *Broker) commit(changed []store.Unit) error {
	if len(changed) == 0 {
		return nil
	}
	if err := b.st.PutUnits(changed...); err != nil {
		return err
	}
	b.broadcastLocked()
	return nil
}

// Retry makes a failed unit ready again with a fresh delivery count.
func (b *Broker) Retry(unitID uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.units[unitID]
	if !ok {
		return fmt.Errorf("unit %d: %w", unitID, ErrUnknownUnit)
	}
	if u.State != store.StateFailed {
		return fmt.Errorf("unit %d is %s: %w", unitID, u.State, ErrNotFailed)
	}
	u.State, u.Attempts, u.NotBefore = store.StateReady, 0, time.Time{}
	return b.commit([]store.Unit{*u})
}

// RetryFailed makes every failed unit ready again and returns their IDs.
func (b *Broker) RetryFailed() ([]uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []uint64
	var changed []store.Unit
	for _, id := range b.ids {
		u := b.units[id]
		if u.State == store.StateFailed {
			u.State, u.Attempts, u.NotBefore = store.StateReady, 0, time.Time{}
			ids = append(ids, id)
			changed = append(changed, *u)
		}
	}
	return ids, b.commit(changed)
}

// SetPaused stops or restarts handing out units.
func (b *Broker) SetPaused(paused bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.paused = paused
	b.broadcastLocked()
}

// Paused says whether the broker is paused.
func (b *Broker) Paused() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paused
}

func (b *Broker) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Changed returns a channel closed at the next state change.
func (b *Broker) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

func (b *Broker) finishedLocked() bool {
	for _, u := range b.units {
		if u.State == store.StateReady || u.State == store.StateRunning {
			return false
		}
	}
	return true
}

// Finished says whether no unit is ready or running: nothing can happen
// any more. Blocked units left then wait on failed ones.
func (b *Broker) Finished() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.finishedLocked()
}

// Settled says whether every unit matching fn is done or failed.
func (b *Broker) Settled(fn func(*store.Unit) bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range b.units {
		if fn(u) && u.State != store.StateDone && u.State != store.StateFailed {
			return false
		}
	}
	return true
}

// Snapshot is a copy of the broker's state, for status and metrics.
type Snapshot struct {
	Units        []store.Unit
	Workers      []store.Worker
	Paused       bool
	Expirations  int
	Redeliveries int
}

// Snapshot copies the current state.
func (b *Broker) Snapshot() Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Snapshot{Paused: b.paused, Expirations: b.expirations, Redeliveries: b.redeliveries}
	for _, id := range b.ids {
		s.Units = append(s.Units, *b.units[id])
	}
	for _, w := range b.workers {
		s.Workers = append(s.Workers, *w)
	}
	sort.Slice(s.Workers, func(i, j int) bool { return s.Workers[i].RegisteredAt.Before(s.Workers[j].RegisteredAt) })
	return s
}

func newToken() string {
	var buf [16]byte
	if _, err := rand.Read(buf[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(buf[:])
}
