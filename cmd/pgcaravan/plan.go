package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/report"
)

// filterFlags registers --filters FILE and the single-entry filter flags;
// every use adds to *f. Conflicts are checked once all flags are parsed
// (coordinator.Config.Validate, coordinator.DryRun).
func filterFlags(fs *flag.FlagSet, f **filter.Filter) {
	get := func() *filter.Filter {
		if *f == nil {
			*f = &filter.Filter{}
		}
		return *f
	}
	fs.Func("filters", "pgcopydb-style filter file: [include-only-schema], [exclude-schema], [include-only-table], [exclude-table], [exclude-index], [exclude-table-data], [exclude-extension] sections, one name a line (repeatable)", func(path string) error {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("filters: %w", err)
		}
		parsed, err := filter.Parse(path, data)
		if err != nil {
			return err
		}
		get().Merge(parsed)
		return nil
	})
	for _, fl := range []struct{ name, section, usage string }{
		{"table", filter.SectionIncludeOnlyTable, "copy only this table, schema.name (repeatable; like [include-only-table])"},
		{"exclude-table", filter.SectionExcludeTable, "leave out this table, schema.name, and what depends on it (repeatable; like [exclude-table])"},
		{"exclude-schema", filter.SectionExcludeSchema, "leave out this schema and what depends on it (repeatable; like [exclude-schema])"},
		{"exclude-table-data", filter.SectionExcludeTableData, "create this table, schema.name, but copy none of its rows (repeatable; like [exclude-table-data])"},
	} {
		fs.Func(fl.name, fl.usage, func(v string) error {
			if err := get().AddFlag(fl.section, v); err != nil {
				return fmt.Errorf("--%s %q: %w", fl.name, v, err)
			}
			return nil
		})
	}
}

// runPlan prints what a clone would do, writing nothing anywhere.
func runPlan(ctx context.Context, args []string) error {
	var c common
	cfg := coordinator.DefaultConfig()
	var asJSON, listSkipped bool
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	c.register(fs)
	// Only what goes wrong is logged: the plan is the output.
	_ = fs.Set("log-level", "warn")
	fs.Lookup("log-level").DefValue = "warn"
	// The planning flags are clone's (--filters, --split-tables-larger-than,
	// --copy-format, --no-owner, ...); --dir, --listen and the lease and
	// security flags are accepted and ignored.
	coordinatorFlags(fs, &cfg)
	fs.BoolVar(&asJSON, "json", false, "write the plan as JSON")
	fs.BoolVar(&listSkipped, "list-skipped", false, "list every object left out, with the reason (otherwise only how many)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.source == "" || c.target == "" {
		return usageErr("give --source URI and --target URI")
	}
	cfg.SourceURI, cfg.TargetURI = c.source, c.target
	if cfg.Plan.CopyJobs == 0 {
		cfg.Plan.CopyJobs = max(2, runtime.NumCPU()) // what clone's --table-jobs defaults to
	}
	res, err := coordinator.DryRun(ctx, cfg, c.logger("plan", os.Stderr))
	if err != nil {
		return err
	}
	if asJSON {
		return writePlanJSON(os.Stdout, res, listSkipped)
	}
	printPlan(os.Stdout, res, listSkipped)
	return nil
}

// planTable is one table of `pgcaravan plan` output.
type planTable struct {
	Schema  string `json:"schema"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	EstRows int64  `json:"est_rows"`
	Bytes   int64  `json:"bytes"`
	// Copy is "whole", "split" (several units), "no data"
	// ([exclude-table-data]) or "none" (no rows of its own).
	Copy        string `json:"copy"`
	CopyUnits   int    `json:"copy_units"`
	Indexes     int    `json:"indexes"`
	Constraints int    `json:"constraints"`
}

// planJSON is what `pgcaravan plan --json` writes.
type planJSON struct {
	Source       store.Identity   `json:"source"`
	Target       store.Identity   `json:"target"`
	Filters      *filter.Filter   `json:"filters,omitempty"`
	Tables       []planTable      `json:"tables"`
	Units        []plan.Unit      `json:"units"`
	SkippedCount int              `json:"skipped_count"`
	Skipped      []string         `json:"skipped,omitempty"`
	Warnings     []string         `json:"warnings,omitempty"`
	Totals       map[string]int64 `json:"totals"`
}

func planTables(p plan.Plan) []planTable {
	copies := map[uint32]int{}
	indexes := map[uint32]int{}
	constraints := map[uint32]int{}
	for _, u := range p.Units {
		switch u.Kind {
		case plan.KindCopy:
			copies[u.TableOID]++
		case plan.KindIndex:
			indexes[u.TableOID]++
		case plan.KindConstraint, plan.KindForeignKey:
			constraints[u.TableOID]++
		}
	}
	out := make([]planTable, 0, len(p.Tables))
	for _, t := range p.Tables {
		pt := planTable{Schema: t.Schema, Name: t.Name, Kind: relKind(t), EstRows: t.EstRows, Bytes: t.Bytes,
			CopyUnits: copies[t.OID], Indexes: indexes[t.OID], Constraints: constraints[t.OID]}
		switch {
		case t.HasData() && t.NoData:
			pt.Copy = "no data"
		case copies[t.OID] > 1:
			pt.Copy = "split"
		case copies[t.OID] == 1:
			pt.Copy = "whole"
		default:
			pt.Copy = "none"
		}
		out = append(out, pt)
	}
	return out
}

func relKind(t plan.Table) string {
	switch {
	case t.ParentOID != 0:
		return "partition"
	case t.RelKind == "p":
		return "partitioned"
	case t.RelKind == "m":
		return "matview"
	case t.RelKind == "f":
		return "foreign"
	}
	return "table"
}

func writePlanJSON(w io.Writer, res *coordinator.DryRunResult, listSkipped bool) error {
	out := planJSON{Source: res.Source, Target: res.Target, Filters: res.Filters, Tables: planTables(res.Plan),
		Units: res.Plan.Units, SkippedCount: len(res.Plan.Skipped), Warnings: res.Warnings, Totals: map[string]int64{}}
	if listSkipped {
		out.Skipped = res.Plan.Skipped
	}
	for _, t := range out.Tables {
		out.Totals["tables"]++
		if t.Copy == "whole" || t.Copy == "split" {
			out.Totals["bytes_to_copy"] += t.Bytes
			out.Totals["rows_to_copy"] += t.EstRows
		}
	}
	out.Totals["units"] = int64(len(res.Plan.Units))
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func printPlan(w io.Writer, res *coordinator.DryRunResult, listSkipped bool) {
	fmt.Fprintf(w, "source: database %q, PostgreSQL %d.%d, system %s\n", res.Source.Database, res.Source.ServerVersion/10000, res.Source.ServerVersion%10000, res.Source.SystemID)
	fmt.Fprintf(w, "target: database %q, PostgreSQL %d.%d, system %s\n\n", res.Target.Database, res.Target.ServerVersion/10000, res.Target.ServerVersion%10000, res.Target.SystemID)

	tables := planTables(res.Plan)
	var bytes, rows int64
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "TABLE\tKIND\tEST ROWS\tSIZE\tCOPY\tINDEXES\tCONSTRAINTS\n")
	for _, t := range tables {
		cp := t.Copy
		if t.Copy == "split" {
			cp = fmt.Sprintf("split in %d", t.CopyUnits)
		}
		if t.Copy == "whole" || t.Copy == "split" {
			bytes += t.Bytes
			rows += t.EstRows
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\n", filter.Name{Schema: t.Schema, Name: t.Name}, t.Kind, t.EstRows,
			report.Bytes(t.Bytes), cp, t.Indexes, t.Constraints)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d tables; about %d rows, %s to copy\n\n", len(tables), rows, report.Bytes(bytes))

	fmt.Fprintf(w, "%d units:\n", len(res.Plan.Units))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tKIND\tTABLE\tWHAT\tSIZE\tAFTER\n")
	for _, u := range res.Plan.Units {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Kind, u.Table, unitWhat(u), report.Bytes(u.Size), deps(u.DependsOn))
	}
	tw.Flush()

	fmt.Fprintf(w, "\n%d objects skipped", len(res.Plan.Skipped))
	if listSkipped {
		fmt.Fprintln(w, ":")
		for _, s := range res.Plan.Skipped {
			fmt.Fprintf(w, "  %s\n", s)
		}
	} else if len(res.Plan.Skipped) > 0 {
		fmt.Fprintln(w, " (--list-skipped lists them with the reason)")
	} else {
		fmt.Fprintln(w)
	}
	for _, warn := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// unitWhat describes a unit, with the range a part of a split table copies.
func unitWhat(u plan.Unit) string {
	if u.Copy == nil {
		return u.Description
	}
	cp := u.Copy
	switch {
	case cp.Key != nil:
		lo, hi := "-inf", "+inf"
		if !cp.Key.LowerUnbounded {
			lo = fmt.Sprint(cp.Key.Lower)
		}
		if !cp.Key.UpperUnbounded {
			hi = fmt.Sprint(cp.Key.Upper)
		}
		return fmt.Sprintf("%s in [%s, %s) %s", cp.Key.Column, lo, hi, cp.Format)
	case cp.StartBlock != 0 || cp.EndBlock != 0:
		end := "end"
		if cp.EndBlock != 0 {
			end = fmt.Sprintf("(%d,0)", cp.EndBlock)
		}
		return fmt.Sprintf("ctid [(%d,0), %s) %s", cp.StartBlock, end, cp.Format)
	}
	return u.Description + " " + string(cp.Format)
}

func deps(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	parts := make([]string, 0, min(len(ids), 6))
	for i, id := range ids {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("… (%d)", len(ids)))
			break
		}
		parts = append(parts, fmt.Sprint(id))
	}
	return strings.Join(parts, ",")
}
