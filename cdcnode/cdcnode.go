package cdcnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pgcaravan/pgcaravan/cdcnode/apply"
	"github.com/pgcaravan/pgcaravan/cdcnode/spool"
	"github.com/pgcaravan/pgcaravan/cdcnode/stream"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
)

// Config is one cdcnode's configuration.
type Config struct {
	Coordinator string
	SourceURI   string
	TargetURI   string
	// Dir holds the spool and what a restart needs.
	Dir      string
	Name     string
	Security rpcsec.Config
	// StatusInterval is how often the source gets the standby status.
	StatusInterval time.Duration
	// SyncInterval bounds how long a received commit waits to be durable.
	SyncInterval time.Duration
	// ReportInterval is how often the coordinator gets progress.
	ReportInterval time.Duration
	// MinBackoff and MaxBackoff bound retries of lost connections.
	MinBackoff, MaxBackoff time.Duration
	// DiskFullRetry is how often receiving is retried while the spool's
	// disk is full.
	DiskFullRetry time.Duration
	// StartupRetry is how long a source or target that cannot be reached
	// at the start is retried before Run gives up.
	StartupRetry time.Duration
	SegmentSize  int64
	Apply        apply.Config
	// MetricsListen serves Prometheus /metrics, and the /healthz and
	// /readyz probes, on one HTTP address; empty disables them.
	MetricsListen string
	// WedgedAfter is how long the stream or report loop may go without a
	// turn before /healthz says the node is wedged. Both turn at least
	// every StatusInterval, ReportInterval, MaxBackoff or DiskFullRetry.
	WedgedAfter time.Duration
	// DialOptions add to the gRPC dial options (tests).
	DialOptions []grpc.DialOption
}

// DefaultConfig is the configuration the CLI starts from.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{Name: fmt.Sprintf("%s/%d", host, os.Getpid()), StatusInterval: time.Second,
		SyncInterval: 10 * time.Millisecond, ReportInterval: 500 * time.Millisecond,
		MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second, DiskFullRetry: 5 * time.Second, StartupRetry: time.Minute,
		SegmentSize: 64 << 20, Apply: apply.DefaultConfig(), WedgedAfter: 5 * time.Minute}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var problems []string
	if c.Coordinator == "" {
		problems = append(problems, "--coordinator is required")
	}
	if c.Dir == "" {
		problems = append(problems, "--dir is required: the spool lives there")
	}
	if c.StatusInterval <= 0 || c.SyncInterval <= 0 || c.ReportInterval <= 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		problems = append(problems, "intervals and backoffs must be positive")
	}
	if longest := max(c.StatusInterval, c.ReportInterval, c.MaxBackoff, c.DiskFullRetry); c.MetricsListen != "" && c.WedgedAfter <= longest {
		problems = append(problems, fmt.Sprintf("--wedged-after (%s) must be longer than every interval and backoff (the longest is %s), or /healthz fails a node that is only waiting", c.WedgedAfter, longest))
	}
	if len(problems) > 0 {
		return errors.New("cdcnode: " + strings.Join(problems, "; "))
	}
	return nil
}

// Node is one cdcnode.
type Node struct {
	cfg      Config
	log      hclog.Logger
	src, dst pguri.URI
	client   pb.CDCServiceClient
	spool    *spool.Spool

	mu      sync.Mutex
	watch   *pb.WatchPhaseResponse
	epochs  map[string]pglogrepl.LSN
	changed chan struct{}

	pos           stream.Positions
	endpos        atomic.Uint64
	reached       atomic.Bool
	changes, txns atomic.Int64
	commitTime    atomic.Int64 // unix nanoseconds of the last applied commit
	diskFull      atomic.Bool
	lastErr       atomic.Value // string
	relations     map[uint32][]byte
	relationsMu   sync.Mutex
	ops           ops
}

// New checks the configuration; nothing is opened until Run.
func New(cfg Config, logger hclog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src, dst, err := pguri.ParsePair(cfg.SourceURI, cfg.TargetURI)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: logger.Named("cdcnode"), src: src, dst: dst, changed: make(chan struct{}),
		epochs: map[string]pglogrepl.LSN{}, relations: map[uint32][]byte{}}
	n.lastErr.Store("")
	return n, nil
}

// ErrSpoolLost means the spool is empty although the source has been told
// that changes were made durable in it: they are gone, and the slot cannot
// send them again.
var ErrSpoolLost = errors.New("cdcnode: the spool's changes are lost")

// errStop ends Run when the coordinator asks the node to stop.
var errStop = errors.New("cdcnode: stop requested")

// Run follows the migration until the coordinator says stop (nil), ctx
// ends (nil), or the node cannot work (an error). Lost connections to the
// source, target or coordinator are retried.
func (n *Node) Run(ctx context.Context) error {
	opts, err := rpcsec.DialOptions(n.cfg.Security)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(n.cfg.Coordinator, append(opts, n.cfg.DialOptions...)...)
	if err != nil {
		return fmt.Errorf("cdcnode: coordinator address %q: %w", n.cfg.Coordinator, err)
	}
	defer conn.Close()
	n.client = pb.NewCDCServiceClient(conn)

	g, gctx := errgroup.WithContext(ctx)
	if n.cfg.MetricsListen != "" {
		ms, err := n.listenOps()
		if err != nil {
			return err
		}
		g.Go(func() error { return ms.Serve(gctx) })
		n.log.Info("metrics listening", "addr", ms.Addr())
	}
	g.Go(func() error { return n.watchLoop(gctx) })
	first, err := n.waitState(gctx, func(w *pb.WatchPhaseResponse) bool { return w != nil })
	if err == nil {
		err = n.start(gctx, g, first)
	}
	if err != nil {
		// Stop the watch loop too.
		g.Go(func() error { return err })
	}
	werr := g.Wait()
	if n.spool != nil {
		n.spool.Close()
	}
	if errors.Is(werr, errStop) || ctx.Err() != nil {
		return nil
	}
	return werr
}

// start checks the databases, opens the spool and starts the stream,
// apply and report loops.
func (n *Node) start(ctx context.Context, g *errgroup.Group, w *pb.WatchPhaseResponse) error {
	if err := n.checkIdentities(ctx, w); err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(n.cfg.Dir, "spool"), spool.Options{SegmentSize: n.cfg.SegmentSize})
	if err != nil {
		return fmt.Errorf("cdcnode: open spool in %s: %w", n.cfg.Dir, err)
	}
	n.spool = sp
	// After n.spool is set: scrapes read the spool once this is true.
	n.ops.started.Store(true)
	if err := n.loadRelations(); err != nil {
		return err
	}
	// Before the applier reads it: a crash may have left part of a
	// transaction at the spool's tail.
	if _, err := n.recoverSpool(ctx); err != nil {
		return err
	}
	n.log.Info("following", "slot", w.GetSlotName(), "publications", strings.Join(w.GetPublications(), ","), "dir", n.cfg.Dir)
	g.Go(func() error { return n.streamLoop(ctx) })
	g.Go(func() error { return n.applyLoop(ctx) })
	g.Go(func() error { return n.reportLoop(ctx) })
	return nil
}

// checkIdentities makes sure --source and --target are the migration's
// databases. A server that cannot be reached (a restart) is retried for up
// to StartupRetry; wrong databases are an error at once.
func (n *Node) checkIdentities(ctx context.Context, w *pb.WatchPhaseResponse) error {
	backoff := n.cfg.MinBackoff
	deadline := time.Now().Add(n.cfg.StartupRetry)
	for {
		err := n.src.CheckIdentity(ctx, "pgcaravan-cdcnode", w.GetMigrationId(), w.GetSource().GetSystemIdentifier(), w.GetSource().GetDatabase())
		if err == nil {
			err = n.dst.CheckIdentity(ctx, "pgcaravan-cdcnode", w.GetMigrationId(), w.GetTarget().GetSystemIdentifier(), w.GetTarget().GetDatabase())
		}
		if err == nil || ctx.Err() != nil || errors.Is(err, pguri.ErrWrongDatabase) || time.Now().After(deadline) {
			return err
		}
		n.log.Warn("cannot reach the databases to check them, retrying", "error", err, "backoff", backoff)
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, n.cfg.MaxBackoff)
	}
}

// watchLoop keeps the coordinator's state current, reconnecting with backoff.
func (n *Node) watchLoop(ctx context.Context) error {
	backoff := n.cfg.MinBackoff
	for {
		stream, err := n.client.WatchPhase(ctx, &pb.WatchPhaseRequest{Name: n.cfg.Name})
		for err == nil {
			var w *pb.WatchPhaseResponse
			if w, err = stream.Recv(); err != nil {
				break
			}
			backoff = n.cfg.MinBackoff
			n.ops.coordinator.Store(true)
			n.setState(w)
			if w.GetStop() {
				n.log.Info("the coordinator asked the node to stop")
				return errStop
			}
		}
		n.ops.coordinator.Store(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.ops.reconnects[peerCoordinator].Add(1)
		n.log.Warn("coordinator stream lost, reconnecting", "error", err, "backoff", backoff)
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, n.cfg.MaxBackoff)
	}
}

func (n *Node) setState(w *pb.WatchPhaseResponse) {
	epochs := map[string]pglogrepl.LSN{}
	for _, e := range w.GetEpochs() {
		lsn, _ := pglogrepl.ParseLSN(e.GetLsn())
		epochs[e.GetSchema()+"\x00"+e.GetName()] = lsn
	}
	end, _ := pglogrepl.ParseLSN(w.GetEndpos())
	if uint64(end) != n.endpos.Load() {
		n.reached.Store(false)
		n.endpos.Store(uint64(end))
	}
	n.mu.Lock()
	n.watch, n.epochs = w, epochs
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
}

// waitState waits until cond holds for the coordinator's state.
func (n *Node) waitState(ctx context.Context, cond func(*pb.WatchPhaseResponse) bool) (*pb.WatchPhaseResponse, error) {
	for {
		n.mu.Lock()
		w, ch := n.watch, n.changed
		n.mu.Unlock()
		if cond(w) {
			return w, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

func (n *Node) epochLSN(schema, name string) pglogrepl.LSN {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epochs[schema+"\x00"+name]
}

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

// Relation messages are kept in DIR/relations.json: the spool drops
// applied segments, and pgoutput sends a relation's description only once
// per session.
func (n *Node) relationsFile() string { return filepath.Join(n.cfg.Dir, "relations.json") }

func (n *Node) loadRelations() error {
	data, err := os.ReadFile(n.relationsFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cdcnode: %w", err)
	}
	n.relationsMu.Lock()
	defer n.relationsMu.Unlock()
	if err := json.Unmarshal(data, &n.relations); err != nil {
		return fmt.Errorf("cdcnode: %s: %w", n.relationsFile(), err)
	}
	return nil
}

func (n *Node) saveRelation(payload []byte) {
	var m pglogrepl.RelationMessage
	if err := m.Decode(payload[1:]); err != nil {
		return
	}
	n.relationsMu.Lock()
	defer n.relationsMu.Unlock()
	n.relations[m.RelationID] = payload
	data, err := json.Marshal(n.relations)
	if err != nil {
		return
	}
	tmp := n.relationsFile() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err == nil {
		_ = os.Rename(tmp, n.relationsFile())
	}
}

func (n *Node) relation(id uint32) *pglogrepl.RelationMessage {
	n.relationsMu.Lock()
	defer n.relationsMu.Unlock()
	raw, ok := n.relations[id]
	if !ok {
		return nil
	}
	var m pglogrepl.RelationMessage
	if err := m.Decode(raw[1:]); err != nil {
		return nil
	}
	return &m
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
