// Command demo is what `make demo` runs: it starts two throwaway PostgreSQL
// clusters, fills the source with datagen's sample, clones it with the
// pgcaravan binary, verifies the target against the source, then runs a live
// migration (clone --follow) while a writer changes the source, cuts over
// through the admin API and verifies that target too, shows how to look at
// the result, and removes everything again, on Ctrl-C too.
//
// The demo drives pgcaravan only from the outside, as a user would: it runs
// the binary and must not import the copy path (coordinator, worker, fleet).
// It must not leave clusters or directories behind, except with -keep, and
// then only until Enter is pressed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	"github.com/pgcaravan/pgcaravan/integration/datagen"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// dbname is the database the demo clones.
const dbname = "demo"

// cloneStopGrace is how long pgcaravan clone gets to stop after an
// interrupt before it is killed.
const cloneStopGrace = 30 * time.Second

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fl := flag.NewFlagSet("demo", flag.ContinueOnError)
	rows := fl.Int("rows", 200_000, "rows in the big table caravan.events")
	bin := fl.String("bin", "./bin/pgcaravan", "the pgcaravan binary (build it with make build)")
	keep := fl.Bool("keep", false, "keep the clusters running after the demo until Enter is pressed")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *rows <= 0 {
		fmt.Fprintf(os.Stderr, "demo: -rows is %d; give a positive number of rows\n", *rows)
		return exitUsage
	}
	binPath, err := filepath.Abs(*bin)
	if err == nil {
		_, err = os.Stat(binPath)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "demo: pgcaravan binary %s not found; build it with `make build` or pass -bin PATH\n", *bin)
		} else {
			fmt.Fprintf(os.Stderr, "demo: pgcaravan binary %s: %v\n", *bin, err)
		}
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, binPath, *rows, *keep); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "demo: interrupted")
		} else {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		}
		return exitFail
	}
	return exitOK
}

// demo runs the steps; every deferred teardown runs however it ends.
func demo(ctx context.Context, bin string, rows int, keep bool) error {
	// 1. Two clusters, source and target, each with an empty database.
	var clusters [2]*pgtest.Cluster
	for i, role := range []string{"source", "target"} {
		step("starting the %s cluster", role)
		c, err := pgtest.New(ctx, pgtest.Options{})
		if err != nil {
			return fmt.Errorf("start the %s cluster: %w", role, err)
		}
		defer closeCluster(role, c)
		if err := c.CreateDatabase(ctx, dbname); err != nil {
			return fmt.Errorf("create database %s on the %s cluster: %w", dbname, role, err)
		}
		fmt.Printf("    %s: %s\n", role, c.URI(dbname))
		clusters[i] = c
	}
	src, tgt := clusters[0].URI(dbname), clusters[1].URI(dbname)

	// 2. The sample data, into the source only.
	step("generating sample data in the source (%d rows in caravan.events)", rows)
	start := time.Now()
	if err := datagen.Generate(ctx, src, datagen.Options{BigRows: rows}); err != nil {
		return err
	}
	fmt.Printf("    done in %s\n", time.Since(start).Round(time.Millisecond))

	// 3. The clone, by the real binary, its output passed through.
	dir, err := os.MkdirTemp("", "pgcaravan-demo-")
	if err != nil {
		return fmt.Errorf("create the clone's directory: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "demo: remove %s: %v\n", dir, err)
		}
	}()
	step("cloning: %s clone --source %s --target %s --dir %s", bin, src, tgt, dir)
	start = time.Now()
	cmd := exec.CommandContext(ctx, bin, "clone", "--source", src, "--target", tgt, "--dir", dir)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Ctrl-C in a terminal reaches pgcaravan too (same process group);
	// SIGTERM to the demo is passed on as an interrupt. Either way it gets
	// time to stop cleanly before it is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = cloneStopGrace
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcaravan clone failed: %w (its store and logs: %s, kept until the demo ends)", err, dir)
	}
	fmt.Printf("    clone done in %s\n", time.Since(start).Round(time.Millisecond))

	// 4. Verification, independent of the clone.
	step("verifying the target against the source")
	start = time.Now()
	report, err := verify.Compare(ctx, src, tgt, verify.Options{Jobs: 4})
	if err != nil {
		return err
	}
	fmt.Println()
	report.Print(os.Stdout)
	fmt.Printf("    verified in %s\n", time.Since(start).Round(time.Millisecond))

	if !report.OK() {
		return fmt.Errorf("verification failed: %d difference(s) between source and target", len(report.Problems()))
	}

	// 5. A live migration into a second database, with writes until the
	// cutover.
	live, err := liveMigration(ctx, bin, clusters[0], clusters[1], dir)
	if err != nil {
		return err
	}

	// 6. How to look around, and -keep's pause.
	step("to look at the result")
	fmt.Printf("    psql %q    # source\n", src)
	fmt.Printf("    psql %q    # target\n", tgt)
	fmt.Printf("    psql %q    # target of the live migration\n", live)
	fmt.Printf("    %s status --dir %s\n", bin, dir)
	if keep {
		fmt.Println("\nThe clusters keep running. Press Enter to stop them and clean up.")
		waitForEnter(ctx)
	} else {
		fmt.Println("    (the clusters are removed now; run the demo with -keep to look around)")
	}

	step("tearing down")
	fmt.Println("\ndemo OK: both targets are verified copies of the source")
	return nil
}

// liveMigration clones the source into a new database with --follow while
// a writer keeps changing the source, waits until the clone follows, stops
// the writes, cuts over, and verifies. It returns the new database's URI.
func liveMigration(ctx context.Context, bin string, srcCluster, tgtCluster *pgtest.Cluster, dir string) (string, error) {
	const liveDB = "demo_live"
	src, tgt := srcCluster.URI(dbname), tgtCluster.URI(liveDB)
	if err := tgtCluster.CreateDatabase(ctx, liveDB); err != nil {
		return "", err
	}
	if err := srcCluster.Exec(ctx, dbname, `CREATE TABLE IF NOT EXISTS public.live_orders (id bigserial PRIMARY KEY, note text NOT NULL, amount numeric(12,2) NOT NULL)`); err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()

	// 1. The writer: inserts, updates and deletes, one transaction each.
	step("live migration: a writer changes the source from now until the cutover")
	writeCtx, stopWrites := context.WithCancel(ctx)
	defer stopWrites()
	var written atomic.Int64
	writerDone := make(chan error, 1)
	go func() { writerDone <- write(writeCtx, src, &written) }()

	// 2. The clone, following.
	liveDir := filepath.Join(dir, "live")
	step("cloning with --follow: %s clone --follow --listen %s --source %s --target %s --dir %s", bin, addr, src, tgt, liveDir)
	cmd := exec.CommandContext(ctx, bin, "clone", "--follow", "--listen", addr, "--source", src, "--target", tgt, "--dir", liveDir, "--quiet")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = cloneStopGrace
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start pgcaravan clone --follow: %w", err)
	}
	cloneDone := make(chan error, 1)
	go func() { cloneDone <- cmd.Wait() }()
	fail := func(err error) (string, error) {
		_ = cmd.Process.Signal(os.Interrupt)
		<-cloneDone
		return "", err
	}

	// 3. Wait until the backfill is done and changes are applied.
	start := time.Now()
	for {
		out, err := exec.CommandContext(ctx, bin, "status", "--coordinator", addr, "--json").Output()
		var s struct {
			Phase string `json:"phase"`
		}
		if err == nil && json.Unmarshal(out, &s) == nil && s.Phase == "PHASE_FOLLOW" {
			break
		}
		select {
		case err := <-cloneDone:
			return "", fmt.Errorf("pgcaravan clone --follow exited before following: %v (logs: %s)", err, liveDir)
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Minute {
			return fail(errors.New("pgcaravan clone --follow did not reach phase follow within 10 minutes"))
		}
	}
	fmt.Printf("    following after %s; the writes go on for a few seconds more\n", time.Since(start).Round(time.Millisecond))
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	status := exec.CommandContext(ctx, bin, "status", "--coordinator", addr)
	status.Stdout, status.Stderr = os.Stdout, os.Stderr
	_ = status.Run()

	// 4. Stop the writes, cut over, and let the clone clean up and exit.
	stopWrites()
	if err := <-writerDone; err != nil {
		return fail(fmt.Errorf("writer: %w", err))
	}
	step("stopped the writes after %d transactions; cutting over: %s cutover --coordinator %s", written.Load(), bin, addr)
	cut := exec.CommandContext(ctx, bin, "cutover", "--coordinator", addr)
	cut.Stdout, cut.Stderr = os.Stdout, os.Stderr
	if err := cut.Run(); err != nil {
		return fail(fmt.Errorf("pgcaravan cutover: %w", err))
	}
	if err := <-cloneDone; err != nil {
		return "", fmt.Errorf("pgcaravan clone --follow failed after the cutover: %w (logs: %s)", err, liveDir)
	}

	// 5. Verification.
	step("verifying the live migration's target against the source")
	report, err := verify.Compare(ctx, src, tgt, verify.Options{Jobs: 4})
	if err != nil {
		return "", err
	}
	report.Print(os.Stdout)
	if !report.OK() {
		return "", fmt.Errorf("live migration: verification failed: %d difference(s) between source and target", len(report.Problems()))
	}
	return tgt, nil
}

// write changes the source until ctx ends: an insert, an update of a
// recent row and now and then a delete, each its own transaction.
func write(ctx context.Context, uri string, n *atomic.Int64) error {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i := 1; ; i++ {
		var err error
		switch {
		case i%10 == 0:
			_, err = conn.Exec(ctx, `DELETE FROM public.live_orders WHERE id = (SELECT min(id) FROM public.live_orders)`)
		case i%3 == 0:
			_, err = conn.Exec(ctx, `UPDATE public.live_orders SET amount = amount + 1, note = note || '+' WHERE id = (SELECT max(id) FROM public.live_orders)`)
		default:
			_, err = conn.Exec(ctx, `INSERT INTO public.live_orders (note, amount) VALUES ($1, $2::numeric / 100)`, fmt.Sprintf("order %d", i), i)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		n.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
}

// step announces what the demo does next.
func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// waitForEnter returns when a line is read from stdin, stdin ends, or ctx
// is done. The reading goroutine cannot be interrupted; when ctx wins it
// stays blocked in Read until the process exits a moment later.
func waitForEnter(ctx context.Context) {
	entered := make(chan struct{})
	go func() {
		defer close(entered)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}()
	select {
	case <-entered:
	case <-ctx.Done():
	}
}

func closeCluster(role string, c *pgtest.Cluster) {
	if err := c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: stop the %s cluster: %v\n", role, err)
	}
}
