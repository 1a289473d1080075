package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// The apply benchmark measures how fast each method replays changes made on the source:
//
//  1. The target gets a copy of the source (pgcaravan: its own --follow copy; native
//     logical replication and pgcopydb: pg_dump | psql, pgcopydb's under the snapshot its
//     slot starts at), and replication is set up with nobody consuming the slot yet.
//  2. pgbench's tpcb-like script runs a fixed number of transactions on the source (3
//     UPDATEs and 1 INSERT each), then one marker transaction: the backlog waits in the
//     slot.
//  3. The consumer starts (the cdcnode; ALTER SUBSCRIPTION … ENABLE; pgcopydb follow) and
//     the clock runs until the target's replication origin is past the marker: catch-up
//     time, and changes per second. It covers reading the slot, spooling (pgcaravan,
//     pgcopydb) and applying.
//  4. With the consumer caught up, pgbench writes at a fixed rate for a while and the lag
//     (source WAL position minus the origin's) is sampled.
//  5. The migration is ended (pgcaravan cutover and cleanup; DROP SUBSCRIPTION; pgcopydb's
//     endpos and stream cleanup) and the target is verified equal to the source.
//
// Every method records progress in a replication origin on the target, so one query
// measures all: the origin's remote_lsn is the end of the last source transaction applied.
//
// pgcopydb's follow applies a few thousand changes per second at best here, so its
// backlog is smaller in the full preset (applySizes.PgcopydbTxns): the same backlog would
// add minutes to the run, and it must fit in one WAL segment (see apply_pgcopydb.go).
// changes/s is a rate either way; its catch-up includes pgcopydb's fixed delays
// (start s), which a smaller backlog weighs more.

// Apply method keys.
const (
	applyPgcaravan = "pgcaravan"
	applyNative    = "native"
	applyPgcopydb  = "pgcopydb"
)

// maxPgcopydbTxns keeps pgcopydb's backlog (about 550 bytes of WAL a transaction) in one
// 16 MB WAL segment: see apply_pgcopydb.go.
const maxPgcopydbTxns = 25_000

// changesPerTxn is what one pgbench tpcb-like transaction changes: UPDATE
// pgbench_accounts, pgbench_tellers and pgbench_branches, INSERT pgbench_history.
const changesPerTxn = 4

// applySizes are the apply benchmark's sizes.
type applySizes struct {
	Scale int `json:"pgbench_scale"`
	// Txns is the backlog, in pgbench transactions; PgcopydbTxns is pgcopydb's (see above).
	Txns         int `json:"backlog_transactions"`
	PgcopydbTxns int `json:"pgcopydb_backlog_transactions"`
	// Rate and Seconds are the fixed write rate (transactions per second) and how long it
	// runs for the lag measurement.
	Rate    int `json:"lag_rate_tps"`
	Seconds int `json:"lag_seconds"`
}

var (
	fullApply  = applySizes{Scale: 10, Txns: 50_000, PgcopydbTxns: 20_000, Rate: 200, Seconds: 20}
	quickApply = applySizes{Scale: 2, Txns: 5_000, PgcopydbTxns: 5_000, Rate: 100, Seconds: 6}
)

// ApplyResult is one method's apply measurement.
type ApplyResult struct {
	Method  string `json:"method"`
	Label   string `json:"label"`
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
	// Changes and BacklogBytes describe the backlog (source WAL from the slot's position to
	// the marker).
	Changes      int64 `json:"changes"`
	BacklogBytes int64 `json:"backlog_bytes"`
	// CatchupSeconds runs from the consumer's start to the origin passing the marker;
	// StartSeconds from the consumer's start to the first backlog transaction applied.
	CatchupSeconds   float64 `json:"catchup_seconds"`
	StartSeconds     float64 `json:"start_seconds"`
	ChangesPerSecond float64 `json:"changes_per_second"`
	// LagP50Bytes and LagMaxBytes are the lag samples under the fixed write rate.
	LagP50Bytes int64 `json:"lag_p50_bytes"`
	LagMaxBytes int64 `json:"lag_max_bytes"`
	LagSamples  int   `json:"lag_samples"`
	// SpooledSeconds (pgcaravan only) runs from the cdcnode's start to its
	// spool holding the whole backlog durably: what streaming alone takes.
	SpooledSeconds float64 `json:"spooled_seconds,omitempty"`
	// ConsumerCPUSeconds is the consumer's CPU over its whole run (catch-up, lag phase
	// and cutover): the cdcnode process's own; pgcopydb follow's with the sub-processes
	// it waited for. Native logical replication's apply worker is in the server.
	ConsumerCPUSeconds float64 `json:"consumer_cpu_seconds,omitempty"`
	Verified           bool    `json:"verified"`
	Log                string  `json:"log_dir,omitempty"`
}

// applyRun is one method's apply benchmark.
type applyRun struct {
	ctx      context.Context
	tools    tools
	src, tgt *pgtest.Cluster
	srcDB    string
	tgtDB    string
	dir      string
	sizes    applySizes
	// addr is pgcaravan's coordinator, whose status tells the spool's flushed LSN.
	addr string
	// backlogStart is the source's WAL position before the backlog, which the origin
	// passes with the first backlog transaction applied. backlogFloor (pgcopydb) is where
	// the backlog's segment starts: the switched segment's unused tail before it is not
	// backlog.
	backlogStart string
	backlogFloor string
	// nextSegment (pgcopydb) is called after each marker: see pgcopydbNextSegment.
	nextSegment func() error
	// holeEnd and holeBytes are the last WAL switch's: the new segment's start and the
	// unused tail before it, which the lag does not count while the origin is behind it.
	holeEnd   string
	holeBytes int64
}

// applyBench runs the apply benchmark of every method on a fresh pgbench database.
func applyBench(ctx context.Context, t tools, src, tgt *pgtest.Cluster, sz applySizes, work string) ([]ApplyResult, error) {
	const srcDB = "applybench"
	step("apply: generating pgbench -i -s %d in %s", sz.Scale, srcDB)
	if err := src.CreateDatabase(ctx, srcDB); err != nil {
		return nil, err
	}
	p := newProcess(ctx, "pgbench -i", filepath.Join(work, "apply-generate.log"), t.pgbench,
		"-i", "-s", strconv.Itoa(sz.Scale), "-I", "dtGvp", "-q", src.URI(srcDB))
	if err := p.start(); err != nil {
		return nil, err
	}
	if err := p.wait(); err != nil {
		return nil, err
	}
	var out []ApplyResult
	for _, m := range []struct {
		key, label string
		run        func(*applyRun, *ApplyResult) error
	}{
		{applyPgcaravan, "pgcaravan cdcnode", (*applyRun).pgcaravan},
		{applyNative, "native (CREATE SUBSCRIPTION)", (*applyRun).native},
		{applyPgcopydb, "pgcopydb follow", (*applyRun).pgcopydb},
	} {
		res := ApplyResult{Method: m.key, Label: m.label}
		if m.key == applyPgcopydb && t.pgcopydbFollowMissing() != "" {
			res.Skipped = t.pgcopydbFollowMissing()
			out = append(out, res)
			continue
		}
		txns := sz.Txns
		if m.key == applyPgcopydb {
			txns = sz.PgcopydbTxns
		}
		step("apply: %s, backlog of %d pgbench transactions", m.label, txns)
		r := &applyRun{ctx: ctx, tools: t, src: src, tgt: tgt, srcDB: srcDB, tgtDB: "apply_" + m.key,
			dir: filepath.Join(work, "apply", m.key), sizes: sz}
		res.Log = r.dir
		if err := os.MkdirAll(r.dir, 0o755); err != nil {
			return out, err
		}
		if err := tgt.CreateDatabase(ctx, r.tgtDB); err != nil {
			return out, err
		}
		err := m.run(r, &res)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if err != nil {
			res.Error = err.Error()
			progress("FAILED: %v", err)
		} else {
			res.Verified = r.verify() == nil
			progress("%d changes in %.1f s (first applied after %.1f s): %.0f changes/s; lag under %d tps: p50 %s, max %s; spooled in %.1f s; consumer CPU %.1f s; verified %v",
				res.Changes, res.CatchupSeconds, res.StartSeconds, res.ChangesPerSecond, sz.Rate, kb(res.LagP50Bytes), kb(res.LagMaxBytes), res.SpooledSeconds, res.ConsumerCPUSeconds, res.Verified)
		}
		if err := tgt.Exec(context.WithoutCancel(ctx), "postgres", "DROP DATABASE "+pgx.Identifier{r.tgtDB}.Sanitize()+" WITH (FORCE)"); err != nil {
			progress("drop %s: %v", r.tgtDB, err)
		}
		out = append(out, res)
	}
	return out, nil
}

// pgcaravan: a coordinator with --follow and one worker copy the database; once the phase
// is follow (the backfill is complete) the backlog is written, and only then does the
// cdcnode start.
func (r *applyRun) pgcaravan(res *ApplyResult) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	srcURI, tgtURI := r.src.URI(r.srcDB), r.tgt.URI(r.tgtDB)
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	fleet := newGroup(ctx, nil)
	fleet.command("pgcaravan coordinator", filepath.Join(r.dir, "coordinator.log"), r.tools.pgcaravan, "coordinator", "--follow",
		"--source", srcURI, "--target", tgtURI, "--dir", filepath.Join(r.dir, "coordinator"), "--listen", addr).asPgcaravan()
	fleet.command("pgcaravan worker", filepath.Join(r.dir, "worker.log"), r.tools.pgcaravan, "worker",
		"--coordinator", addr, "--source", srcURI, "--target", tgtURI, "--jobs", "2").asPgcaravan()
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.run() }()

	r.addr = addr
	if err := r.waitPhase(ctx, addr, "PHASE_FOLLOW", fleetDone); err != nil {
		return err
	}
	if err := r.backlog(res, r.sizes.Txns); err != nil {
		return err
	}
	cdc := newGroup(ctx, nil)
	node := cdc.command("pgcaravan cdcnode", filepath.Join(r.dir, "cdcnode.log"), r.tools.pgcaravan, "cdcnode",
		"--coordinator", addr, "--source", srcURI, "--target", tgtURI, "--dir", filepath.Join(r.dir, "cdc")).asPgcaravan()
	if d := os.Getenv("BENCH_PROFILE_DIR"); d != "" {
		// A Go CPU profile of the cdcnode, for `go tool pprof`.
		node.cmd.Env = append(node.cmd.Env, "PGCARAVAN_CPUPROFILE="+filepath.Join(d, "cdcnode.pprof"))
	}
	cdcDone := make(chan error, 1)
	started := time.Now()
	go func() { cdcDone <- cdc.run() }()
	if err := r.catchUp(res, started, cdcDone); err != nil {
		return err
	}
	if err := r.lag(res); err != nil {
		return err
	}
	for _, args := range [][]string{{"cutover", "--coordinator", addr}, {"cleanup", "--coordinator", addr}} {
		if out, err := exec.CommandContext(ctx, r.tools.pgcaravan, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("pgcaravan %s: %w\n%s", args[0], err, out)
		}
	}
	if err := waitDone(ctx, "pgcaravan coordinator and worker", fleetDone); err != nil {
		return err
	}
	if err := waitDone(ctx, "pgcaravan cdcnode", cdcDone); err != nil {
		return err
	}
	_, own := cdc.cpu()
	res.ConsumerCPUSeconds = own.Own.Seconds()
	return nil
}

// native: pg_dump | psql copies the database, then a subscription is created disabled
// (its slot starts there), the backlog is written, and the subscription is enabled.
func (r *applyRun) native(res *ApplyResult) error {
	g := newGroup(r.ctx, nil)
	dump := g.command("pg_dump", filepath.Join(r.dir, "pg_dump.log"), r.tools.pgDump, "-d", r.src.URI(r.srcDB))
	load := g.command("psql", filepath.Join(r.dir, "psql.log"), r.tools.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", r.tgt.URI(r.tgtDB))
	if err := g.pipe(dump, load); err != nil {
		return err
	}
	if err := g.run(); err != nil {
		return fmt.Errorf("pg_dump | psql: %w", err)
	}
	if err := r.src.Exec(r.ctx, r.srcDB, "CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"); err != nil {
		return err
	}
	defer func() { _ = r.src.Exec(context.WithoutCancel(r.ctx), r.srcDB, "DROP PUBLICATION IF EXISTS bench_pub") }()
	sub := fmt.Sprintf("CREATE SUBSCRIPTION bench_sub CONNECTION %s PUBLICATION bench_pub WITH (copy_data = false, enabled = false)",
		quoteLiteral(r.src.URI(r.srcDB)))
	if err := r.tgt.Exec(r.ctx, r.tgtDB, sub); err != nil {
		return err
	}
	defer func() { _ = r.tgt.Exec(context.WithoutCancel(r.ctx), r.tgtDB, "DROP SUBSCRIPTION IF EXISTS bench_sub") }()
	if err := r.backlog(res, r.sizes.Txns); err != nil {
		return err
	}
	started := time.Now()
	if err := r.tgt.Exec(r.ctx, r.tgtDB, "ALTER SUBSCRIPTION bench_sub ENABLE"); err != nil {
		return err
	}
	if err := r.catchUp(res, started, nil); err != nil {
		return err
	}
	if err := r.lag(res); err != nil {
		return err
	}
	// Like a cutover: everything written so far is applied before the comparison.
	var end ApplyResult
	return r.catchUp(&end, time.Now(), nil)
}

// backlog writes txns pgbench transactions and records the backlog.
func (r *applyRun) backlog(res *ApplyResult, txns int) error {
	conn, err := pgx.Connect(r.ctx, r.src.URI(r.srcDB))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(r.ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&r.backlogStart); err != nil {
		return err
	}
	done, err := r.pgbench("backlog", "-c", "4", "-j", "2", "-t", strconv.Itoa(txns/4))
	if err != nil {
		return err
	}
	res.Changes = done * changesPerTxn
	floor := r.backlogFloor
	if floor == "" {
		floor = "0/0"
	}
	return conn.QueryRow(r.ctx, `SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), greatest(confirmed_flush_lsn, $1::pg_lsn))), 0)::bigint
		FROM pg_replication_slots WHERE database = current_database() AND NOT temporary`, floor).Scan(&res.BacklogBytes)
}

// marker commits one more transaction and returns an LSN its commit record ends past: once
// the target's origin is at or past it, everything before it is applied.
func (r *applyRun) marker() (string, error) {
	conn, err := pgx.Connect(r.ctx, r.src.URI(r.srcDB))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(r.ctx)
	if err != nil {
		return "", err
	}
	var lsn string
	if err := tx.QueryRow(r.ctx, `UPDATE pgbench_branches SET filler = filler WHERE bid = 1 RETURNING pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		_ = tx.Rollback(r.ctx)
		return "", err
	}
	return lsn, tx.Commit(r.ctx)
}

// catchUp waits until the target's origin passes a marker written after the backlog.
func (r *applyRun) catchUp(res *ApplyResult, started time.Time, consumerDone <-chan error) error {
	mark, err := r.marker()
	if err != nil {
		return err
	}
	if r.nextSegment != nil {
		if err := r.nextSegment(); err != nil {
			return err
		}
	}
	conn, err := pgx.Connect(r.ctx, r.tgt.URI("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(30 * time.Minute)
	spooled := make(chan float64, 1)
	if r.addr != "" {
		go r.watchSpool(mark, started, spooled)
	}
	defer func() {
		if r.addr == "" {
			return
		}
		select {
		case s := <-spooled:
			res.SpooledSeconds = s
		case <-time.After(2 * time.Second):
		}
	}()
	from := r.backlogStart
	if from == "" {
		from = mark
	}
	for {
		var past, begun bool
		err := conn.QueryRow(r.ctx, `SELECT coalesce(max(remote_lsn) >= $1::pg_lsn, false), coalesce(max(remote_lsn) > $2::pg_lsn, false)
			FROM pg_replication_origin_status`, mark, from).Scan(&past, &begun)
		if err != nil {
			return err
		}
		if begun && res.StartSeconds == 0 {
			res.StartSeconds = time.Since(started).Seconds()
		}
		if past {
			res.CatchupSeconds = time.Since(started).Seconds()
			res.ChangesPerSecond = float64(res.Changes) / res.CatchupSeconds
			return nil
		}
		select {
		case err := <-consumerDone:
			return fmt.Errorf("the consumer exited before catching up: %v", err)
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("not caught up within 30 minutes")
		}
	}
}

// watchSpool reports when the cdcnode's spool has durably received the
// marker, polling the coordinator's status.
func (r *applyRun) watchSpool(mark string, started time.Time, out chan<- float64) {
	want, err := parseLSN(mark)
	if err != nil {
		return
	}
	for time.Since(started) < 30*time.Minute && r.ctx.Err() == nil {
		b, err := exec.CommandContext(r.ctx, r.tools.pgcaravan, "status", "--coordinator", r.addr, "--json").Output()
		if err == nil {
			var s struct {
				CDC struct {
					Flushed string `json:"flushedLsn"`
				} `json:"cdc"`
			}
			if json.Unmarshal(b, &s) == nil {
				if got, err := parseLSN(s.CDC.Flushed); err == nil && got >= want {
					out <- time.Since(started).Seconds()
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parseLSN reads an LSN as PostgreSQL prints it ("16/B374D848").
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, err
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, err
	}
	return h<<32 | l, nil
}

// lag writes at a fixed rate and samples the source's WAL position against the target's
// origin every 250 ms, less the unused tail of a segment switched by pgcopydbNextSegment.
func (r *applyRun) lag(res *ApplyResult) error {
	srcConn, err := pgx.Connect(r.ctx, r.src.URI(r.srcDB))
	if err != nil {
		return err
	}
	defer srcConn.Close(context.Background())
	tgtConn, err := pgx.Connect(r.ctx, r.tgt.URI("postgres"))
	if err != nil {
		return err
	}
	defer tgtConn.Close(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.pgbench("rate", "-c", "2", "-j", "2", "-R", strconv.Itoa(r.sizes.Rate), "-T", strconv.Itoa(r.sizes.Seconds))
		done <- err
	}()
	holeEnd := r.holeEnd
	if holeEnd == "" {
		holeEnd = "0/0"
	}
	var samples []int64
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
			if len(samples) > 0 {
				slices.Sort(samples)
				res.LagP50Bytes, res.LagMaxBytes, res.LagSamples = samples[len(samples)/2], samples[len(samples)-1], len(samples)
			}
			return nil
		case <-tick.C:
		}
		var src string
		if err := srcConn.QueryRow(r.ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&src); err != nil {
			return err
		}
		var lag int64
		if err := tgtConn.QueryRow(r.ctx, `SELECT coalesce(greatest(pg_wal_lsn_diff($1::pg_lsn, max(remote_lsn))
				- CASE WHEN max(remote_lsn) < $2::pg_lsn THEN $3 ELSE 0 END, 0), 0)::bigint
			FROM pg_replication_origin_status`, src, holeEnd, r.holeBytes).Scan(&lag); err != nil {
			return err
		}
		samples = append(samples, lag)
	}
}

var processedRe = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

// pgbench runs the tpcb-like script on the source with the given options and returns the
// transactions it committed. Its sessions skip the WAL flush wait: the benchmark is of
// the consumer, not of the source's disk.
func (r *applyRun) pgbench(name string, args ...string) (int64, error) {
	cmd := exec.CommandContext(r.ctx, r.tools.pgbench, append(append([]string{"-n"}, args...), r.src.URI(r.srcDB))...)
	cmd.Env = append(childEnv(), "PGOPTIONS=-c synchronous_commit=off")
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(r.dir, "pgbench-"+name+".log"), out, 0o644)
	if err != nil {
		return 0, fmt.Errorf("pgbench %s: %w\n%s", name, err, lastLines(string(out), 5))
	}
	m := processedRe.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench %s: no transaction count in its output", name)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}

// waitPhase polls `pgcaravan status --json` until the phase is want.
func (r *applyRun) waitPhase(ctx context.Context, addr, want string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := exec.CommandContext(ctx, r.tools.pgcaravan, "status", "--coordinator", addr, "--json").Output()
		if err == nil {
			var s struct {
				Phase string `json:"phase"`
			}
			if json.Unmarshal(out, &s) == nil && s.Phase == want {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("pgcaravan exited before phase %s: %v (see %s)", want, err, r.dir)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("no phase %s within 30 minutes", want)
}

func waitDone(ctx context.Context, what string, done <-chan error) error {
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%s did not exit within 2 minutes of cleanup", what)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// verify compares the target with the source (quiet by now).
func (r *applyRun) verify() error {
	g := newGroup(r.ctx, nil)
	g.command("pgcaravan verify", filepath.Join(r.dir, "verify.log"), r.tools.pgcaravan, "verify",
		"--source", r.src.URI(r.srcDB), "--target", r.tgt.URI(r.tgtDB))
	return g.run()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func kb(b int64) string { return fmt.Sprintf("%.0f kB", float64(b)/1e3) }

// printApply writes the apply table.
func printApply(w *strings.Builder, sz applySizes, rs []ApplyResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nApply (a backlog of %d pgbench tpcb-like transactions, %d changes each, waiting in the slot; pgcopydb's: %d;\n"+
		"catch-up = consumer start to the target's origin past the backlog; start = consumer start to the first backlog\n"+
		"transaction applied; lag sampled every 250 ms under %d tps for %d s):\n\n",
		sz.Txns, changesPerTxn, sz.PgcopydbTxns, sz.Rate, sz.Seconds)
	var native float64
	for _, r := range rs {
		if r.Method == applyNative && r.Error == "" && r.Skipped == "" {
			native = r.ChangesPerSecond
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tchanges\tbacklog MB\tstart s\tcatch-up s\tchanges/s\t× native\tlag p50\tlag max\tverified\t")
	for _, r := range rs {
		switch {
		case r.Skipped != "":
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\tskipped\t\n", r.Label)
		case r.Error != "":
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\tFAILED\t\n", r.Label)
		default:
			ratio := "-"
			if native > 0 {
				ratio = fmt.Sprintf("%.2f", r.ChangesPerSecond/native)
			}
			v := "ok"
			if !r.Verified {
				v = "DIFFERS"
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.0f\t%s\t%s\t%s\t%s\t\n", r.Label, r.Changes, float64(r.BacklogBytes)/1e6,
				r.StartSeconds, r.CatchupSeconds, r.ChangesPerSecond, ratio, kb(r.LagP50Bytes), kb(r.LagMaxBytes), v)
		}
	}
	tw.Flush()
	rate := map[string]float64{}
	for _, r := range rs {
		if r.Error == "" && r.Skipped == "" && r.Verified {
			rate[r.Method] = r.ChangesPerSecond
		}
	}
	if rate[applyPgcaravan] > 0 && rate[applyPgcopydb] > 0 {
		fmt.Fprintf(w, "\npgcaravan cdcnode applies %.1f× pgcopydb follow's changes/s (goal: at least 10×)\n", rate[applyPgcaravan]/rate[applyPgcopydb])
	}
	for _, r := range rs {
		switch {
		case r.Skipped != "":
			fmt.Fprintf(w, "note: apply/%s skipped: %s\n", r.Method, r.Skipped)
		case r.Error != "":
			fmt.Fprintf(w, "note: apply/%s failed: %s (logs in %s)\n", r.Method, firstLine(r.Error), r.Log)
		}
	}
}
