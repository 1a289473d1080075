// Package stream receives a logical replication slot's pgoutput messages
// and appends them to the spool. It reports to the source, as flushed, only
// the end of the last transaction the spool has made durable, so the source
// frees WAL exactly as fast as the spool holds it, and answers keepalives
// that ask for a reply. It does not decode changes and does not apply them.
// Model: pglogrepl's example/pglogrepl_demo.
package stream

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Spool is where messages go (cdcnode/spool.Spool).
type Spool interface {
	Append(lsn uint64, payload []byte) error
	Sync() error
	Remove(upTo uint64) error
}

// Positions are shared with the applier and the progress reports.
type Positions struct {
	// Received is the highest WAL position the source has sent.
	Received atomic.Uint64
	// Flushed is the end LSN of the last transaction durable in the spool.
	Flushed atomic.Uint64
	// Applied is the end LSN of the last transaction applied on the target.
	Applied atomic.Uint64
	// AppliedRecord is the spool LSN of that transaction's commit record:
	// segments wholly before it can go.
	AppliedRecord atomic.Uint64
	// LastCommit is the end LSN of the last transaction appended (durable
	// or not): when it equals Flushed, nothing waits for an fsync.
	LastCommit atomic.Uint64
}

// Config tunes the receive loop.
type Config struct {
	Slot         string
	Publications []string
	// StatusInterval is how often the standby status goes to the source.
	StatusInterval time.Duration
	// SyncInterval groups fsyncs: a commit waits at most this long to be
	// durable (and reported as flushed).
	SyncInterval time.Duration
	// OnRelation is told every Relation message (the node keeps them for
	// restarts after the spool dropped older segments).
	OnRelation func(payload []byte)
	// WantReply, when it returns true, makes every status update ask the
	// source for a keepalive, which carries how far it has sent: a cutover
	// then learns quickly that nothing more is coming.
	WantReply func() bool
}

// Run streams from start until ctx ends or an error (a lost connection, a
// full spool disk): the caller reconnects from Flushed.
func Run(ctx context.Context, conn *pgconn.PgConn, sp Spool, start pglogrepl.LSN, cfg Config, pos *Positions) error {
	pubs := make([]string, len(cfg.Publications))
	for i, p := range cfg.Publications {
		pubs[i] = strings.ReplaceAll(p, "'", "''")
	}
	err := pglogrepl.StartReplication(ctx, conn, cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.Join(pubs, ",") + "'"}})
	if err != nil {
		return fmt.Errorf("source: start replication from slot %s at %s: %w", cfg.Slot, start, err)
	}
	var (
		lastCommitEnd pglogrepl.LSN // appended, maybe not yet durable
		pendingCommit bool          // a commit appended since the last sync
		atCommit      bool          // the last appended record is a commit
		lastSync      = time.Now()
		nextStatus    = time.Now()
		removed       uint64
	)
	sync := func() error {
		if err := sp.Sync(); err != nil {
			return err
		}
		pos.Flushed.Store(uint64(lastCommitEnd))
		pendingCommit, lastSync = false, time.Now()
		return nil
	}
	for {
		now := time.Now()
		// Sync only at a transaction boundary, so the durable spool always
		// ends with a whole transaction.
		if pendingCommit && atCommit && now.Sub(lastSync) >= cfg.SyncInterval {
			if err := sync(); err != nil {
				return err
			}
		}
		if !now.Before(nextStatus) {
			if err := sendStatus(ctx, conn, pos, cfg.WantReply != nil && cfg.WantReply()); err != nil {
				return err
			}
			nextStatus = now.Add(cfg.StatusInterval)
			if applied := pos.AppliedRecord.Load(); applied > removed {
				if err := sp.Remove(applied); err != nil {
					return fmt.Errorf("spool: remove applied segments: %w", err)
				}
				removed = applied
			}
		}
		deadline := nextStatus
		if pendingCommit && atCommit && lastSync.Add(cfg.SyncInterval).Before(deadline) {
			deadline = lastSync.Add(cfg.SyncInterval)
		}
		// A read deadline on the socket rather than a context with one:
		// pgconn watches a cancellable context with a goroutine per call,
		// which at one call per message was most of the node's CPU. ctx is
		// checked at least once per deadline instead.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := conn.Conn().SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("source: set read deadline: %w", err)
		}
		raw, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("source: receive: %w", err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("source: replication: %s", msg.Message)
		case *pgproto3.CopyData:
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("source: keepalive: %w", err)
				}
				// Everything up to the sender's position has been sent.
				storeMax(&pos.Received, uint64(ka.ServerWALEnd))
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				x, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("source: xlog data: %w", err)
				}
				if len(x.WALData) == 0 {
					return fmt.Errorf("source: empty xlog data at %s", x.WALStart)
				}
				if err := sp.Append(uint64(x.WALStart), x.WALData); err != nil {
					return err
				}
				atCommit = false
				switch x.WALData[0] {
				case 'C':
					var c pglogrepl.CommitMessage
					if err := c.Decode(x.WALData[1:]); err != nil {
						return fmt.Errorf("source: commit message at %s: %w", x.WALStart, err)
					}
					lastCommitEnd, pendingCommit, atCommit = c.TransactionEndLSN, true, true
					// LastCommit before Received: the applier reads them in
					// the other order to decide that every transaction up to
					// the endpos is durable.
					pos.LastCommit.Store(uint64(c.TransactionEndLSN))
					storeMax(&pos.Received, uint64(c.TransactionEndLSN))
				case 'R':
					if cfg.OnRelation != nil {
						cfg.OnRelation(append([]byte(nil), x.WALData...))
					}
				}
				storeMax(&pos.Received, uint64(x.WALStart))
			}
		}
	}
}

// sendStatus reports received (write), durable (flush) and applied (apply)
// positions, so pg_stat_replication's lags mean what operators expect.
func sendStatus(ctx context.Context, conn *pgconn.PgConn, pos *Positions, reply bool) error {
	// pglogrepl reads a zero flush or apply position as "same as write":
	// never send zero, or undurable data would be confirmed.
	flushed := max(pglogrepl.LSN(pos.Flushed.Load()), 1)
	applied := min(max(pglogrepl.LSN(pos.Applied.Load()), 1), flushed)
	err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: max(pglogrepl.LSN(pos.Received.Load()), flushed), WALFlushPosition: flushed,
		WALApplyPosition: applied, ReplyRequested: reply})
	if err != nil {
		return fmt.Errorf("source: standby status: %w", err)
	}
	return nil
}

func storeMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
