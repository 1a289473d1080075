package cdcnode

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgcaravan/pgcaravan/cdcnode/apply"
	"github.com/pgcaravan/pgcaravan/cdcnode/spool"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// applyLoop starts applying once the backfill is complete, and reconnects
// to the target after errors (a restarted target, a lost connection): the
// origin says where to resume.
func (n *Node) applyLoop(ctx context.Context) error {
	if _, err := n.waitState(ctx, func(w *pb.WatchPhaseResponse) bool { return w.GetBackfillComplete() }); err != nil {
		return err
	}
	n.log.Info("backfill complete: applying changes")
	backoff := n.cfg.MinBackoff
	for {
		err := n.applyOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.ops.reconnects[peerTarget].Add(1)
		n.log.Warn("apply interrupted, resuming from the origin", "error", err, "backoff", backoff)
		n.lastErr.Store(err.Error())
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, n.cfg.MaxBackoff)
	}
}

func (n *Node) applyOnce(ctx context.Context) error {
	w, err := n.waitState(ctx, func(w *pb.WatchPhaseResponse) bool { return w != nil })
	if err != nil {
		return err
	}
	conn, err := n.dst.Connect(ctx, "pgcaravan-cdcnode")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	defer n.ops.target.Store(false)
	r, err := n.spool.Reader(0)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer r.Close()
	cfg := n.cfg.Apply
	cfg.Origin = w.GetOriginName()
	hooks := apply.Hooks{
		EpochLSN: n.epochLSN,
		Endpos:   func() pglogrepl.LSN { return pglogrepl.LSN(n.endpos.Load()) },
		Received: func() pglogrepl.LSN { return pglogrepl.LSN(n.pos.Received.Load()) },
		Settled:  func() bool { return n.pos.LastCommit.Load() <= n.pos.Flushed.Load() },
		Resumed: func(origin pglogrepl.LSN) {
			n.ops.target.Store(true)
			if origin != 0 && n.pos.Applied.Load() == 0 {
				n.pos.Applied.Store(uint64(origin))
			}
			n.log.Info("applying after the replication origin", "origin", w.GetOriginName(), "lsn", origin)
		},
		Applied: func(p apply.Progress) {
			n.pos.Applied.Store(uint64(p.End))
			n.pos.AppliedRecord.Store(p.RecordLSN)
			n.changes.Add(p.Changes)
			n.txns.Add(p.Txns)
			n.commitTime.Store(p.CommitTime.UnixNano())
		},
		Reached: func() {
			n.reached.Store(true)
			n.log.Info("every change up to the endpos is applied", "endpos", pglogrepl.LSN(n.endpos.Load()))
		},
		Relation: n.relation,
	}
	return apply.Run(ctx, conn, spoolSource{r}, cfg, hooks)
}

type spoolSource struct{ r *spool.Reader }

func (s spoolSource) Next(ctx context.Context) (apply.Record, error) {
	rec, err := s.r.Next(ctx)
	return apply.Record{LSN: rec.LSN, Payload: rec.Payload}, err
}

// reportLoop tells the coordinator how far the node has got.
func (n *Node) reportLoop(ctx context.Context) error {
	t := time.NewTicker(n.cfg.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		turn(&n.ops.reportTurn)
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := n.client.ReportProgress(rctx, n.progress()); err != nil && ctx.Err() == nil {
			n.log.Debug("progress report failed", "error", err)
		}
		cancel()
	}
}

// progress is the node's state as the coordinator gets it; /metrics
// exports the same values. The spool must be open.
func (n *Node) progress() *pb.ReportProgressRequest {
	req := &pb.ReportProgressRequest{Name: n.cfg.Name,
		ReceivedLsn: pglogrepl.LSN(n.pos.Received.Load()).String(), FlushedLsn: pglogrepl.LSN(n.pos.Flushed.Load()).String(),
		AppliedLsn: pglogrepl.LSN(n.pos.Applied.Load()).String(), SpoolBytes: n.spool.Bytes(),
		ChangesApplied: n.changes.Load(), TransactionsApplied: n.txns.Load(),
		ReachedEndpos: n.reached.Load() && n.endpos.Load() != 0, DiskFull: n.diskFull.Load(), Error: n.lastErr.Load().(string)}
	if ts := n.commitTime.Load(); ts != 0 {
		req.AppliedCommitTime = timestamppb.New(time.Unix(0, ts))
	}
	return req
}
