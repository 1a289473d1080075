package coordinator

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// DryRunResult is what a clone would do.
type DryRunResult struct {
	Source store.Identity `json:"source"`
	Target store.Identity `json:"target"`
	// Plan is the plan the clone would run: tables, units (with their
	// CTID or key ranges and SQL) and what is skipped and why.
	Plan     plan.Plan      `json:"plan"`
	Filters  *filter.Filter `json:"filters,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`
	Timings  []store.Timing `json:"timings,omitempty"`
}

// DryRun plans the clone cfg describes without writing to either side: it
// runs the read-only part of setup (identify both sides, a REPEATABLE READ
// READ ONLY snapshot on the source, the catalog, pg_dump --schema-only into a
// temporary directory, the filters, the plan) and reports what a target
// that already has objects the clone would create as a warning. It creates
// no publication or slot, even with Follow, and keeps no store.
func DryRun(ctx context.Context, cfg Config, logger hclog.Logger) (*DryRunResult, error) {
	if err := cfg.Filter.Validate(); err != nil {
		return nil, err
	}
	src, dst, err := pguri.ParsePair(cfg.SourceURI, cfg.TargetURI)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgcaravan-plan-")
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir
	cfg.Plan.NoOwner, cfg.Plan.NoACL = cfg.NoOwner, cfg.NoACL
	c := &Coordinator{cfg: cfg, log: logger, src: src, dst: dst}
	snap, p, err := c.schemaPhase(ctx, nil, nil)
	if snap != nil {
		defer snap.release(context.Background())
	}
	if err != nil {
		return nil, err
	}
	return &DryRunResult{Source: p.meta.Source, Target: p.meta.Target, Plan: p.plan, Filters: p.meta.Filters,
		Warnings: p.meta.Warnings, Timings: p.meta.Timings}, nil
}
