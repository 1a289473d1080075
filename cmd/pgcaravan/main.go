// Command pgcaravan moves a PostgreSQL database to another server, spread
// over a fleet: a coordinator, stateless workers, and (with --follow)
// a CDC node. main only turns flags and environment into Configs, sets up the
// logger and a signal-cancelled context, calls Run, and maps the error to an
// exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pgcaravan/pgcaravan/cdcnode"
	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	"github.com/pgcaravan/pgcaravan/fleet"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/report"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
	"github.com/pgcaravan/pgcaravan/worker"
)

const usage = `pgcaravan moves a live PostgreSQL database to another server, spread over a fleet.

Usage:
  pgcaravan clone       --source URI --target URI [--dir DIR] [--table-jobs N] [--index-jobs N] [--listen ADDR]
  pgcaravan coordinator --source URI --target URI --dir DIR [--listen ADDR]
  pgcaravan clone       --follow ...        (live: also streams changes; ends at cutover)
  pgcaravan worker      --coordinator ADDR --source URI --target URI [--jobs N]
  pgcaravan cdcnode     --coordinator ADDR --source URI --target URI --dir DIR [--metrics-listen ADDR [--wedged-after D]]
  pgcaravan cutover     --coordinator ADDR [--endpos LSN]
  pgcaravan cleanup     (--coordinator ADDR | --source URI --target URI --dir DIR)
  pgcaravan status      (--dir DIR | --coordinator ADDR) [--json]
  pgcaravan retry       --coordinator ADDR (UNIT_ID... | --all-failed)
  pgcaravan verify      --source URI --target URI [--dir DIR [--restart]] [--jobs N] [--snapshot ID]
  pgcaravan plan        --source URI --target URI [--filters FILE] [--json] [--list-skipped]
  pgcaravan precheck    --source URI --target URI [--follow] [--json]   (or --coordinator ADDR)

Connection strings may also come from PGCARAVAN_SOURCE_URI and PGCARAVAN_TARGET_URI.
Run 'pgcaravan COMMAND -h' for a command's flags.
`

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// PGCARAVAN_CPUPROFILE=FILE writes a Go CPU profile of the whole run
	// (go tool pprof reads it): how make bench finds where the time goes.
	if path := os.Getenv("PGCARAVAN_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	cmds := map[string]func(context.Context, []string) error{
		"clone": runClone, "coordinator": runCoordinator, "worker": runWorker,
		"status": runStatus, "verify": runVerify, "retry": runRetry,
		"cdcnode": runCDCNode, "cutover": runCutover, "cleanup": runCleanup,
		"plan":     runPlan,
		"precheck": runPrecheck,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "pgcaravan: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	err := cmd(ctx, args[1:])
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "pgcaravan %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(os.Stderr, "pgcaravan %s: %v\n", args[0], err)
		return exitFail
	}
}

var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// common are the flags every database-facing command has.
type common struct {
	source, target string
	logLevel       string
	logFormat      string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.source, "source", os.Getenv("PGCARAVAN_SOURCE_URI"), "source connection string (env PGCARAVAN_SOURCE_URI)")
	fs.StringVar(&c.target, "target", os.Getenv("PGCARAVAN_TARGET_URI"), "target connection string (env PGCARAVAN_TARGET_URI)")
	fs.StringVar(&c.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
}

func (c *common) logger(name string, out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(c.logLevel),
		Output: out, JSONFormat: c.logFormat == "json"})
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func coordinatorFlags(fs *flag.FlagSet, cfg *coordinator.Config) {
	fs.StringVar(&cfg.Dir, "dir", cfg.Dir, "directory for the store (pgcaravan.db) and the schema dump")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC listen address")
	fs.BoolVar(&cfg.NoOwner, "no-owner", false, "do not restore object owners (pg_restore --no-owner)")
	fs.BoolVar(&cfg.NoACL, "no-acl", false, "do not restore grants (pg_restore --no-acl)")
	fs.BoolVar(&cfg.DropIfExists, "drop-if-exists", false, "drop objects on the target that the clone creates, instead of refusing")
	fs.BoolVar(&cfg.NoComments, "no-comments", false, "do not restore comments (pg_restore --no-comments); run verify with --no-comments too")
	fs.BoolVar(&cfg.SkipExtensions, "skip-extensions", false, "do not create extensions (nor their comments): the target must already have those the schema uses")
	fs.BoolVar(&cfg.Roles, "roles", false, "first copy the source server's roles (pg_dumpall --roles-only), leaving roles the target has as they are; roles are cluster-wide")
	fs.BoolVar(&cfg.NoRolePasswords, "no-role-passwords", false, "with --roles: copy roles without their passwords (pg_dumpall --no-role-passwords)")
	fs.BoolVar(&cfg.SkipDBProperties, "skip-db-properties", false, "do not copy the source database's settings (ALTER DATABASE/ROLE ... SET), which are otherwise set on the target once everything else is")
	fs.StringVar(&cfg.AfterSchema, "after-schema", "", "SQL `FILE` run on the target in one transaction after the pre-data schema and before any data is copied")
	fs.BoolVar(&cfg.Follow, "follow", false, "live migration: create a publication and a slot first, stream changes during the copy, apply them after it, until Cutover")
	fs.BoolVar(&cfg.ReplicaIdentityFull, "replica-identity-full", false, "with --follow: set REPLICA IDENTITY FULL on source tables that have no primary key or replica identity, instead of carrying only their INSERTs and TRUNCATEs")
	fs.DurationVar(&cfg.Lease.TTL, "lease-ttl", cfg.Lease.TTL, "how long a lease lives without a heartbeat")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often workers heartbeat a lease (well under --lease-ttl)")
	fs.IntVar(&cfg.Lease.MaxAttempts, "max-attempts", cfg.Lease.MaxAttempts, "deliveries of a unit before it is failed")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on ADDR (off when empty)")
	fs.Func("copy-format", "auto, binary or text; auto is binary where both servers have the same major version and every column type has binary I/O (default auto)", func(v string) error {
		switch f := plan.CopyFormat(v); f {
		case plan.FormatAuto, plan.FormatBinary, plan.FormatText:
			cfg.Plan.CopyFormat = f
			return nil
		}
		return fmt.Errorf("want auto, binary or text, got %q", v)
	})
	fs.Func("split-tables-larger-than", "cut tables whose heap + TOAST size is above SIZE (e.g. 512MB, 10GB) into units of about SIZE; auto derives it from the total size and --copy-jobs, off never splits (default auto)", func(v string) error {
		n, err := plan.ParseSplitSize(v)
		cfg.Plan.SplitTablesLargerThan = n
		return err
	})
	fs.IntVar(&cfg.Plan.SplitMaxParts, "split-max-parts", cfg.Plan.SplitMaxParts, "most units one table is cut into")
	fs.IntVar(&cfg.Plan.CopyJobs, "copy-jobs", cfg.Plan.CopyJobs, "copy units the fleet runs at once, to derive the split size (0: 4, or --table-jobs for clone)")
	filterFlags(fs, &cfg.Filter)
	securityFlags(fs, &cfg.Security, "server")
}

// securityFlags are the token and TLS flags of a gRPC server or client.
func securityFlags(fs *flag.FlagSet, sec *rpcsec.Config, side string) {
	fs.StringVar(&sec.Token, "auth-token", os.Getenv(rpcsec.TokenEnv), "bearer token for the gRPC API (env "+rpcsec.TokenEnv+"); required when the coordinator listens beyond loopback")
	if side == "server" {
		fs.StringVar(&sec.CertFile, "tls-cert", "", "TLS certificate file for the gRPC API")
		fs.StringVar(&sec.KeyFile, "tls-key", "", "TLS key file for the gRPC API")
		fs.StringVar(&sec.CAFile, "tls-ca", "", "CA file: require client certificates it signed (mutual TLS)")
		return
	}
	fs.StringVar(&sec.CAFile, "tls-ca", "", "CA file to verify the coordinator's certificate (turns TLS on)")
	fs.StringVar(&sec.CertFile, "tls-cert", "", "client certificate file, for mutual TLS")
	fs.StringVar(&sec.KeyFile, "tls-key", "", "client key file, for mutual TLS")
	fs.StringVar(&sec.ServerName, "tls-server-name", "", "name to expect in the coordinator's certificate")
}

func runCoordinator(ctx context.Context, args []string) error {
	var c common
	cfg := coordinator.DefaultConfig()
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	c.register(fs)
	coordinatorFlags(fs, &cfg)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.SourceURI, cfg.TargetURI = c.source, c.target
	coord, err := coordinator.New(cfg, c.logger("coordinator", os.Stderr))
	if err != nil {
		return err
	}
	return coord.Run(ctx)
}

func runWorker(ctx context.Context, args []string) error {
	var c common
	cfg := worker.DefaultConfig()
	jobs := 2
	var settings settingFlags
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&cfg.Coordinator, "coordinator", os.Getenv("PGCARAVAN_COORDINATOR"), "coordinator gRPC address (env PGCARAVAN_COORDINATOR)")
	fs.IntVar(&jobs, "jobs", jobs, "pull loops: units run at once")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "name shown in status")
	fs.Var(&settings, "target-setting", "NAME=VALUE set on every target session, e.g. maintenance_work_mem=1GB (repeatable)")
	fs.Func("maintenance-work-mem", "maintenance_work_mem of target sessions, for index builds and VACUUM (e.g. 1GB)", func(v string) error { return settings.Set("maintenance_work_mem=" + v) })
	fs.Func("max-parallel-maintenance-workers", "max_parallel_maintenance_workers of target sessions: parallel workers per index build", func(v string) error { return settings.Set("max_parallel_maintenance_workers=" + v) })
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "on SIGTERM, how long running units may take to finish before they are given back")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on ADDR (off when empty)")
	fs.StringVar(&cfg.HealthListen, "health-listen", "", "serve the gRPC health service on ADDR (off when empty)")
	securityFlags(fs, &cfg.Security, "client")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.SourceURI, cfg.TargetURI = c.source, c.target
	cfg.Loops = []worker.Loop{{Count: jobs}}
	cfg.TargetSettings = settings
	w, err := worker.New(cfg, c.logger("worker", os.Stderr))
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

func runClone(ctx context.Context, args []string) error {
	var c common
	cfg := fleet.Config{Coordinator: coordinator.DefaultConfig(), Worker: worker.DefaultConfig(), CDC: cdcnode.DefaultConfig(),
		TableJobs: max(2, runtime.NumCPU()), IndexJobs: max(2, runtime.NumCPU())}
	cfg.Coordinator.Listen = "127.0.0.1:0"
	var settings settingFlags
	fs := flag.NewFlagSet("clone", flag.ContinueOnError)
	c.register(fs)
	coordinatorFlags(fs, &cfg.Coordinator)
	fs.IntVar(&cfg.TableJobs, "table-jobs", cfg.TableJobs, "tables copied at once")
	fs.IntVar(&cfg.IndexJobs, "index-jobs", cfg.IndexJobs, "indexes and constraints built at once")
	fs.Var(&settings, "target-setting", "NAME=VALUE set on every target session (repeatable)")
	fs.Func("maintenance-work-mem", "maintenance_work_mem of target sessions, for index builds and VACUUM (e.g. 1GB)", func(v string) error { return settings.Set("maintenance_work_mem=" + v) })
	fs.Func("max-parallel-maintenance-workers", "max_parallel_maintenance_workers of target sessions: parallel workers per index build", func(v string) error { return settings.Set("max_parallel_maintenance_workers=" + v) })
	fs.StringVar(&cfg.CDC.MetricsListen, "cdc-metrics-listen", "", "with --follow: serve the change stream's Prometheus /metrics, /healthz and /readyz on ADDR (off when empty)")
	fs.DurationVar(&cfg.CDC.WedgedAfter, "cdc-wedged-after", cfg.CDC.WedgedAfter, "with --cdc-metrics-listen: /healthz fails once the stream or the progress reports have made no turn for this long")
	quiet := fs.Bool("quiet", false, "no live progress")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.CDC.MetricsListen != "" && !cfg.Coordinator.Follow {
		return usageErr("--cdc-metrics-listen needs --follow: only a live migration has a change stream")
	}
	cfg.Coordinator.SourceURI, cfg.Coordinator.TargetURI = c.source, c.target
	cfg.Worker.SourceURI, cfg.Worker.TargetURI = c.source, c.target
	cfg.Worker.TargetSettings = settings
	if cfg.Coordinator.Plan.CopyJobs == 0 {
		cfg.Coordinator.Plan.CopyJobs = cfg.TableJobs
	}
	cfg.Worker.Security = rpcsec.Config{Token: cfg.Coordinator.Security.Token, CAFile: cfg.Coordinator.Security.CAFile,
		CertFile: cfg.Coordinator.Security.CertFile, KeyFile: cfg.Coordinator.Security.KeyFile}
	if cfg.Coordinator.Dir == "" {
		dir, err := os.MkdirTemp("", "pgcaravan-clone-")
		if err != nil {
			return err
		}
		cfg.Coordinator.Dir = dir
	}
	// Logs go to DIR/pgcaravan.log; warnings and errors also to stderr, so
	// they do not drown the progress view.
	if err := os.MkdirAll(cfg.Coordinator.Dir, 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(cfg.Coordinator.Dir, "pgcaravan.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "clone", Level: hclog.LevelFromString(c.logLevel),
		Output: logFile, JSONFormat: c.logFormat == "json"})
	logger.RegisterSink(hclog.NewSinkAdapter(&hclog.LoggerOptions{Level: hclog.Warn, Output: os.Stderr}))
	if !*quiet {
		cfg.Progress = os.Stderr
		cfg.Interactive = fleet.IsTerminal(os.Stderr)
		cfg.ProgressInterval = time.Second
		if !cfg.Interactive {
			cfg.ProgressInterval = 5 * time.Second
		}
	}
	cfg.OnListen = func(addr string) {
		fmt.Fprintf(os.Stderr, "pgcaravan clone: store and logs in %s\nadmin API: grpcurl -plaintext %s pgcaravan.v1.AdminService/Status\n",
			cfg.Coordinator.Dir, addr)
		if cfg.Coordinator.Follow {
			fmt.Fprintf(os.Stderr, "following changes: once the backfill is done and writes on the source have stopped, run\n  pgcaravan cutover --coordinator %s\n", addr)
		}
	}
	final, err := fleet.Run(ctx, cfg, logger)
	if final != nil {
		fmt.Println()
		report.Summary(os.Stdout, final)
	}
	logs := filepath.Join(cfg.Coordinator.Dir, "pgcaravan.log")
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted: the target is incomplete; start over with --drop-if-exists and a new --dir\nlogs: %s", logs)
	}
	if err != nil {
		return fmt.Errorf("%w\nlogs: %s", err, logs)
	}
	if cfg.Coordinator.Follow {
		fmt.Printf("\nlive migration complete: cut over and cleaned up; status: pgcaravan status --dir %s\n", cfg.Coordinator.Dir)
		return nil
	}
	fmt.Printf("\nclone complete; status: pgcaravan status --dir %s\n", cfg.Coordinator.Dir)
	return nil
}

func runStatus(ctx context.Context, args []string) error {
	var dir, addr string
	var asJSON bool
	var sec rpcsec.Config
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	securityFlags(fs, &sec, "client")
	fs.StringVar(&dir, "dir", "", "read the store in DIR (works after the coordinator has exited)")
	fs.StringVar(&addr, "coordinator", os.Getenv("PGCARAVAN_COORDINATOR"), "ask a running coordinator at ADDR")
	fs.BoolVar(&asJSON, "json", false, "print the AdminService/Status response as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	var s *pb.StatusResponse
	var err error
	switch {
	case addr != "":
		s, err = remoteStatus(ctx, addr, sec)
	case dir != "":
		s, err = coordinator.ReadStatus(dir)
		if err != nil {
			err = fmt.Errorf("%w (while a coordinator runs, use --coordinator ADDR)", err)
		}
	default:
		return usageErr("give --dir DIR or --coordinator ADDR")
	}
	if err != nil {
		return err
	}
	if asJSON {
		out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: false}.Marshal(s)
		if err != nil {
			return err
		}
		fmt.Println(string(out))
		return nil
	}
	report.Status(os.Stdout, s)
	return nil
}

// adminClient dials a coordinator's admin API.
func adminClient(addr string, sec rpcsec.Config) (pb.AdminServiceClient, func(), error) {
	opts, err := rpcsec.DialOptions(sec)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("coordinator %s: %w", addr, err)
	}
	return pb.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

func remoteStatus(ctx context.Context, addr string, sec rpcsec.Config) (*pb.StatusResponse, error) {
	admin, closeConn, err := adminClient(addr, sec)
	if err != nil {
		return nil, err
	}
	defer closeConn()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := admin.Status(cctx, &pb.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("coordinator %s: %w", addr, err)
	}
	return s, nil
}

func runCDCNode(ctx context.Context, args []string) error {
	var c common
	cfg := cdcnode.DefaultConfig()
	fs := flag.NewFlagSet("cdcnode", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&cfg.Coordinator, "coordinator", os.Getenv("PGCARAVAN_COORDINATOR"), "coordinator gRPC address (env PGCARAVAN_COORDINATOR)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the spool (size it for the WAL written during the copy)")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "name shown in logs")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics, and the /healthz and /readyz probes, on ADDR (off when empty)")
	fs.DurationVar(&cfg.WedgedAfter, "wedged-after", cfg.WedgedAfter, "/healthz fails once the stream or the progress reports have made no turn for this long")
	securityFlags(fs, &cfg.Security, "client")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.SourceURI, cfg.TargetURI = c.source, c.target
	n, err := cdcnode.New(cfg, c.logger("cdcnode", os.Stderr))
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

func runCutover(ctx context.Context, args []string) error {
	var addr, endpos string
	var sec rpcsec.Config
	fs := flag.NewFlagSet("cutover", flag.ContinueOnError)
	fs.StringVar(&addr, "coordinator", os.Getenv("PGCARAVAN_COORDINATOR"), "the running coordinator's address")
	fs.StringVar(&endpos, "endpos", "", "apply through this LSN instead of the source's current WAL insert position")
	securityFlags(fs, &sec, "client")
	if err := parse(fs, args); err != nil {
		return err
	}
	if addr == "" {
		return usageErr("give --coordinator ADDR")
	}
	admin, closeConn, err := adminClient(addr, sec)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := admin.Cutover(ctx, &pb.CutoverRequest{Endpos: endpos})
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", addr, err)
	}
	report.Cutover(os.Stdout, resp)
	return nil
}

func runCleanup(ctx context.Context, args []string) error {
	var c common
	var addr, dir string
	var sec rpcsec.Config
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&addr, "coordinator", os.Getenv("PGCARAVAN_COORDINATOR"), "the running coordinator's address")
	fs.StringVar(&dir, "dir", "", "without a running coordinator: the migration's --dir (with --source and --target)")
	securityFlags(fs, &sec, "client")
	if err := parse(fs, args); err != nil {
		return err
	}
	var dropped []string
	switch {
	case addr != "":
		admin, closeConn, err := adminClient(addr, sec)
		if err != nil {
			return err
		}
		defer closeConn()
		resp, err := admin.Cleanup(ctx, &pb.CleanupRequest{})
		if err != nil {
			return fmt.Errorf("coordinator %s: %w", addr, err)
		}
		dropped = resp.GetDropped()
	case dir != "":
		var err error
		if dropped, err = coordinator.CleanupDir(ctx, dir, c.source, c.target); err != nil {
			return err
		}
	default:
		return usageErr("give --coordinator ADDR, or --dir DIR with --source and --target")
	}
	if len(dropped) == 0 {
		fmt.Println("nothing to drop: already clean")
	}
	for _, d := range dropped {
		fmt.Println("dropped", d)
	}
	return nil
}

func runRetry(ctx context.Context, args []string) error {
	var addr string
	var all bool
	var sec rpcsec.Config
	fs := flag.NewFlagSet("retry", flag.ContinueOnError)
	fs.StringVar(&addr, "coordinator", os.Getenv("PGCARAVAN_COORDINATOR"), "the running coordinator's address")
	fs.BoolVar(&all, "all-failed", false, "requeue every failed unit")
	securityFlags(fs, &sec, "client")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &pb.RetryUnitRequest{AllFailed: all}
	for _, a := range fs.Args() {
		id, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return usageErr("unit id %q is not a number", a)
		}
		req.UnitIds = append(req.UnitIds, id)
	}
	if addr == "" || (!all && len(req.UnitIds) == 0) {
		return usageErr("give --coordinator ADDR and unit ids (or --all-failed)")
	}
	admin, closeConn, err := adminClient(addr, sec)
	if err != nil {
		return err
	}
	defer closeConn()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := admin.RetryUnit(cctx, req)
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", addr, err)
	}
	fmt.Printf("requeued %d unit(s): %v\n", len(resp.GetUnitIds()), resp.GetUnitIds())
	return nil
}

func runVerify(ctx context.Context, args []string) error {
	var c common
	var opts verify.Options
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	c.register(fs)
	filterFlags(fs, &opts.Filter)
	fs.BoolVar(&opts.NoComments, "no-comments", false, "do not compare comments (for a clone made with --no-comments)")
	fs.IntVar(&opts.Jobs, "jobs", 2, "ranges compared at a time, each on one session per side")
	fs.StringVar(&opts.Dir, "dir", "", "keep each range's result in DIR/verify.db; a rerun with the same DIR compares again only what was not found equal")
	fs.BoolVar(&opts.Restart, "restart", false, "with --dir: forget the earlier results and compare everything again")
	fs.StringVar(&opts.Snapshot, "snapshot", "", "read the source under this exported snapshot (pg_export_snapshot(), held open by its session)")
	fs.Int64Var(&opts.RangeRows, "verify-range-rows", verify.DefaultRangeRows, "cut tables with an integer key into ranges of about this many rows")
	fs.Int64Var(&opts.LeafRows, "verify-leaf-rows", verify.DefaultLeafRows, "list the keys of a differing range once it has at most this many rows")
	fs.IntVar(&opts.MaxKeys, "max-keys", verify.DefaultMaxKeys, "list at most this many differing keys per table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := opts.Filter.Validate(); err != nil {
		return err
	}
	if opts.Jobs < 1 || opts.RangeRows < 1 || opts.LeafRows < 1 || opts.MaxKeys < 1 {
		return usageErr("--jobs, --verify-range-rows, --verify-leaf-rows and --max-keys must be at least 1")
	}
	if opts.Restart && opts.Dir == "" {
		return usageErr("--restart needs --dir: without it nothing is kept between runs")
	}
	opts.Logger = c.logger("verify", os.Stderr)
	rep, err := verify.Compare(ctx, c.source, c.target, opts)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	if !rep.OK() {
		return fmt.Errorf("verify: %d difference(s) between source and target", len(rep.Problems()))
	}
	return nil
}

// settingFlags collects NAME=VALUE flags.
type settingFlags map[string]string

func (s *settingFlags) String() string { return fmt.Sprint(map[string]string(*s)) }

func (s *settingFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", v)
	}
	if *s == nil {
		*s = map[string]string{}
	}
	(*s)[name] = value
	return nil
}
