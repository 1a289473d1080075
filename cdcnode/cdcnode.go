package cdcnode

import (
	"context"
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
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

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
