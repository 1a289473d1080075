package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// heavyLoad is the one-minute load average above which the benchmark warns that other
// work will skew its numbers.
const heavyLoad = 1.0

// bench runs everything; every deferred teardown runs however it ends. ok is false when
// a copy that must work (any but pgcopydb's) failed or did not verify.
func bench(ctx context.Context, cfg config) (ok bool, err error) {
	res := &Results{Preset: cfg.preset, StartedAt: time.Now().UTC(), Settings: cfg.settings, Jobs: cfg.jobs,
		Tools: map[string]string{}}

	// 1. Tools: the PostgreSQL clients, pgcaravan, and pgcopydb (installed if missing).
	t, err := findTools(cfg.bin)
	if err != nil {
		return false, err
	}
	if wantsMethod(cfg, methodPgcopydb) || cfg.apply {
		t.ensurePgcopydb(ctx, cfg.installPgcopy, progress)
		if t.pgcopydbMissing != "" {
			res.Notes = append(res.Notes, t.pgcopydbMissing)
			progress("%s; skipping pgcopydb", t.pgcopydbMissing)
		}
	}
	for name, path := range map[string]string{"psql": t.psql, "pg_dump": t.pgDump, "pgbench": t.pgbench, "pgcopydb": t.pgcopydb} {
		if v := version(ctx, path); v != "" {
			res.Tools[name] = v
		}
	}
	res.Tools["pgcaravan"] = gitDescribe(ctx)

	res.Machine = describeMachine(os.TempDir())
	if l := res.Machine.LoadAtStart; l > heavyLoad {
		progress("warning: the load average is %.2f; other work on this machine will skew the numbers", l)
	}

	// 2. A work directory for logs and dumps: kept when something failed.
	work, err := os.MkdirTemp("", "pgcaravan-bench-")
	if err != nil {
		return false, fmt.Errorf("create the work directory: %w", err)
	}
	keep := cfg.keepLogs
	defer func() {
		if keep || !ok {
			fmt.Fprintf(os.Stderr, "bench: logs kept in %s\n", work)
			return
		}
		if err := os.RemoveAll(work); err != nil {
			fmt.Fprintf(os.Stderr, "bench: remove %s: %v\n", work, err)
		}
	}()

	// 3. Two clusters with the same settings.
	var clusters [2]*pgtest.Cluster
	for i, role := range []string{"source", "target"} {
		step("starting the %s cluster", role)
		c, err := pgtest.New(ctx, pgtest.Options{Durable: true, Settings: cfg.settings, Logf: progress})
		if err != nil {
			return false, fmt.Errorf("start the %s cluster: %w", role, err)
		}
		defer func() {
			if err := c.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "bench: stop the %s cluster: %v\n", role, err)
			}
		}()
		clusters[i] = c
	}
	src, tgt := clusters[0], clusters[1]
	if res.Machine.PostgresVersion, err = serverVersion(ctx, src.URI("postgres")); err != nil {
		return false, fmt.Errorf("source cluster: %w", err)
	}

	// pgcopydb's follow decodes with wal2json, a plugin of the source server.
	if cfg.apply && t.pgcopydbMissing == "" {
		t.ensureWal2json(ctx, src.URI("postgres"), cfg.installPgcopy, progress)
		if t.wal2jsonMissing != "" {
			progress("%s; skipping pgcopydb follow", t.wal2jsonMissing)
		}
	}

	// 4. The datasets, on the source.
	for _, name := range cfg.datasets {
		step("generating dataset %s", name)
		d, err := generate(ctx, src, t, name, cfg.sizes, work)
		if err != nil {
			return false, fmt.Errorf("generate dataset %s: %w", name, err)
		}
		progress("%s: %d rows, tables %s, indexes %s, in %.1f s", d.Description, d.Rows, mb(d.DataBytes), mb(d.IndexBytes), d.GenerateSeconds)
		res.Datasets = append(res.Datasets, d)
	}

	// 5. Every method on every dataset, one copy at a time.
	ok = true
	for _, d := range res.Datasets {
		for _, m := range cfg.methods {
			if !runsOn(d.Name, m.key) {
				continue
			}
			if m.key == methodPgcopydb && t.pgcopydbMissing != "" {
				res.Runs = append(res.Runs, Summary{Dataset: d.Name, Method: m.key, Label: methodLabel(m.key, cfg.jobs), Skipped: t.pgcopydbMissing})
				continue
			}
			var runs []Run
			for i := 1; i <= cfg.runs; i++ {
				step("%s: %s (run %d of %d)", d.Name, methodLabel(m.key, cfg.jobs), i, cfg.runs)
				r, err := copyOnce(ctx, cfg, t, src, tgt, d, m, filepath.Join(work, d.Name, fmt.Sprintf("%s-%d", m.key, i)))
				if err != nil {
					return false, err // the harness itself failed: no point going on
				}
				runs = append(runs, r)
				switch {
				case r.Error != "":
					progress("FAILED after %.1f s: %s", r.WallSeconds, r.Error)
				case !r.Verified:
					progress("%.1f s, but the target DIFFERS from the source (see %s)", r.WallSeconds, r.Log)
				default:
					progress("%.1f s, verified in %.1f s", r.WallSeconds, r.VerifySeconds)
				}
			}
			s := summarize(d.Name, m.key, runs, d.DataBytes, res.Machine.Cores)
			s.Label = methodLabel(m.key, cfg.jobs)
			if s.OK() && d.LargeObjects > 0 && s.WallSeconds > 0 {
				s.LargeObjectsPerSecond = float64(d.LargeObjects) / s.WallSeconds
			}
			if !s.OK() {
				keep = true // for pgcopydb's too, though it does not fail the benchmark
				if m.key != methodPgcopydb {
					ok = false
				}
			}
			res.Runs = append(res.Runs, s)
		}
	}
	addRatios(res.Runs)

	// 6. The apply benchmark, on a pgbench database of its own.
	if cfg.apply {
		res.ApplySizes = &cfg.applySizes
		if res.Apply, err = applyBench(ctx, t, src, tgt, cfg.applySizes, work); err != nil {
			return false, fmt.Errorf("apply benchmark: %w", err)
		}
		for _, a := range res.Apply {
			if a.Method == applyPgcaravan && (a.Error != "" || !a.Verified) {
				ok, keep = false, true
			}
		}
	}
	res.FinishedAt = time.Now().UTC()
	res.Machine.LoadAtEnd = load1()

	// 7. The table, on stdout and next to the JSON.
	var table bytes.Buffer
	fmt.Fprintf(&table, "%s: %s; %d cores, %s; %s\n", res.Preset, res.StartedAt.Format(time.RFC3339), res.Machine.Cores,
		gib(res.Machine.MemoryBytes), firstField(res.Machine.PostgresVersion, 2))
	for _, d := range res.Datasets {
		fmt.Fprintf(&table, "  dataset %s: %s; tables %s, indexes %s\n", d.Name, d.Description, mb(d.DataBytes), mb(d.IndexBytes))
	}
	for _, m := range cfg.methods {
		if slices.ContainsFunc(cfg.datasets, func(d string) bool { return runsOn(d, m.key) }) {
			fmt.Fprintf(&table, "  %s: %s\n", methodLabel(m.key, cfg.jobs), legend(m, cfg.jobs))
		}
	}
	fmt.Fprintf(&table, "  load average: %.2f at start, %.2f at end\n\n", res.Machine.LoadAtStart, res.Machine.LoadAtEnd)
	if len(res.Runs) > 0 {
		printTable(&table, res)
	}
	if res.ApplySizes != nil {
		var b strings.Builder
		printApply(&b, *res.ApplySizes, res.Apply)
		table.WriteString(b.String())
	}
	fmt.Print("\n" + table.String())
	if err := writeJSON(cfg.jsonPath, res); err != nil {
		return false, err
	}
	txt := strings.TrimSuffix(cfg.jsonPath, ".json") + ".txt"
	if err := os.WriteFile(txt, table.Bytes(), 0o644); err != nil {
		return false, fmt.Errorf("write results: %w", err)
	}
	fmt.Printf("\nresults: %s and %s\n", cfg.jsonPath, txt)
	return ok, nil
}

// copyOnce copies dataset d with method m into a fresh target database, verifies it, and
// drops it. A failed copy or verification is in the returned Run; an error means the
// harness itself could not go on (a cluster is gone, the context is done).
func copyOnce(ctx context.Context, cfg config, t tools, src, tgt *pgtest.Cluster, d Dataset, m method, dir string) (Run, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Run{}, err
	}
	dbname := d.Name + "_" + m.key
	if err := tgt.CreateDatabase(ctx, dbname); err != nil {
		return Run{}, err
	}
	defer func() {
		// FORCE: a failed tool may have left sessions behind.
		dropCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tgt.Exec(dropCtx, "postgres", "DROP DATABASE "+pgx.Identifier{dbname}.Sanitize()+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop target database %s: %v\n", dbname, err)
		}
	}()
	// Start each copy from the same state: no dirty buffers left by the last one.
	for _, c := range []*pgtest.Cluster{src, tgt} {
		if err := c.Exec(ctx, "postgres", "CHECKPOINT"); err != nil {
			return Run{}, err
		}
	}

	copyCtx, cancel := context.WithTimeout(ctx, cfg.copyTimeout)
	defer cancel()
	meterCtx, stopMeter := context.WithCancel(copyCtx)
	meter := newCPUMeter(cfg.sampleInterval, numCPU())
	meterDone := make(chan struct{})
	go func() {
		defer close(meterDone)
		meter.run(meterCtx)
	}()
	r := &copyRun{ctx: copyCtx, src: src.URI(d.Name), tgt: tgt.URI(dbname), dir: dir, tools: t, jobs: cfg.jobs,
		dataset: d, meter: meter, steps: map[string]float64{}}
	run := Run{Load1AtStart: load1(), Log: dir}
	start := time.Now()
	copyErr := m.run(r)
	run.WallSeconds = time.Since(start).Seconds()
	stopMeter()
	<-meterDone
	if ctx.Err() != nil {
		return run, ctx.Err()
	}
	if copyErr != nil && copyCtx.Err() != nil {
		copyErr = fmt.Errorf("not done within -timeout %s: %w", cfg.copyTimeout, copyErr)
	}
	if len(r.steps) > 0 {
		run.Steps = r.steps
	}
	run.ClientCPUSeconds = r.cpuAll.Total.Seconds()
	if isPgcaravan(m.key) {
		run.PgcaravanCPUSeconds = r.cpuCaravan.Own.Seconds()
		run.HelperCPUSeconds = (r.cpuCaravan.Total - r.cpuCaravan.Own).Seconds()
		run.PgcaravanPeakShare = meter.peakShare()
	}
	if copyErr != nil {
		run.Error = copyErr.Error()
		return run, nil
	}

	// Verification is not timed: every table's row count and checksum, and every
	// definition, by pgcaravan's verifier.
	vstart := time.Now()
	g := newGroup(ctx, nil)
	g.command("pgcaravan verify", filepath.Join(dir, "verify.log"), t.pgcaravan, "verify",
		"--source", src.URI(d.Name), "--target", tgt.URI(dbname))
	verr := g.run()
	run.VerifySeconds = time.Since(vstart).Seconds()
	if ctx.Err() != nil {
		return run, ctx.Err()
	}
	switch {
	case verr == nil:
		run.Verified = true
	case strings.Contains(verr.Error(), "difference(s) between source and target"):
		// Verified stays false: the table says DIFFERS.
	default:
		run.Error = "verify could not compare the databases: " + verr.Error()
	}
	return run, nil
}

func wantsMethod(cfg config, key string) bool {
	for _, m := range cfg.methods {
		if m.key == key {
			return true
		}
	}
	return false
}

// legend describes a method with the job counts filled in.
func legend(m method, j JobCounts) string {
	r := strings.NewReplacer("--table-jobs J", fmt.Sprintf("--table-jobs %d", j.TableJobs),
		"--index-jobs J", fmt.Sprintf("--index-jobs %d", j.IndexJobs),
		" W ", fmt.Sprintf(" %d ", j.Workers), "--jobs WJ", fmt.Sprintf("--jobs %d", j.WorkerJobs))
	return r.Replace(m.desc)
}

// step announces what the benchmark does next; progress reports on it.
func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\n==> "+format+"\n", args...)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "    "+format+"\n", args...)
}

func mb(b int64) string  { return fmt.Sprintf("%.0f MB", float64(b)/1e6) }
func gib(b int64) string { return fmt.Sprintf("%.1f GiB RAM", float64(b)/(1<<30)) }

// firstField returns the first n space-separated words of s ("PostgreSQL 15.14").
func firstField(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}
