package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgcaravan/pgcaravan/coordinator/lease"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	"github.com/pgcaravan/pgcaravan/shared/checksum"
)

// Verify implements rpcserver.Controller: verify against this
// coordinator's own source and target, with its filter, keeping each
// range's result in its --dir (verify.db, next to the store) so a call
// after an interrupted one resumes. verify's own lock on that file lets one
// call run at a time. When workers that take verify units are connected,
// the ranges are counted and checksummed by them, as verify units leased
// like any other; without, by o.Jobs sessions per side inside the
// coordinator. Planning the ranges and searching a differing one for its
// keys happen here either way.
func (c *Coordinator) Verify(ctx context.Context, o verify.Options) (*verify.Report, error) {
	o.Filter = c.cfg.Filter
	o.Dir = c.cfg.Dir
	o.Logger = c.log.Named("verify")
	if b := c.verifyBroker(); b != nil {
		if n := b.Takers(store.KindVerify, c.verifyWithin()); n > 0 {
			o.Logger.Info("verify ranges are spread over the workers", "workers", n)
			o.Spread = func(ctx context.Context, ranges []verify.Range, snaps verify.Snapshots, done func([]verify.RangeDone) error) error {
				return c.spreadVerify(ctx, b, o.Logger, ranges, snaps, done)
			}
		} else {
			o.Logger.Info("no worker takes verify units: the coordinator compares the ranges itself", "jobs", o.Jobs)
		}
	}
	return verify.Compare(ctx, c.cfg.SourceURI, c.cfg.TargetURI, o)
}

func (c *Coordinator) verifyBroker() *lease.Broker {
	if c.rpc == nil {
		return nil
	}
	return c.rpc.Broker()
}

// verifyWithin is how recently a worker must have asked for units to count
// as one that will take verify units: an idle worker asks at least once
// per long-poll.
func (c *Coordinator) verifyWithin() time.Duration { return c.cfg.MaxWait + c.cfg.HeartbeatInterval }

// spreadVerify is verify.Spread over the broker:
//  1. forget the verify units of an earlier Verify call;
//  2. add one ready verify unit per range, carrying the call's snapshots;
//  3. hand each done unit's counts and checksums to done as they come,
//     until every range is in; a unit failed past its delivery limit, or no
//     worker left to take the rest, ends the call with an error.
//
// Units not done when it returns are removed; done ones stay (ListUnits
// shows which worker ran them) until the next call or coordinator.
func (c *Coordinator) spreadVerify(ctx context.Context, b *lease.Broker, log hclog.Logger,
	ranges []verify.Range, snaps verify.Snapshots, done func([]verify.RangeDone) error) error {
	// 1. Earlier calls' units.
	var old []uint64
	for _, u := range b.Snapshot().Units {
		if u.Kind == store.KindVerify {
			old = append(old, u.ID)
		}
	}
	if err := b.RemoveUnits(old); err != nil {
		return fmt.Errorf("verify: remove the verify units of an earlier call: %w", err)
	}
	if len(ranges) == 0 {
		return nil
	}

	// 2. One unit per range.
	units := make([]store.Unit, len(ranges))
	for i, r := range ranges {
		u := store.Unit{Verify: &store.VerifyRange{Schema: r.Schema, Table: r.Name, Key: r.Key,
			Lower: r.KeyRange.From, Upper: r.KeyRange.To,
			SourceSnapshot: snaps.Source, TargetSnapshot: snaps.Target}}
		u.Kind, u.Table, u.Size = store.KindVerify, r.Table, r.Size
		u.Description = "verify " + r.Table
		if r.Key != "" {
			u.Description += " " + r.Key + " " + r.KeyRange.String()
		}
		units[i] = u
	}
	ids, err := b.AddUnits(units)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	index := make(map[uint64]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	defer func() {
		var left []uint64
		for _, u := range b.Units(ids) {
			if u.State != store.StateDone {
				left = append(left, u.ID)
			}
		}
		if err := b.RemoveUnits(left); err != nil {
			log.Warn("could not remove unfinished verify units; a coordinator restart removes them", "units", len(left), "error", err)
		}
	}()
	log.Info("verify units added", "units", len(ids))

	// 3. Collect.
	reported := make(map[uint64]bool, len(ids))
	within := c.verifyWithin()
	lastTaker := time.Now()
	for len(reported) < len(ids) {
		changed := b.Changed()
		var batch []verify.RangeDone
		running := false
		for _, u := range b.Units(ids) {
			switch {
			case reported[u.ID]:
			case u.State == store.StateDone && u.Verify != nil && u.Verify.Source != nil && u.Verify.Target != nil:
				reported[u.ID] = true
				batch = append(batch, verify.RangeDone{Index: index[u.ID],
					Source: checksum.Sum(*u.Verify.Source), Target: checksum.Sum(*u.Verify.Target)})
			case u.State == store.StateFailed:
				return fmt.Errorf("verify: unit %d (%s) failed %d times: %s", u.ID, u.Description, u.Attempts, u.LastError)
			case u.State == store.StateRunning:
				running = true
			}
		}
		if len(b.Units(ids)) != len(ids) {
			return fmt.Errorf("verify: verify units were removed while this call waited for them (another Verify call?)")
		}
		if len(batch) > 0 {
			if err := done(batch); err != nil {
				return err
			}
			log.Debug("verify units done", "done", len(reported), "units", len(ids))
		}
		if running || b.Takers(store.KindVerify, within) > 0 {
			lastTaker = time.Now()
		} else if time.Since(lastTaker) > within {
			return fmt.Errorf("verify: %d of %d ranges are left and no worker takes verify units any more; call Verify again (it resumes) once workers are back, or with none connected to compare in the coordinator",
				len(ids)-len(reported), len(ids))
		}
		t := time.NewTimer(within / 4)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}
