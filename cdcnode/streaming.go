package cdcnode

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/cdcnode/spool"
	"github.com/pgcaravan/pgcaravan/cdcnode/stream"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// streamLoop receives into the spool, reconnecting after errors; while the
// spool's disk is full it stops receiving (WAL then accumulates on the
// source) and tries again until space returns.
func (n *Node) streamLoop(ctx context.Context) error {
	backoff := n.cfg.MinBackoff
	for {
		turn(&n.ops.streamTurn)
		err := n.streamOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrSpoolLost) {
			return err
		}
		wait := backoff
		var full *spool.DiskFullError
		if errors.As(err, &full) || errors.Is(err, spool.ErrDiskFull) {
			if !n.diskFull.Swap(true) {
				n.ops.diskFullPauses.Add(1)
				n.log.Error("spool disk is full: receiving stopped; WAL accumulates on the source until space returns", "dir", n.cfg.Dir, "error", err)
			}
			wait = n.cfg.DiskFullRetry
		} else {
			n.ops.reconnects[peerSource].Add(1)
			n.log.Warn("stream interrupted, reconnecting", "error", err, "backoff", backoff)
			backoff = min(backoff*2, n.cfg.MaxBackoff)
		}
		n.lastErr.Store(err.Error())
		turn(&n.ops.streamTurn)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// streamOnce cuts the spool back to its last whole durable transaction and
// streams from there.
func (n *Node) streamOnce(ctx context.Context) error {
	w, err := n.waitState(ctx, func(w *pb.WatchPhaseResponse) bool { return w != nil })
	if err != nil {
		return err
	}
	if n.spool.Durable() == 0 {
		// A spool that ever held a record never becomes empty (the last
		// segment is always kept), so an empty one is new, or lost.
		if err := n.checkSpoolNotLost(ctx, w); err != nil {
			return err
		}
	}
	start, err := n.recoverSpool(ctx)
	if err != nil {
		return err
	}
	if start == 0 {
		start, _ = pglogrepl.ParseLSN(w.GetStartLsn())
	}
	if uint64(start) > n.pos.Flushed.Load() {
		n.pos.Flushed.Store(uint64(start))
	}
	conn, err := n.src.ReplicationConn(ctx, "pgcaravan-cdcnode")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	defer n.ops.source.Store(false)
	cfg := stream.Config{Slot: w.GetSlotName(), Publications: w.GetPublications(), StatusInterval: n.cfg.StatusInterval,
		SyncInterval: n.cfg.SyncInterval, OnRelation: n.saveRelation,
		// Asked before every standby status, once per StatusInterval
		// while the receive loop turns: the loop's heartbeat, and proof
		// that the slot is streaming to us.
		WantReply: func() bool {
			turn(&n.ops.streamTurn)
			n.ops.source.Store(true)
			return n.endpos.Load() != 0 && !n.reached.Load()
		}}
	n.log.Info("streaming", "slot", cfg.Slot, "from", start)
	return stream.Run(ctx, conn, &appendTracker{n: n, last: n.spool.Durable()}, start, cfg, &n.pos)
}

// checkSpoolNotLost refuses an empty spool when the slot has confirmed a
// flush past both the slot's start and what the target's origin has
// applied: the changes in between were only in a spool that is gone (a
// lost --dir or volume), and the slot will never send them again.
func (n *Node) checkSpoolNotLost(ctx context.Context, w *pb.WatchPhaseResponse) error {
	src, err := n.src.Connect(ctx, "pgcaravan-cdcnode")
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	var confirmed *string
	err = src.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, w.GetSlotName()).Scan(&confirmed)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && confirmed == nil) {
		return nil // no slot: streaming will say so
	}
	if err != nil {
		return fmt.Errorf("source %s: read slot %s: %w", n.src, w.GetSlotName(), err)
	}
	dst, err := n.dst.Connect(ctx, "pgcaravan-cdcnode")
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	var applied *string
	err = dst.QueryRow(ctx, `SELECT remote_lsn::text FROM pg_replication_origin_status s
		JOIN pg_replication_origin o ON o.roident = s.local_id WHERE o.roname = $1`, w.GetOriginName()).Scan(&applied)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("target %s: read replication origin %s: %w", n.dst, w.GetOriginName(), err)
	}
	have, _ := pglogrepl.ParseLSN(w.GetStartLsn())
	if applied != nil {
		if a, err := pglogrepl.ParseLSN(*applied); err == nil && a > have {
			have = a
		}
	}
	c, err := pglogrepl.ParseLSN(*confirmed)
	if err != nil || c <= have {
		return nil
	}
	n.log.Error("the spool is empty but the source confirmed changes past what the target has: they are lost",
		"dir", n.cfg.Dir, "slot", w.GetSlotName(), "confirmed_flush_lsn", c, "target_has", have)
	return fmt.Errorf("%w: the spool in %s is empty, but slot %s has confirmed changes up to %s and the target has them only up to %s; "+
		"the changes in between were in a spool that is gone and the slot cannot send them again: restore the cdcnode's --dir, "+
		"or start the migration over (pgcaravan cleanup, then a new clone into an empty target)",
		ErrSpoolLost, n.cfg.Dir, w.GetSlotName(), c, have)
}

// appendTracker keeps the spool's LSNs rising and clears the disk-full
// state once appending works again.
//
// The source does not send LSNs in order: a change carries its own WAL
// position and a commit the end of its record, so the first change of a
// transaction that began before the previous one committed comes with a
// lower LSN than that commit. The spool needs rising LSNs (and Truncate and
// Remove need distinct ones at transaction ends), so a record that would go
// back is spooled at one past the previous record. Spool LSNs are only an
// order: positions reported to the source come from commit messages.
type appendTracker struct {
	n    *Node
	last uint64
}

func (a *appendTracker) Append(lsn uint64, p []byte) error {
	lsn = max(lsn, a.last+1)
	if err := a.n.spool.Append(lsn, p); err != nil {
		return err
	}
	a.last = lsn
	if a.n.diskFull.Load() {
		a.n.diskFull.Store(false)
		a.n.lastErr.Store("")
		a.n.log.Info("spool disk has space again: receiving")
	}
	return nil
}
func (a *appendTracker) Sync() error              { return a.n.spool.Sync() }
func (a *appendTracker) Remove(upTo uint64) error { return a.n.spool.Remove(upTo) }

// recoverSpool finds the last whole transaction in the spool, drops
// anything after it, and returns that transaction's end LSN (0 for a spool
// without one). Within a process the durable spool ends with a commit (the
// stream syncs only there); after a crash it may not: records written
// before the kill are in the page cache and Open keeps them, so the tail
// can be part of a transaction. Then the spool is read through to find
// the last commit.
func (n *Node) recoverSpool(ctx context.Context) (pglogrepl.LSN, error) {
	last := n.spool.Durable()
	if last == 0 {
		return 0, nil
	}
	commitLSN, end, err := n.lastCommit(ctx, last)
	if err != nil {
		return 0, err
	}
	if commitLSN != last {
		n.log.Info("spool ends inside a transaction: cutting it off", "last_record", pglogrepl.LSN(last), "last_commit", pglogrepl.LSN(commitLSN))
	}
	if err := n.spool.Truncate(commitLSN); err != nil {
		return 0, fmt.Errorf("spool: truncate after %s: %w", pglogrepl.LSN(commitLSN), err)
	}
	return end, nil
}

// lastCommit returns the spool LSN and the transaction end LSN of the last
// commit record at or before last (both 0 if there is none): the record at
// last itself when it is a commit, or else the last one a scan of the
// whole spool finds.
func (n *Node) lastCommit(ctx context.Context, last uint64) (uint64, pglogrepl.LSN, error) {
	scan := func(from uint64) (uint64, pglogrepl.LSN, error) {
		r, err := n.spool.Reader(from)
		if err != nil {
			return 0, 0, fmt.Errorf("spool: %w", err)
		}
		defer r.Close()
		// A done context makes Next return what is durable, then stop.
		done, cancel := context.WithCancel(ctx)
		cancel()
		var at uint64
		var end pglogrepl.LSN
		for {
			rec, err := r.Next(done)
			if err != nil {
				if ctx.Err() != nil {
					return 0, 0, ctx.Err()
				}
				if errors.Is(err, context.Canceled) {
					return at, end, nil
				}
				return 0, 0, fmt.Errorf("spool: read back after a restart: %w", err)
			}
			if rec.LSN > last {
				return at, end, nil
			}
			if len(rec.Payload) > 0 && rec.Payload[0] == 'C' {
				var c pglogrepl.CommitMessage
				if err := c.Decode(rec.Payload[1:]); err != nil {
					return 0, 0, fmt.Errorf("spool: commit record at %s: %w", pglogrepl.LSN(rec.LSN), err)
				}
				at, end = rec.LSN, c.TransactionEndLSN
			}
		}
	}
	at, end, err := scan(last)
	if err != nil || at == last {
		return at, end, err
	}
	return scan(0)
}
