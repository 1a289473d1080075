// Package fleet runs a whole fleet inside one process: a coordinator and a
// worker (with table and index loops) talking gRPC over loopback, exactly as
// separate processes would, plus a live progress view. It is what
// `pgcaravan clone` runs.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/pgcaravan/pgcaravan/cdcnode"
	"github.com/pgcaravan/pgcaravan/coordinator"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/report"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
	"github.com/pgcaravan/pgcaravan/worker"
)

// Config is an embedded fleet's configuration.
type Config struct {
	Coordinator coordinator.Config
	Worker      worker.Config
	// TableJobs loops copy tables (and run the other non-index units);
	// IndexJobs loops build indexes, constraints and foreign keys.
	TableJobs int
	IndexJobs int
	// Progress receives the live view; nil for none.
	Progress io.Writer
	// Interactive redraws the view in place (a terminal).
	Interactive bool
	// ProgressInterval is how often the view is refreshed.
	ProgressInterval time.Duration
	// OnListen, if set, is told the admin API's address once it listens.
	OnListen func(addr string)
	// CDC configures the cdcnode of a --follow clone.
	CDC cdcnode.Config
}

// Both sets of loops take verify units, so AdminService/Verify on a
// --follow clone spreads its ranges over all of them.
var tableKinds = []pb.UnitKind{pb.UnitKind_UNIT_KIND_COPY, pb.UnitKind_UNIT_KIND_LARGE_OBJECTS,
	pb.UnitKind_UNIT_KIND_SEQUENCES, pb.UnitKind_UNIT_KIND_VACUUM, pb.UnitKind_UNIT_KIND_POST_DATA,
	pb.UnitKind_UNIT_KIND_REFRESH, pb.UnitKind_UNIT_KIND_FOREIGN_KEY, pb.UnitKind_UNIT_KIND_VERIFY}

var indexKinds = []pb.UnitKind{pb.UnitKind_UNIT_KIND_INDEX, pb.UnitKind_UNIT_KIND_CONSTRAINT,
	pb.UnitKind_UNIT_KIND_FOREIGN_KEY, pb.UnitKind_UNIT_KIND_VERIFY}

// Run runs the migration to its end and returns its final status, read from
// the store. The error is the coordinator's (or a worker's that could not
// work at all).
func Run(ctx context.Context, cfg Config, logger hclog.Logger) (*pb.StatusResponse, error) {
	if cfg.TableJobs < 1 || cfg.IndexJobs < 1 {
		return nil, errors.New("clone: --table-jobs and --index-jobs must be at least 1")
	}
	listen := cfg.Coordinator.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("clone: listen on %s: %w (pick another --listen)", listen, err)
	}
	cfg.Coordinator.Listener = lis
	// The in-process workers are stopped as soon as the coordinator
	// returns, so it need not keep answering for them to hear the end.
	cfg.Coordinator.ExitGrace = 0
	if cfg.OnListen != nil {
		cfg.OnListen(lis.Addr().String())
	}
	coord, err := coordinator.New(cfg.Coordinator, logger.Named("coordinator"))
	if err != nil {
		lis.Close()
		return nil, err
	}
	cfg.Worker.Coordinator = lis.Addr().String()
	cfg.Worker.Loops = []worker.Loop{{Count: cfg.TableJobs, Kinds: tableKinds}, {Count: cfg.IndexJobs, Kinds: indexKinds}}
	wk, err := worker.New(cfg.Worker, logger)
	if err != nil {
		lis.Close()
		return nil, err
	}

	g, gctx := errgroup.WithContext(ctx)
	workerCtx, stopWorkers := context.WithCancel(gctx)
	defer stopWorkers()
	progressCtx, stopProgress := context.WithCancel(gctx)
	defer stopProgress()
	var coordErr error
	g.Go(func() error {
		coordErr = coord.Run(gctx)
		// The workers exit on their own when told the migration finished;
		// this covers a coordinator that stopped early.
		stopWorkers()
		stopProgress()
		return nil
	})
	g.Go(func() error { return wk.Run(workerCtx) })
	if cfg.Coordinator.Follow {
		cdcCfg := cfg.CDC
		cdcCfg.Coordinator, cdcCfg.SourceURI, cdcCfg.TargetURI = lis.Addr().String(), cfg.Worker.SourceURI, cfg.Worker.TargetURI
		cdcCfg.Security = cfg.Worker.Security
		if cdcCfg.Dir == "" {
			cdcCfg.Dir = filepath.Join(cfg.Coordinator.Dir, "cdc")
		}
		node, err := cdcnode.New(cdcCfg, logger)
		if err != nil {
			stopWorkers()
			return nil, err
		}
		g.Go(func() error { return node.Run(workerCtx) })
		g.Go(func() error { return cleanupAfterCutover(progressCtx, lis.Addr().String(), cfg, logger) })
	}
	if cfg.Progress != nil {
		g.Go(func() error {
			watch(progressCtx, lis.Addr().String(), cfg)
			return nil
		})
	}
	werr := g.Wait()
	if coordErr == nil && werr != nil {
		coordErr = werr
	}
	final, serr := coordinator.ReadStatus(cfg.Coordinator.Dir)
	if serr != nil && coordErr == nil {
		coordErr = serr
	}
	return final, coordErr
}

// cleanupAfterCutover ends an embedded --follow clone: once an operator's
// Cutover has completed (phase done), it calls Cleanup, which stops the
// cdcnode, drops the slot and publications, and lets the coordinator exit.
func cleanupAfterCutover(ctx context.Context, addr string, cfg Config, logger hclog.Logger) error {
	opts, err := rpcsec.DialOptions(cfg.Worker.Security)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := admin.Status(cctx, &pb.StatusRequest{})
		cancel()
		if err != nil || s.GetPhase() != pb.Phase_PHASE_DONE || s.GetCdc().GetEndpos() == "" {
			continue
		}
		logger.Info("cutover complete: cleaning up the slot and publications")
		cctx, cancel = context.WithTimeout(ctx, time.Minute)
		_, err = admin.Cleanup(cctx, &pb.CleanupRequest{})
		cancel()
		if err != nil {
			logger.Error("cleanup after cutover failed; run `pgcaravan cleanup --dir` with --source and --target", "error", err)
		}
		return nil
	}
}

// watch polls AdminService/Status over the same loopback gRPC a person's
// grpcurl uses, and draws the progress view.
func watch(ctx context.Context, addr string, cfg Config) {
	opts, err := rpcsec.DialOptions(cfg.Worker.Security)
	if err != nil {
		return
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	interval := cfg.ProgressInterval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var prev *pb.StatusResponse
	lines := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, interval)
		s, err := admin.Status(cctx, &pb.StatusRequest{})
		cancel()
		if err != nil || s.GetMigrationId() == "" {
			continue
		}
		view := report.Progress(s, prev, interval, 10)
		prev = s
		if cfg.Interactive {
			if lines > 0 {
				fmt.Fprintf(cfg.Progress, "\033[%dA\033[J", lines)
			}
			lines = countLines(view)
		}
		fmt.Fprint(cfg.Progress, view)
	}
}

func countLines(s string) int {
	n := 0
	for _, r := range s {
		if r == '\n' {
			n++
		}
	}
	return n
}

// IsTerminal says whether f is a terminal, for the in-place progress view.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
