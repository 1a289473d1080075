// Package coordinator runs one migration: it holds the exported snapshot,
// plans the copy, keeps the plan and every unit's state in bbolt, and serves
// CoordinatorService (workers) and AdminService (people) over gRPC, with
// reflection and the standard health service. It never copies rows itself:
// workers do, through the generated gRPC client.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/lease"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/metrics"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
)

var (
	// ErrUnitsFailed means the migration ended with failed units.
	ErrUnitsFailed = errors.New("coordinator: units failed")
	// ErrTargetNotEmpty means the target has objects the clone would create.
	ErrTargetNotEmpty = errors.New("coordinator: target is not empty")
	// ErrOtherMigration means --dir holds another migration's store.
	ErrOtherMigration = errors.New("coordinator: the store belongs to another migration")
	// ErrOtherFilters means --dir holds a migration planned with other
	// filters than the ones given.
	ErrOtherFilters = errors.New("coordinator: the store's migration has other filters")
)

// Config is one coordinator's configuration.
type Config struct {
	SourceURI string
	TargetURI string
	// Dir holds the store and the schema dump.
	Dir string
	// Listen is the gRPC address; ignored when Listener is set.
	Listen string
	// Listener, when set, is used instead of listening on Listen (the
	// embedded clone passes one so it knows the port before Run).
	Listener net.Listener

	NoOwner      bool
	NoACL        bool
	DropIfExists bool
	Plan         plan.Options
	// Filter leaves tables, schemas, indexes, table data and extensions
	// out of the clone (--filters, --table, --exclude-*); nil copies all.
	Filter *filter.Filter

	// NoComments restores no comments (pg_restore --no-comments).
	NoComments bool
	// SkipExtensions creates no extension: CREATE EXTENSION entries and
	// the comments on extensions are left out, so the target must have
	// the extensions the restored objects use.
	SkipExtensions bool
	// Roles makes the source server's roles on the target first, from
	// pg_dumpall --roles-only; roles the target has are left as they are.
	Roles bool
	// NoRolePasswords leaves the passwords out of Roles.
	NoRolePasswords bool
	// SkipDBProperties does not copy the source database's settings
	// (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET), which
	// are otherwise made on the target database once everything else is.
	SkipDBProperties bool
	// AfterSchema is a SQL file run on the target in one transaction after
	// the pre-data restore and before any data is copied; once per
	// migration, even across coordinator restarts.
	AfterSchema string

	Lease lease.Config
	// HeartbeatInterval is what workers heartbeat at; well under Lease.TTL.
	HeartbeatInterval time.Duration
	// MaxWait caps an AcquireUnit long-poll.
	MaxWait time.Duration
	// ExitGrace is how long the server keeps answering after the migration
	// ends, so idle workers learn it and exit.
	ExitGrace time.Duration
	// Security is the bearer token and TLS of the gRPC server. A listen
	// address beyond loopback requires a token.
	Security rpcsec.Config
	// MetricsListen serves Prometheus /metrics; empty disables it.
	MetricsListen string
	// Follow makes a live migration: a publication and a slot are created
	// before the snapshot, a cdcnode applies changes once the backfill is
	// complete, and the migration ends at Cutover and Cleanup.
	Follow bool
	// ReplicaIdentityFull sets REPLICA IDENTITY FULL on source tables that
	// have no replica identity, instead of publishing only their inserts.
	ReplicaIdentityFull bool
}

// DefaultConfig is the configuration the CLI starts from.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:7420",
		Plan:              plan.DefaultOptions(),
		Lease:             lease.DefaultConfig(),
		HeartbeatInterval: 5 * time.Second,
		MaxWait:           10 * time.Second,
		ExitGrace:         2 * time.Second,
	}
}

// Validate checks the configuration and says what to fix.
func (c Config) Validate() error {
	var problems []string
	if c.Dir == "" {
		problems = append(problems, "--dir is required: the coordinator keeps its store there")
	}
	if c.Listen == "" && c.Listener == nil {
		problems = append(problems, "--listen is required")
	} else if c.Listener == nil {
		if err := c.Security.CheckListen(c.Listen); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if c.HeartbeatInterval <= 0 || c.Lease.TTL <= c.HeartbeatInterval {
		problems = append(problems, fmt.Sprintf("the lease TTL (%s) must be longer than the heartbeat interval (%s)", c.Lease.TTL, c.HeartbeatInterval))
	}
	if c.Lease.MaxAttempts < 1 {
		problems = append(problems, "the delivery limit must be at least 1")
	}
	if err := c.Filter.Validate(); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New("coordinator: " + strings.Join(problems, "; "))
	}
	return nil
}

// Coordinator runs one migration.
type Coordinator struct {
	cfg      Config
	log      hclog.Logger
	src, dst pguri.URI
	ready    chan struct{}
	addr     string

	// Set by Run, for the admin calls (Cutover, Cleanup).
	st          *store.Store
	rpc         *rpcserver.Server
	cleaned     chan struct{}
	cleanedOnce sync.Once
}

// New checks the configuration; nothing is opened until Run.
func New(cfg Config, logger hclog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src, dst, err := pguri.ParsePair(cfg.SourceURI, cfg.TargetURI)
	if err != nil {
		return nil, err
	}
	cfg.Plan.NoOwner, cfg.Plan.NoACL = cfg.NoOwner, cfg.NoACL
	return &Coordinator{cfg: cfg, log: logger, src: src, dst: dst, ready: make(chan struct{}), cleaned: make(chan struct{})}, nil
}

// Ready is closed once the gRPC server listens.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Addr is the address the gRPC server listens on, once Ready.
func (c *Coordinator) Addr() string { return c.addr }

// Run runs the migration to its end. It returns nil when every unit is done,
// an error wrapping ErrUnitsFailed when some failed, or the error that
// stopped it. It returns only after its goroutines have. On a --dir that
// holds an unfinished migration it resumes it.
func (c *Coordinator) Run(ctx context.Context) error {
	st, err := store.Open(c.cfg.Dir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	var resume *store.Meta
	if meta, err := st.Meta(); err == nil {
		if err := c.sameMigration(meta); err != nil {
			return err
		}
		if meta.Phase == store.PhaseDone && (!meta.Follow || meta.Cleaned) {
			c.log.Info("migration is already complete", "migration_id", meta.MigrationID, "dir", c.cfg.Dir)
			return nil
		}
		resume = &meta
	} else if !errors.Is(err, store.ErrNoMigration) {
		return err
	}

	srvOpts, err := rpcsec.ServerOptions(c.cfg.Security)
	if err != nil {
		return err
	}
	lis := c.cfg.Listener
	if lis == nil {
		lis, err = net.Listen("tcp", c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w (is another coordinator running? pick another --listen)", c.cfg.Listen, err)
		}
	} else if err := c.cfg.Security.CheckListen(lis.Addr().String()); err != nil {
		lis.Close()
		return err
	}
	c.addr = lis.Addr().String()
	rpc := rpcserver.New(rpcserver.Config{HeartbeatInterval: c.cfg.HeartbeatInterval, MaxWait: c.cfg.MaxWait}, st, c.log)
	c.st, c.rpc = st, rpc
	rpc.SetController(c)
	srv := grpc.NewServer(srvOpts...)
	pb.RegisterCoordinatorServiceServer(srv, rpc)
	pb.RegisterAdminServiceServer(srv, rpc)
	pb.RegisterCDCServiceServer(srv, rpc)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(srv, healthSrv)
	reflection.Register(srv)

	g, gctx := errgroup.WithContext(ctx)
	// The metrics server lives as long as the gRPC server.
	opsCtx, stopOps := context.WithCancel(gctx)
	defer stopOps()
	if c.cfg.MetricsListen != "" {
		reg := metrics.NewRegistry()
		reg.MustRegister(newCollector(st, rpc))
		ms, err := metrics.Listen(c.cfg.MetricsListen, reg)
		if err != nil {
			lis.Close()
			return err
		}
		g.Go(func() error { return ms.Serve(opsCtx) })
		c.log.Info("metrics listening", "addr", ms.Addr())
	}
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc serve: %w", err)
		}
		return nil
	})
	c.log.Info("coordinator listening", "addr", c.addr, "dir", c.cfg.Dir, "tls", c.cfg.Security.TLS(), "auth", c.cfg.Security.Token != "")
	close(c.ready)

	runErr := c.migrate(gctx, st, rpc, g, resume)
	// Keep answering briefly so idle workers hear that the migration ended.
	if runErr == nil || errors.Is(runErr, ErrUnitsFailed) {
		select {
		case <-time.After(c.cfg.ExitGrace):
		case <-ctx.Done():
		}
	}
	healthSrv.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
		<-stopped
	}
	stopOps()
	if err := g.Wait(); err != nil && runErr == nil && ctx.Err() == nil {
		runErr = err
	}
	if runErr == nil && ctx.Err() != nil {
		runErr = ctx.Err()
	}
	return runErr
}

// sameMigration refuses a store that belongs to another migration (by
// database names here; by system identifiers once connected, in resume).
func (c *Coordinator) sameMigration(meta store.Meta) error {
	if meta.Source.Database != c.src.Database() || meta.Target.Database != c.dst.Database() {
		return fmt.Errorf("%w: %s holds migration %s from database %q to %q, not %q to %q (use another --dir)",
			ErrOtherMigration, c.cfg.Dir, meta.MigrationID, meta.Source.Database, meta.Target.Database,
			c.src.Database(), c.dst.Database())
	}
	// A resumed migration keeps its plan, so other filters would be
	// silently ignored: the target would not hold what the operator asked.
	if !c.cfg.Filter.Equal(meta.Filters) {
		return fmt.Errorf("%w: %s holds migration %s, planned with the filters %s, but --filters, --table and --exclude-* now say %s; a migration keeps the filters it started with: give the same ones to resume it, or start a new migration with another --dir on an empty target",
			ErrOtherFilters, c.cfg.Dir, meta.MigrationID, meta.Filters, c.cfg.Filter)
	}
	return nil
}

// migrate sets the migration up (or resumes it), then drives it until no
// unit can run.
func (c *Coordinator) migrate(ctx context.Context, st *store.Store, rpc *rpcserver.Server, g *errgroup.Group, resume *store.Meta) error {
	var snap *heldSnapshot
	var err error
	if resume != nil {
		snap, err = c.resume(ctx, st, rpc, *resume)
	} else {
		snap, err = c.setup(ctx, st, rpc)
	}
	if snap != nil {
		defer snap.release(context.Background())
	}
	if err != nil {
		return err
	}
	broker, err := lease.New(c.cfg.Lease, st, c.log)
	if err != nil {
		return err
	}
	broker.SetFence(func(u store.Unit) { c.fence(ctx, u) })
	bctx, stopBroker := context.WithCancel(ctx)
	defer stopBroker()
	g.Go(func() error { return broker.Run(bctx) })
	rpc.SetBroker(broker, snap.id)
	meta, err := st.Meta()
	if err != nil {
		return err
	}
	if meta.Follow {
		update, err := c.watchState(st, meta)
		if err != nil {
			return err
		}
		rpc.UpdateCDC(update)
		g.Go(func() error { c.pollSource(bctx, rpc, meta.Slot); return nil })
	}

	// Drive: watch state changes, release the snapshot once nothing needs
	// it, and stop when no unit can run any more.
	copying := true
	for {
		changed := broker.Changed()
		if snap.held() && broker.Settled(func(u *store.Unit) bool { return u.NeedsSnapshot }) {
			rpc.SetSnapshot("")
			snap.release(ctx)
			_ = st.UpdateMeta(func(m *store.Meta) { m.Snapshot = "" })
			c.log.Info("snapshot released: every unit that reads the source is done")
		}
		if copying && broker.Settled(func(u *store.Unit) bool { return u.Kind == plan.KindCopy }) {
			copying = false
			err := st.UpdateMeta(func(m *store.Meta) {
				if m.Phase == store.PhaseCopy {
					m.Phase = store.PhaseFinalize
				}
			})
			if err != nil {
				return err
			}
			c.log.Info("phase changed", "phase", store.PhaseFinalize)
		}
		if broker.Finished() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
	if meta.Follow && !anyFailed(broker) {
		return c.follow(ctx, st, rpc)
	}
	return c.finish(ctx, st, broker)
}

func anyFailed(b *lease.Broker) bool {
	for _, u := range b.Snapshot().Units {
		if u.State == store.StateFailed {
			return true
		}
	}
	return false
}

// follow is the live part of a --follow migration: the backfill is
// complete, the cdcnode applies changes, and the coordinator waits for an
// operator's Cutover and Cleanup.
func (c *Coordinator) follow(ctx context.Context, st *store.Store, rpc *rpcserver.Server) error {
	err := st.UpdateMeta(func(m *store.Meta) {
		if m.Phase != store.PhaseCutover && m.Phase != store.PhaseDone {
			m.Phase = store.PhaseFollow
		}
	})
	if err != nil {
		return err
	}
	rpc.UpdateCDC(func(w *pb.WatchPhaseResponse) { w.BackfillComplete = true })
	c.log.Info("backfill complete: the cdcnode applies changes; call Cutover once writes on the source have stopped, then Cleanup")
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.cleaned:
		c.log.Info("migration complete and cleaned up")
		return nil
	}
}

// finish records the outcome and removes pgcaravan's schema from the target.
func (c *Coordinator) finish(ctx context.Context, st *store.Store, broker *lease.Broker) error {
	var failed []string
	for _, u := range broker.Snapshot().Units {
		if u.State == store.StateFailed {
			failed = append(failed, fmt.Sprintf("unit %d (%s %s %s): %s", u.ID, u.Kind, u.Table, u.Description, u.LastError))
		}
	}
	if len(failed) > 0 {
		if err := st.UpdateMeta(func(m *store.Meta) { m.Phase = store.PhaseFailed; m.FinishedAt = time.Now() }); err != nil {
			return err
		}
		c.log.Error("migration ended with failed units", "failed", len(failed))
		return fmt.Errorf("%w: %d unit(s) failed; the target is incomplete:\n  %s\n(see `pgcaravan status --dir %s`; fix the cause and start over with --drop-if-exists)",
			ErrUnitsFailed, len(failed), strings.Join(failed, "\n  "), c.cfg.Dir)
	}
	conn, err := c.dst.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, dropMarkerSchema); err != nil {
		return fmt.Errorf("target %s: drop the pgcaravan schema: %w", c.dst, err)
	}
	if err := st.UpdateMeta(func(m *store.Meta) { m.Phase = store.PhaseDone; m.FinishedAt = time.Now() }); err != nil {
		return err
	}
	c.log.Info("migration complete", "dir", c.cfg.Dir)
	return nil
}
