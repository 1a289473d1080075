// Package precheck checks a source and a target for what a migration
// needs before anything is created: connectivity and versions, what
// --follow needs, keys, long transactions, timeouts, extensions, roles, an
// empty target, sizes and WAL, and leftover replication slots. Each check
// says PASS, WARN or FAIL and what to do. It only reads: it creates
// nothing on either side, and it never imports package coordinator (the
// coordinator hands it its own checks as Hooks, so the two never disagree).
package precheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// ErrConfig means the configuration cannot run.
var ErrConfig = errors.New("precheck: invalid configuration")

// Level is a check's outcome.
type Level int

// The levels, in increasing severity.
const (
	Pass Level = iota + 1
	Warn
	Fail
)

func (l Level) String() string {
	switch l {
	case Pass:
		return "PASS"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return "UNKNOWN"
}

// Check is the outcome of one check.
type Check struct {
	// Name is stable and snake_case ("follow", "inactive_slots").
	Name  string
	Level Level
	// Message says what was found, naming the objects.
	Message string
	// Hint says what to do; empty on Pass.
	Hint string
}

// Forecast is the arithmetic behind the size checks.
type Forecast struct {
	// DataBytes is tables, TOAST, indexes and large objects on the source.
	DataBytes int64
	// WALBytesPerSecond is the source's WAL write rate over WALSample.
	WALBytesPerSecond float64
	WALSample         time.Duration
	// AssumedCopyRate is Options.CopyRate: assumed, not measured.
	AssumedCopyRate int64
	// EstimatedCopy is DataBytes / AssumedCopyRate.
	EstimatedCopy time.Duration
	// EstimatedWALBytes is the WAL written during EstimatedCopy: what the
	// cdcnode spools with --follow.
	EstimatedWALBytes int64
}

// Report is every check, in the order they ran.
type Report struct {
	Checks   []Check
	Forecast Forecast
}

// Failed says whether any check is Fail.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Level == Fail {
			return true
		}
	}
	return false
}

// Check returns the check called name, and whether it ran.
func (r Report) Check(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Options are what a precheck checks for, apart from where the databases
// are (so the coordinator's admin API can take them from a request).
type Options struct {
	// Follow adds the checks --follow needs and judges keys for it.
	Follow bool
	// ReplicaIdentityFull is the migration's --replica-identity-full.
	ReplicaIdentityFull bool
	// NoOwner and NoACL are the migration's --no-owner and --no-acl: roles
	// missing on the target then matter less.
	NoOwner, NoACL bool
	// Roles is the migration's --roles: roles missing on the target are
	// made from the source's first, so they are not a problem.
	Roles bool
	// DropIfExists is the migration's --drop-if-exists: objects on the
	// target that the clone creates are dropped instead of refused.
	DropIfExists bool
	// Running says the migration is already under way (the coordinator's
	// admin API): the target holds its objects, so emptiness is not judged.
	Running bool
	// LongTransaction is the age from which an open transaction is reported.
	LongTransaction time.Duration
	// WALSample is how long the source's WAL write rate is sampled.
	WALSample time.Duration
	// CopyRate is the copy throughput, in bytes per second, that the
	// forecast assumes.
	CopyRate int64
}

// Hooks are the coordinator's own checks, which the precheck runs rather
// than restating them. Package coordinator fills them in (see
// coordinator.Precheck); this package must not import it.
type Hooks struct {
	// FollowCheck checks what logical decoding needs on the source and
	// returns one error listing every problem.
	FollowCheck func(ctx context.Context, conn *pgx.Conn, src pguri.URI) error
	// PgDumpCheck refuses a pg_dump older than the source server.
	PgDumpCheck func(ctx context.Context, pgDump string, serverVersion int) error
}

// Config is one precheck's configuration.
type Config struct {
	SourceURI string
	TargetURI string
	Options
	Hooks
}

// DefaultConfig is the configuration the CLI starts from.
func DefaultConfig() Config {
	return Config{Options: Options{
		LongTransaction: 5 * time.Minute,
		WALSample:       5 * time.Second,
		CopyRate:        50 << 20,
	}}
}

// Validate checks the configuration and says what to fix.
func (c Config) Validate() error {
	var problems []string
	if c.LongTransaction <= 0 {
		problems = append(problems, fmt.Sprintf("the long-transaction threshold must be positive, not %s", c.LongTransaction))
	}
	if c.WALSample <= 0 {
		problems = append(problems, fmt.Sprintf("the WAL sample duration must be positive, not %s", c.WALSample))
	}
	if c.CopyRate <= 0 {
		problems = append(problems, fmt.Sprintf("the assumed copy rate must be positive, not %d bytes/s", c.CopyRate))
	}
	if c.Hooks.FollowCheck == nil || c.Hooks.PgDumpCheck == nil {
		problems = append(problems, "the coordinator's checks are not set (call coordinator.Precheck, not precheck.Run)")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

// Run connects to both sides and runs every check. A side that cannot be
// reached is a Fail, and the checks that need it do not run. The error is
// only for a configuration that cannot run or a cancelled context.
func Run(ctx context.Context, cfg Config, logger hclog.Logger) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	src, dst, err := pguri.ParsePair(cfg.SourceURI, cfg.TargetURI)
	if err != nil {
		return Report{}, err
	}
	r := &run{cfg: cfg, log: logger.Named("precheck"), src: src, dst: dst}
	defer r.close()
	r.steps(ctx)
	if err := ctx.Err(); err != nil {
		return r.report, err
	}
	return r.report, nil
}

// run is one precheck in progress.
type run struct {
	cfg      Config
	log      hclog.Logger
	src, dst pguri.URI
	// Set by the connection checks; nil when a side could not be reached.
	srcConn, dstConn *pgx.Conn
	srcInfo, dstInfo server
	report           Report
}

func (r *run) add(c Check) {
	r.report.Checks = append(r.report.Checks, c)
	r.log.Debug("check done", "check", c.Name, "level", c.Level.String())
}

// failed records a check that could not run because a query failed.
func (r *run) failed(name string, u pguri.URI, what string, err error) {
	r.add(Check{Name: name, Level: Fail,
		Message: fmt.Sprintf("%s %s: %s: %s", u.Role(), u, what, pguri.RedactError(err, u)),
		Hint:    "check that the role may read the catalogs, then run precheck again"})
}

func (r *run) close() {
	for _, c := range []*pgx.Conn{r.srcConn, r.dstConn} {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}
}

// steps runs the checks in the order a person reads them: can we connect,
// can we follow, what would go wrong, how big is it, what is left over.
func (r *run) steps(ctx context.Context) {
	// 1. Connectivity and versions.
	r.connect(ctx)
	if r.srcConn != nil && r.dstConn != nil {
		r.sameDatabase()
		r.versions()
	}
	if r.srcConn != nil {
		r.pgDump(ctx)
	}
	// 2. What --follow needs.
	if r.srcConn != nil && r.cfg.Follow {
		r.follow(ctx)
	}
	// 3. What would break the copy, or the source's application.
	if r.srcConn != nil {
		r.replicaIdentity(ctx)
		if r.cfg.Follow {
			r.unlogged(ctx)
		}
		r.longTransactions(ctx)
		r.timeouts(ctx, "source_timeouts", r.src)
	}
	if r.dstConn != nil {
		r.timeouts(ctx, "target_timeouts", r.dst)
	}
	if r.srcConn != nil && r.dstConn != nil {
		r.extensions(ctx)
		r.tablespaces(ctx)
		r.roles(ctx)
		r.targetEmpty(ctx)
	}
	// 4. The forecast: size against space, WAL during the copy.
	if r.srcConn != nil {
		r.forecast(ctx)
	}
	// 5. What earlier runs left behind.
	if r.srcConn != nil {
		r.inactiveSlots(ctx)
	}
}
