package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Method keys, as in -methods and in the JSON.
const (
	methodPhysical  = "physical"
	methodDump      = "dump"
	methodPgcopydb  = "pgcopydb"
	methodPgcaravan = "pgcaravan"
	methodFleet     = "fleet"
)

// method is one way of copying a database.
type method struct {
	key  string
	desc string // in the legend
	run  func(*copyRun) error
}

var allMethods = []method{
	{methodPhysical, "physical reference: pg_dump/pg_restore pre-data, one binary COPY stream per table through two psql, one at a time, then pg_restore post-data (indexes, constraints) and ANALYZE", copyPhysical},
	{methodDump, "pg_dump (plain format) piped into psql; no ANALYZE", copyDump},
	{methodPgcopydb, "pgcopydb clone --table-jobs J --index-jobs J", copyPgcopydb},
	{methodPgcaravan, "pgcaravan clone --table-jobs J --index-jobs J (embedded fleet, one process)", copyPgcaravan},
	{methodFleet, "pgcaravan coordinator and W pgcaravan worker processes with --jobs WJ each", copyFleet},
}

// methodLabel is how the text table names a method.
func methodLabel(key string, j JobCounts) string {
	switch key {
	case methodDump:
		return "pg_dump|psql"
	case methodFleet:
		return fmt.Sprintf("pgcaravan 1+%d", j.Workers)
	}
	return key
}

func isPgcaravan(key string) bool { return key == methodPgcaravan || key == methodFleet }

// copyRun is one timed copy of one dataset into a fresh target database.
type copyRun struct {
	ctx      context.Context
	src, tgt string // connection URIs
	dir      string // the run's logs and files
	tools    tools
	jobs     JobCounts
	dataset  Dataset
	meter    *cpuMeter

	steps      map[string]float64
	cpuAll     cpuTimes
	cpuCaravan cpuTimes
}

// group starts a set of processes that run together, accounted to this run.
func (r *copyRun) group() *group { return newGroup(r.ctx, r.meter) }

// exec runs g and adds its CPU to the run's.
func (r *copyRun) exec(g *group) error {
	err := g.run()
	all, caravan := g.cpu()
	r.cpuAll.Own += all.Own
	r.cpuAll.Total += all.Total
	r.cpuCaravan.Own += caravan.Own
	r.cpuCaravan.Total += caravan.Total
	return err
}

// one runs a single program.
func (r *copyRun) one(name, logName, path string, args ...string) error {
	g := r.group()
	g.command(name, filepath.Join(r.dir, logName), path, args...)
	return r.exec(g)
}

// step times f as the named step of the run.
func (r *copyRun) step(name string, f func() error) error {
	start := time.Now()
	err := f()
	r.steps[name] += time.Since(start).Seconds()
	return err
}

func (r *copyRun) psqlArgs(uri string, more ...string) []string {
	return append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri}, more...)
}

// copyPhysical is the reference: the least a single stream can do for the same result.
//  1. Schema before data, from a schema-only dump, as every other method does.
//  2. Each table, one after another: binary COPY TO STDOUT in one psql, piped into COPY
//     FROM STDIN in another; then the sequences' values.
//  3. Post-data (primary keys, indexes, constraints) by pg_restore, one at a time.
//  4. ANALYZE, which pgcaravan and pgcopydb also do.
func copyPhysical(r *copyRun) error {
	dump := filepath.Join(r.dir, "schema.dump")
	err := r.step("schema", func() error {
		if err := r.one("pg_dump --schema-only", "pg_dump.log", r.tools.pgDump,
			"--schema-only", "-Fc", "-f", dump, "-d", r.src); err != nil {
			return err
		}
		return r.one("pg_restore pre-data", "pg_restore.log", r.tools.pgRestore,
			"--section=pre-data", "--exit-on-error", "-d", r.tgt, dump)
	})
	if err != nil {
		return err
	}
	err = r.step("data", func() error {
		for _, t := range r.dataset.Tables {
			g := r.group()
			out := g.command("psql COPY TO "+t.Name, filepath.Join(r.dir, "copy-out.log"), r.tools.psql,
				r.psqlArgs(r.src, "-c", `\copy `+t.Name+` to stdout with (format binary)`)...)
			in := g.command("psql COPY FROM "+t.Name, filepath.Join(r.dir, "copy-in.log"), r.tools.psql,
				r.psqlArgs(r.tgt, "-c", `\copy `+t.Name+` from stdin with (format binary)`)...)
			if err := g.pipe(out, in); err != nil {
				return err
			}
			if err := r.exec(g); err != nil {
				return err
			}
		}
		return copySequences(r.ctx, r.src, r.tgt)
	})
	if err != nil {
		return err
	}
	err = r.step("post-data", func() error {
		return r.one("pg_restore post-data", "pg_restore.log", r.tools.pgRestore,
			"--section=post-data", "--exit-on-error", "-d", r.tgt, dump)
	})
	if err != nil {
		return err
	}
	return r.step("analyze", func() error {
		return r.one("psql ANALYZE", "analyze.log", r.tools.psql, r.psqlArgs(r.tgt, "-c", "ANALYZE")...)
	})
}

// copySequences sets every sequence of the target to the source's value (the datasets
// have none today; pgbench's tables use none).
func copySequences(ctx context.Context, src, tgt string) error {
	sc, err := pgx.Connect(ctx, src)
	if err != nil {
		return fmt.Errorf("sequences: %w", err)
	}
	defer sc.Close(context.Background())
	rows, err := sc.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'`)
	if err != nil {
		return fmt.Errorf("sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("sequences: %w", err)
	}
	if len(seqs) == 0 {
		return nil
	}
	tc, err := pgx.Connect(ctx, tgt)
	if err != nil {
		return fmt.Errorf("sequences: %w", err)
	}
	defer tc.Close(context.Background())
	for _, s := range seqs {
		var last int64
		var called bool
		if err := sc.QueryRow(ctx, "SELECT last_value, is_called FROM "+s).Scan(&last, &called); err != nil {
			return fmt.Errorf("sequence %s: %w", s, err)
		}
		if _, err := tc.Exec(ctx, "SELECT setval($1::regclass, $2, $3)", s, last, called); err != nil {
			return fmt.Errorf("sequence %s: %w", s, err)
		}
	}
	return nil
}

// copyDump is pg_dump in plain format piped into psql.
func copyDump(r *copyRun) error {
	g := r.group()
	dump := g.command("pg_dump", filepath.Join(r.dir, "pg_dump.log"), r.tools.pgDump, "-Fp", "-d", r.src)
	load := g.command("psql", filepath.Join(r.dir, "psql.log"), r.tools.psql, r.psqlArgs(r.tgt)...)
	if err := g.pipe(dump, load); err != nil {
		return err
	}
	return r.exec(g)
}

func copyPgcopydb(r *copyRun) error {
	return r.one("pgcopydb clone", "pgcopydb.log", r.tools.pgcopydb, "clone",
		"--source", r.src, "--target", r.tgt, "--dir", filepath.Join(r.dir, "pgcopydb"),
		"--table-jobs", strconv.Itoa(r.jobs.TableJobs), "--index-jobs", strconv.Itoa(r.jobs.IndexJobs))
}

func copyPgcaravan(r *copyRun) error {
	g := r.group()
	g.command("pgcaravan clone", filepath.Join(r.dir, "pgcaravan.out"), r.tools.pgcaravan, "clone",
		"--source", r.src, "--target", r.tgt, "--dir", filepath.Join(r.dir, "pgcaravan"),
		"--table-jobs", strconv.Itoa(r.jobs.TableJobs), "--index-jobs", strconv.Itoa(r.jobs.IndexJobs),
		"--quiet").asPgcaravan()
	if err := r.exec(g); err != nil {
		return err
	}
	return r.caravanSteps(filepath.Join(r.dir, "pgcaravan"))
}

// caravanSteps records pgcaravan's own phase times (from the first unit of
// a kind to the last) as the run's steps, read from the store in dir after
// the clone exited. It is not timed.
func (r *copyRun) caravanSteps(dir string) error {
	b, err := exec.CommandContext(r.ctx, r.tools.pgcaravan, "status", "--dir", dir, "--json").Output()
	if err != nil {
		return fmt.Errorf("pgcaravan status --dir %s: %w", dir, err)
	}
	var s struct {
		Timings []struct {
			Name   string `json:"name"`
			Millis string `json:"millis"`
		} `json:"timings"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("pgcaravan status --dir %s --json: %w", dir, err)
	}
	for _, t := range s.Timings {
		ms, err := strconv.ParseInt(t.Millis, 10, 64)
		if err != nil {
			return fmt.Errorf("pgcaravan status: phase %q: %w", t.Name, err)
		}
		r.steps[t.Name] += float64(ms) / 1000
	}
	return nil
}

// copyFleet runs a coordinator and separate worker processes on this machine, over
// loopback gRPC. The workers wait for the coordinator with backoff, so all start at once.
func copyFleet(r *copyRun) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	g := r.group()
	g.command("pgcaravan coordinator", filepath.Join(r.dir, "coordinator.log"), r.tools.pgcaravan, "coordinator",
		"--source", r.src, "--target", r.tgt, "--dir", filepath.Join(r.dir, "coordinator"), "--listen", addr).asPgcaravan()
	for i := 1; i <= r.jobs.Workers; i++ {
		name := fmt.Sprintf("bench-worker-%d", i)
		g.command("pgcaravan worker "+name, filepath.Join(r.dir, name+".log"), r.tools.pgcaravan, "worker",
			"--coordinator", addr, "--source", r.src, "--target", r.tgt,
			"--jobs", strconv.Itoa(r.jobs.WorkerJobs), "--name", name).asPgcaravan()
	}
	if err := r.exec(g); err != nil {
		return err
	}
	return r.caravanSteps(filepath.Join(r.dir, "coordinator"))
}

// freeAddr is a loopback address nobody listens on (usually still free a moment later).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for the coordinator: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
