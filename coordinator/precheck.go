package coordinator

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/pgcaravan/pgcaravan/coordinator/precheck"
)

// Precheck runs the prechecks with the coordinator's own checks of --follow
// and of pg_dump's version, so precheck reports exactly what the setup
// would refuse.
func Precheck(ctx context.Context, cfg precheck.Config, logger hclog.Logger) (precheck.Report, error) {
	cfg.Hooks = precheck.Hooks{FollowCheck: checkFollow, PgDumpCheck: checkPgDumpVersion}
	return precheck.Run(ctx, cfg, logger)
}

// Precheck implements rpcserver.Controller: the prechecks against this
// coordinator's own source and target, with its options. Zero durations in
// o take the defaults; o.Follow adds the --follow checks.
func (c *Coordinator) Precheck(ctx context.Context, o precheck.Options) (precheck.Report, error) {
	cfg := precheck.DefaultConfig()
	cfg.SourceURI, cfg.TargetURI = c.cfg.SourceURI, c.cfg.TargetURI
	cfg.Follow = o.Follow || c.cfg.Follow
	cfg.ReplicaIdentityFull = c.cfg.ReplicaIdentityFull
	cfg.NoOwner, cfg.NoACL, cfg.DropIfExists = c.cfg.NoOwner, c.cfg.NoACL, c.cfg.DropIfExists
	cfg.Roles = c.cfg.Roles
	cfg.Running = true
	if o.LongTransaction > 0 {
		cfg.LongTransaction = o.LongTransaction
	}
	if o.WALSample > 0 {
		cfg.WALSample = o.WALSample
	}
	return Precheck(ctx, cfg, c.log)
}
