// Command bench is what `make bench` and `make bench-quick` run: it measures pgcaravan
// against the physical reference (one binary COPY stream per table through psql), pg_dump
// piped into psql, and pgcopydb, on the same machine, in one invocation.
//
// It starts two throwaway clusters with identical settings and the durability defaults
// kept (fsync and synchronous_commit on), generates the datasets on the source, then
// copies each dataset with each method, one after another, into a fresh target database,
// verifies every copy with `pgcaravan verify` (row counts and checksums of every table,
// and every definition), and prints a table of wall time, MB/s and ratios, also written
// as JSON. It measures the CPU of pgcaravan's own processes during their copies.
//
// bench drives every tool from the outside, as a user would: it runs the pgcaravan binary
// and must not import the copy path (coordinator, worker, fleet). It must not leave
// clusters behind, on Ctrl-C either, and keeps its logs only when something failed (or
// with -keep-logs).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// The presets' dataset sizes. The lobs dataset stops at 30,000 small large objects:
// pg_dump | psql makes several round trips per object and took 141 s for 100,000 on the
// 2-core development machine, longer than any other copy of `make bench`.
var (
	fullSizes  = sizes{PgbenchScale: 100, MixedRows: 2_000_000, NoPKRows: 1_000_000, SmallLobs: 30_000}
	quickSizes = sizes{PgbenchScale: 5, MixedRows: 200_000, NoPKRows: 100_000, SmallLobs: 10_000}
)

// clusterSettings are given to both clusters on top of pgtest's defaults, which keep
// fsync and synchronous_commit on when Durable is set. WAL and checkpoints are sized for
// bulk loads, as one would for a migration; maintenance_work_mem is what pgcopydb sets
// on its own sessions, so every method builds indexes with the same memory.
// max_locks_per_transaction is for pgcopydb 0.10, whose pre-data pg_restore runs in one
// transaction that locks every large object it creates: with the default 64 it fails
// ("out of shared memory") past about 10,000 large objects.
var clusterSettings = map[string]string{
	"shared_buffers":            "1GB",
	"max_wal_size":              "8GB",
	"checkpoint_timeout":        "30min",
	"maintenance_work_mem":      "1GB",
	"max_locks_per_transaction": "1024",
}

// config is what the flags decide.
type config struct {
	preset         string
	bin            string
	sizes          sizes
	datasets       []string
	methods        []method
	jobs           JobCounts
	runs           int
	jsonPath       string
	installPgcopy  bool
	keepLogs       bool
	copyTimeout    time.Duration
	settings       map[string]string
	sampleInterval time.Duration
	// apply runs the apply benchmark after the copies (applySizes its sizes).
	apply      bool
	applySizes applySizes
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := bench(ctx, cfg)
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted; clusters removed")
		return exitFail
	case err != nil:
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return exitFail
	case !ok:
		return exitFail
	}
	return exitOK
}

func parseFlags(args []string) (config, error) {
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fl.Bool("quick", false, fmt.Sprintf("small datasets for development (pgbench -s %d, %d mixed rows, %d rows without key, %d small large objects): a few minutes",
		quickSizes.PgbenchScale, quickSizes.MixedRows, quickSizes.NoPKRows, quickSizes.SmallLobs))
	bin := fl.String("bin", "./bin/pgcaravan", "the pgcaravan binary (build it with make build)")
	scale := fl.Int("scale", fullSizes.PgbenchScale, "pgbench scale factor")
	mixedRows := fl.Int("mixed-rows", fullSizes.MixedRows, "rows of the mixed-types table")
	noPKRows := fl.Int("nopk-rows", fullSizes.NoPKRows, "rows of the table without primary key")
	smallLobs := fl.Int("lobs", fullSizes.SmallLobs, fmt.Sprintf("small large objects of the lobs dataset (it also has %d of %d MB)", bigLobs, bigLobMB))
	datasets := fl.String("datasets", strings.Join(allDatasets, ","), "datasets to run, comma-separated")
	var keys []string
	for _, m := range allMethods {
		keys = append(keys, m.key)
	}
	methods := fl.String("methods", strings.Join(keys, ","), "methods to run, comma-separated, in this order")
	jobs := fl.Int("jobs", 2, "table jobs and index jobs of pgcopydb clone and pgcaravan clone")
	workers := fl.Int("workers", 2, "worker processes of the coordinator method")
	workerJobs := fl.Int("worker-jobs", 2, "pull loops (--jobs) of each worker process")
	runs := fl.Int("runs", 1, "copies per dataset and method; the median is reported")
	jsonPath := fl.String("json", "", "write the results here (default bench/results/PRESET-TIME.json, with the text table next to it as .txt)")
	install := fl.Bool("install-pgcopydb", true, "install pgcopydb (and, for the apply benchmark, the source server's wal2json) with apt-get when missing (as root, or with sudo -n)")
	keepLogs := fl.Bool("keep-logs", false, "keep the work directory with every tool's log (kept anyway when something failed)")
	timeout := fl.Duration("timeout", 2*time.Hour, "limit of one copy")
	copies := fl.Bool("copies", true, "run the copy benchmark (false: only the apply benchmark)")
	apply := fl.Bool("apply", true, "also run the apply benchmark: a backlog of pgbench transactions replayed by pgcaravan's cdcnode, native logical replication and pgcopydb follow, and the lag under a fixed write rate")
	applyTxns := fl.Int("apply-txns", fullApply.Txns, "pgbench transactions in the apply benchmark's backlog")
	pgcopydbTxns := fl.Int("apply-pgcopydb-txns", fullApply.PgcopydbTxns, fmt.Sprintf("pgbench transactions in pgcopydb follow's backlog (at most %d: it must fit in one WAL segment)", maxPgcopydbTxns))
	settings := settingFlags{}
	fl.Var(&settings, "setting", "NAME=VALUE for both clusters' postgresql.conf, over the benchmark's (repeatable)")
	if err := fl.Parse(args); err != nil {
		return config{}, err
	}
	if fl.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := config{
		preset: "bench", sizes: sizes{*scale, *mixedRows, *noPKRows, *smallLobs},
		jobs:          JobCounts{TableJobs: *jobs, IndexJobs: *jobs, Workers: *workers, WorkerJobs: *workerJobs},
		runs:          *runs,
		jsonPath:      *jsonPath,
		installPgcopy: *install, keepLogs: *keepLogs, copyTimeout: *timeout,
		settings:       maps.Clone(clusterSettings),
		sampleInterval: time.Second,
		apply:          *apply, applySizes: fullApply,
	}
	maps.Copy(cfg.settings, settings)
	if *quick {
		cfg.preset = "bench-quick"
		if !set["scale"] {
			cfg.sizes.PgbenchScale = quickSizes.PgbenchScale
		}
		if !set["mixed-rows"] {
			cfg.sizes.MixedRows = quickSizes.MixedRows
		}
		if !set["nopk-rows"] {
			cfg.sizes.NoPKRows = quickSizes.NoPKRows
		}
		if !set["lobs"] {
			cfg.sizes.SmallLobs = quickSizes.SmallLobs
		}
		cfg.applySizes = quickApply
	}
	if set["apply-txns"] {
		cfg.applySizes.Txns = *applyTxns
	}
	if set["apply-pgcopydb-txns"] {
		cfg.applySizes.PgcopydbTxns = *pgcopydbTxns
	}
	switch {
	case cfg.sizes.PgbenchScale < 1 || cfg.sizes.MixedRows < 1 || cfg.sizes.NoPKRows < 1 || cfg.sizes.SmallLobs < 1:
		return config{}, errors.New("-scale, -mixed-rows, -nopk-rows and -lobs must be at least 1")
	case *jobs < 1 || *workers < 1 || *workerJobs < 1:
		return config{}, errors.New("-jobs, -workers and -worker-jobs must be at least 1")
	case cfg.applySizes.Txns < 4 || cfg.applySizes.PgcopydbTxns < 4:
		return config{}, errors.New("-apply-txns and -apply-pgcopydb-txns must be at least 4")
	case cfg.applySizes.PgcopydbTxns > maxPgcopydbTxns:
		return config{}, fmt.Errorf("-apply-pgcopydb-txns must be at most %d: pgcopydb 0.10's follow fails on transactions that straddle a WAL segment boundary, so its backlog must fit in one 16 MB segment", maxPgcopydbTxns)
	case *runs < 1:
		return config{}, errors.New("-runs must be at least 1")
	}
	for _, name := range splitList(*datasets) {
		if !slices.Contains(allDatasets, name) {
			return config{}, fmt.Errorf("-datasets: unknown dataset %q (have %s)", name, strings.Join(allDatasets, ", "))
		}
		cfg.datasets = append(cfg.datasets, name)
	}
	for _, key := range splitList(*methods) {
		i := slices.IndexFunc(allMethods, func(m method) bool { return m.key == key })
		if i < 0 {
			return config{}, fmt.Errorf("-methods: unknown method %q (have %s)", key, strings.Join(keys, ", "))
		}
		cfg.methods = append(cfg.methods, allMethods[i])
	}
	if !*copies {
		cfg.datasets, cfg.methods = nil, nil
	}
	switch {
	case *copies && (len(cfg.datasets) == 0 || len(cfg.methods) == 0):
		return config{}, errors.New("-datasets and -methods must name at least one each")
	case !*copies && !*apply:
		return config{}, errors.New("-copies=false -apply=false leaves nothing to run")
	}
	binPath, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(binPath)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return config{}, fmt.Errorf("pgcaravan binary %s not found; build it with `make build` or pass -bin PATH", *bin)
	} else if err != nil {
		return config{}, fmt.Errorf("pgcaravan binary %s: %w", *bin, err)
	}
	cfg.bin = binPath
	if cfg.jsonPath == "" {
		cfg.jsonPath = filepath.Join("bench", "results", cfg.preset+"-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	}
	return cfg, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// settingFlags collects NAME=VALUE flags.
type settingFlags map[string]string

func (s settingFlags) String() string { return fmt.Sprint(map[string]string(s)) }

func (s settingFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", v)
	}
	s[name] = value
	return nil
}

// numCPU is the cores the machine gives this process, which the CPU shares divide by.
func numCPU() int { return runtime.NumCPU() }
