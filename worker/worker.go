// Package worker is the stateless executor of units. It runs N pull loops
// against the coordinator's CoordinatorService: each loop leases one unit at
// a time, runs it between source and target while heartbeating, and reports
// it done or failed. It knows the coordinator only through the generated gRPC
// client and never imports coordinator packages.
package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/metrics"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
)

// ErrWrongDatabase means the worker's --source or --target is not the
// database the coordinator's migration is about.
var ErrWrongDatabase = pguri.ErrWrongDatabase

// Loop is a set of pull loops taking the same unit kinds.
type Loop struct {
	Count int
	// Kinds the loops take; empty means any.
	Kinds []pb.UnitKind
}

// Config is one worker's configuration.
type Config struct {
	Coordinator string
	SourceURI   string
	TargetURI   string
	// Loops are the pull loops; the CLI's --jobs N is one Loop of N.
	Loops []Loop
	// Name shows in status; host name and pid by default.
	Name string
	// AcquireWait is the long-poll of one AcquireUnit call.
	AcquireWait time.Duration
	// Backoff bounds the retry delay while the coordinator is unreachable.
	MinBackoff, MaxBackoff time.Duration
	// TargetSettings are SET on every target session (for example
	// maintenance_work_mem for index builds).
	TargetSettings map[string]string
	// DialOptions add to the gRPC dial options (tests).
	DialOptions []grpc.DialOption
	// Security is the token and TLS used to reach the coordinator.
	Security rpcsec.Config
	// Grace is how long a stopping worker lets its running units finish
	// before it cancels them and gives them back.
	Grace time.Duration
	// MetricsListen serves Prometheus /metrics; empty disables it.
	MetricsListen string
	// HealthListen serves the gRPC health service; empty disables it.
	HealthListen string
}

// DefaultConfig is the configuration the CLI starts from.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Loops:       []Loop{{Count: 2}},
		Name:        fmt.Sprintf("%s/%d", host, os.Getpid()),
		AcquireWait: 10 * time.Second,
		MinBackoff:  100 * time.Millisecond,
		MaxBackoff:  5 * time.Second,
		Grace:       30 * time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var problems []string
	if c.Coordinator == "" {
		problems = append(problems, "--coordinator is required")
	}
	n := 0
	for _, l := range c.Loops {
		n += l.Count
	}
	if n < 1 {
		problems = append(problems, "--jobs must be at least 1")
	}
	if c.AcquireWait <= 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		problems = append(problems, "wait and backoff durations must be positive")
	}
	if len(problems) > 0 {
		return errors.New("worker: " + strings.Join(problems, "; "))
	}
	return nil
}

// Worker runs units for one coordinator.
type Worker struct {
	cfg      Config
	log      hclog.Logger
	src, dst pguri.URI

	client pb.CoordinatorServiceClient
	mu     sync.Mutex
	reg    *pb.RegisterWorkerResponse
	stats  *stats
}

// New checks the configuration; nothing is opened until Run.
func New(cfg Config, logger hclog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src, dst, err := pguri.ParsePair(cfg.SourceURI, cfg.TargetURI)
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, log: logger.Named("worker"), src: src, dst: dst, stats: newStats()}, nil
}

// Run registers with the coordinator and runs the pull loops until the
// migration is finished (nil), ctx is done (nil: a stop was asked for;
// running units get Config.Grace to finish, then are given back), or the
// worker cannot work (an error).
func (w *Worker) Run(ctx context.Context) error {
	opts, err := rpcsec.DialOptions(w.cfg.Security)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(w.cfg.Coordinator, append(opts, w.cfg.DialOptions...)...)
	if err != nil {
		return fmt.Errorf("worker: coordinator address %q: %w", w.cfg.Coordinator, err)
	}
	defer conn.Close()
	w.client = pb.NewCoordinatorServiceClient(conn)

	// The health and metrics endpoints live until the loops end.
	ops, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	var og errgroup.Group
	defer og.Wait()
	defer stopOps()
	healthSrv, err := w.serveOps(ops, &og)
	if err != nil {
		return err
	}

	reg, err := w.register(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := w.checkDatabases(ctx, reg); err != nil {
		return err
	}
	if healthSrv != nil {
		healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range w.cfg.Loops {
		for i := 0; i < l.Count; i++ {
			g.Go(func() error { return w.loop(gctx, l.Kinds) })
		}
	}
	err = g.Wait()
	if healthSrv != nil {
		healthSrv.Shutdown()
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// serveOps starts the metrics and health endpoints that are configured.
func (w *Worker) serveOps(ctx context.Context, g *errgroup.Group) (*health.Server, error) {
	if w.cfg.MetricsListen != "" {
		reg := metrics.NewRegistry()
		w.stats.register(reg)
		ms, err := metrics.Listen(w.cfg.MetricsListen, reg)
		if err != nil {
			return nil, err
		}
		g.Go(func() error { return ms.Serve(ctx) })
	}
	if w.cfg.HealthListen == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", w.cfg.HealthListen)
	if err != nil {
		return nil, fmt.Errorf("worker: health listen on %s: %w", w.cfg.HealthListen, err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	g.Go(func() error { return srv.Serve(lis) })
	g.Go(func() error {
		<-ctx.Done()
		srv.Stop()
		return nil
	})
	return hs, nil
}

// register introduces the worker, retrying while the coordinator is
// unreachable or still setting up.
func (w *Worker) register(ctx context.Context) (*pb.RegisterWorkerResponse, error) {
	jobs := 0
	for _, l := range w.cfg.Loops {
		jobs += l.Count
	}
	backoff := w.cfg.MinBackoff
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		reg, err := w.client.RegisterWorker(cctx, &pb.RegisterWorkerRequest{Name: w.cfg.Name, Jobs: int32(jobs)})
		cancel()
		if err == nil {
			w.mu.Lock()
			w.reg = reg
			w.mu.Unlock()
			w.log.Info("registered", "worker_id", reg.GetWorkerId(), "migration_id", reg.GetMigrationId(), "coordinator", w.cfg.Coordinator)
			return reg, nil
		}
		if !retryable(err) {
			return nil, fmt.Errorf("worker: register with coordinator %s: %w", w.cfg.Coordinator, err)
		}
		w.log.Debug("coordinator not ready, retrying", "error", err, "backoff", backoff)
		if err := sleep(ctx, backoff); err != nil {
			return nil, err
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
}

func (w *Worker) registration() *pb.RegisterWorkerResponse {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reg
}

// checkDatabases refuses to work when --source or --target is not the
// database the migration is about.
func (w *Worker) checkDatabases(ctx context.Context, reg *pb.RegisterWorkerResponse) error {
	if err := w.src.CheckIdentity(ctx, "pgcaravan-worker", reg.GetMigrationId(), reg.GetSource().GetSystemIdentifier(), reg.GetSource().GetDatabase()); err != nil {
		return err
	}
	return w.dst.CheckIdentity(ctx, "pgcaravan-worker", reg.GetMigrationId(), reg.GetTarget().GetSystemIdentifier(), reg.GetTarget().GetDatabase())
}

// loop leases and runs units one at a time until the migration is finished.
func (w *Worker) loop(ctx context.Context, kinds []pb.UnitKind) error {
	backoff := w.cfg.MinBackoff
	for {
		if ctx.Err() != nil {
			return nil
		}
		reg := w.registration()
		cctx, cancel := context.WithTimeout(ctx, w.cfg.AcquireWait+10*time.Second)
		resp, err := w.client.AcquireUnit(cctx, &pb.AcquireUnitRequest{WorkerId: reg.GetWorkerId(), Kinds: kinds,
			Wait: durationpb.New(w.cfg.AcquireWait)})
		cancel()
		switch {
		case err == nil:
			backoff = w.cfg.MinBackoff
		case status.Code(err) == codes.NotFound:
			// The coordinator does not know us (a new store): register again.
			if _, err := w.register(ctx); err != nil {
				return err
			}
			continue
		case retryable(err):
			w.log.Warn("coordinator unreachable, retrying", "error", err, "backoff", backoff)
			if err := sleep(ctx, backoff); err != nil {
				return nil
			}
			backoff = min(backoff*2, w.cfg.MaxBackoff)
			continue
		default:
			return fmt.Errorf("worker: acquire unit: %w", err)
		}
		if resp.GetMigrationFinished() {
			w.log.Debug("migration finished; loop exits")
			return nil
		}
		if resp.GetLease() != nil {
			w.runLease(ctx, reg, resp.GetLease())
		}
	}
}

// progress is what a running unit has done so far; the heartbeat reads it.
type progress struct {
	rows, bytes atomic.Int64
}

// runLease runs one unit with heartbeats and reports the outcome. The unit
// has its own context: when ctx (the worker's) ends, the unit gets
// Config.Grace to finish; past it, it is cancelled (its target transaction
// rolls back) and given back to the coordinator.
func (w *Worker) runLease(ctx context.Context, reg *pb.RegisterWorkerResponse, l *pb.Lease) {
	u := l.GetUnit()
	log := w.log.With("unit_id", u.GetId(), "kind", u.GetKind().String(), "table", u.GetTable())
	log.Info("unit started", "description", u.GetDescription(), "attempt", l.GetAttempt())
	started := time.Now()
	w.stats.running.Inc()
	defer w.stats.running.Dec()

	uctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var lost, timedOut atomic.Bool
	finished := make(chan struct{})
	graceDone := make(chan struct{})
	go func() {
		defer close(graceDone)
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		log.Info("stopping: the unit has a grace period to finish", "grace", w.cfg.Grace)
		t := time.NewTimer(w.cfg.Grace)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			timedOut.Store(true)
			cancel()
		}
	}()
	var prog progress
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeat(uctx, func() { lost.Store(true); cancel() }, reg, l, &prog, log)
	}()
	res, err := w.execute(uctx, l, &prog)
	close(finished)
	cancel()
	<-hbDone
	<-graceDone

	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	switch {
	case lost.Load():
		log.Warn("unit abandoned: its lease was taken back")
		w.stats.outcome(u.GetKind(), "abandoned")
		return
	case err != nil && timedOut.Load():
		log.Warn("grace period over: giving the unit back", "millis", time.Since(started).Milliseconds())
		_, ferr := w.client.FailUnit(rctx, &pb.FailUnitRequest{WorkerId: reg.GetWorkerId(), UnitId: u.GetId(),
			Token: l.GetToken(), Error: "released: worker stopping", Release: true})
		if ferr != nil {
			log.Warn("could not give the unit back; its lease will expire", "error", ferr)
		}
		w.stats.outcome(u.GetKind(), "released")
		return
	case err != nil:
		log.Warn("unit failed", "error", err, "millis", time.Since(started).Milliseconds())
		_, ferr := w.client.FailUnit(rctx, &pb.FailUnitRequest{WorkerId: reg.GetWorkerId(), UnitId: u.GetId(),
			Token: l.GetToken(), Error: err.Error()})
		if ferr != nil {
			log.Warn("could not report the failure; the lease will expire", "error", ferr)
		}
		w.stats.outcome(u.GetKind(), "failed")
		return
	}
	w.stats.rows.Add(float64(res.rows))
	w.stats.bytes.Add(float64(res.bytes))
	w.stats.outcome(u.GetKind(), "done")
	_, err = w.client.CompleteUnit(rctx, &pb.CompleteUnitRequest{WorkerId: reg.GetWorkerId(), UnitId: u.GetId(),
		Token: l.GetToken(), Rows: res.rows, Bytes: res.bytes, AlreadyDone: res.alreadyDone,
		VerifySource: res.verifySource, VerifyTarget: res.verifyTarget})
	if err != nil {
		// The rows are committed with their marker; a redelivery finds the
		// marker and only reports done.
		log.Warn("could not report completion; the unit will be delivered again and find its marker", "error", err)
		return
	}
	log.Info("unit done", "rows", res.rows, "bytes", res.bytes, "already_done", res.alreadyDone,
		"millis", time.Since(started).Milliseconds())
}

// heartbeat extends the lease until ctx ends; if the coordinator says the
// lease is gone, it cancels the unit so its transaction rolls back.
func (w *Worker) heartbeat(ctx context.Context, cancelUnit func(), reg *pb.RegisterWorkerResponse,
	l *pb.Lease, prog *progress, log hclog.Logger) {
	interval := reg.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, interval)
		_, err := w.client.Heartbeat(hctx, &pb.HeartbeatRequest{WorkerId: reg.GetWorkerId(), UnitId: l.GetUnit().GetId(),
			Token: l.GetToken(), Rows: prog.rows.Load(), Bytes: prog.bytes.Load()})
		cancel()
		if code := status.Code(err); code == codes.Aborted || code == codes.NotFound {
			log.Warn("lease lost; abandoning the unit", "error", err)
			cancelUnit()
			return
		} else if err != nil && ctx.Err() == nil {
			log.Debug("heartbeat failed", "error", err)
		}
	}
}

// retryable says whether a gRPC error is worth retrying: the coordinator is
// down, restarting or still setting up.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
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
