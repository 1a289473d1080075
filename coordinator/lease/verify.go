package lease

// What the broker does for AdminService/Verify: verify units are added to
// a running migration and removed after the call, and a --follow
// migration holds its idle workers so there is someone to lease them to.

import (
	"fmt"
	"time"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
)

// notePollLocked records when workerID last asked for each of kinds ("" for
// any), which Takers reads.
func (b *Broker) notePollLocked(workerID string, kinds []plan.Kind) {
	m := b.polled[workerID]
	if m == nil {
		m = map[plan.Kind]time.Time{}
		b.polled[workerID] = m
	}
	now := b.now()
	if len(kinds) == 0 {
		m[""] = now
	}
	for _, k := range kinds {
		m[k] = now
	}
}

func (b *Broker) anyFailedLocked() bool {
	for _, u := range b.units {
		if u.State == store.StateFailed {
			return true
		}
	}
	return false
}

// HoldWorkers keeps idle workers waiting for units (true) instead of
// telling them the migration finished once no unit is ready or running,
// unless a unit failed. A --follow migration holds its workers until it is
// cleaned up, so AdminService/Verify can spread its ranges over them.
func (b *Broker) HoldWorkers(hold bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = hold
	b.broadcastLocked()
}

// Takers counts the workers that asked for units of kind (or of any kind)
// within the last within, or hold a lease of a loop that did.
func (b *Broker) Takers(kind plan.Kind, within time.Duration) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	busy := map[string]bool{}
	for _, u := range b.units {
		if u.State == store.StateRunning {
			busy[u.WorkerID] = true
		}
	}
	now := b.now()
	n := 0
	for id, m := range b.polled {
		if _, ok := b.workers[id]; !ok {
			continue
		}
		for _, k := range []plan.Kind{kind, ""} {
			if at, ok := m[k]; ok && (now.Sub(at) <= within || busy[id]) {
				n++
				break
			}
		}
	}
	return n
}

// AddUnits adds ready units that are not part of the plan (verify units),
// with new IDs, and returns those IDs in order.
func (b *Broker) AddUnits(units []store.Unit) ([]uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var next uint64
	for _, id := range b.ids {
		next = max(next, id)
	}
	ids := make([]uint64, len(units))
	for i := range units {
		next++
		units[i].ID, units[i].State, units[i].DependsOn = next, store.StateReady, nil
		ids[i] = next
	}
	if err := b.st.PutUnits(units...); err != nil {
		return nil, fmt.Errorf("add %d units: %w", len(units), err)
	}
	for i := range units {
		u := units[i]
		b.units[u.ID] = &u
		b.ids = append(b.ids, u.ID)
	}
	b.broadcastLocked()
	return ids, nil
}

// RemoveUnits forgets units added with AddUnits. A worker still running
// one loses its lease: its heartbeat and completion are refused.
func (b *Broker) RemoveUnits(ids []uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	gone := map[uint64]bool{}
	for _, id := range ids {
		if _, ok := b.units[id]; ok {
			gone[id] = true
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := b.st.DeleteUnits(ids...); err != nil {
		return fmt.Errorf("remove %d units: %w", len(ids), err)
	}
	for id := range gone {
		delete(b.units, id)
	}
	kept := b.ids[:0]
	for _, id := range b.ids {
		if !gone[id] {
			kept = append(kept, id)
		}
	}
	b.ids = kept
	b.broadcastLocked()
	return nil
}

// Units copies the units with the given IDs that still exist.
func (b *Broker) Units(ids []uint64) []store.Unit {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]store.Unit, 0, len(ids))
	for _, id := range ids {
		if u, ok := b.units[id]; ok {
			out = append(out, *u)
		}
	}
	return out
}

// CompleteVerify marks a verify unit done with the count and checksum it
// found on each side.
func (b *Broker) CompleteVerify(workerID string, unitID uint64, token string, source, target store.RangeSum) error {
	return b.complete(workerID, unitID, token, source.Rows, 0, func(u *store.Unit) error {
		if u.Kind != store.KindVerify || u.Verify == nil {
			return fmt.Errorf("unit %d is a %s unit, not a verify unit: %w", u.ID, u.Kind, ErrNotVerify)
		}
		v := *u.Verify
		v.Source, v.Target = &source, &target
		u.Verify = &v
		return nil
	})
}
