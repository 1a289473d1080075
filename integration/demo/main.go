// Command demo is what `make demo` runs: it starts two throwaway PostgreSQL
// clusters, fills the source with datagen's sample, clones it with the
// pgcaravan binary, verifies the target against the source, shows how to
// look at the result, and removes everything again, on Ctrl-C too.
//
// The demo drives pgcaravan only from the outside, as a user would: it runs
// the binary and must not import the copy path (coordinator, worker, fleet).
// It must not leave clusters or directories behind, except with -keep, and
// then only until Enter is pressed.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

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

	// 5. How to look around, and -keep's pause.
	step("to look at the result")
	fmt.Printf("    psql %q    # source\n", src)
	fmt.Printf("    psql %q    # target\n", tgt)
	fmt.Printf("    %s status --dir %s\n", bin, dir)
	if keep {
		fmt.Println("\nThe clusters keep running. Press Enter to stop them and clean up.")
		waitForEnter(ctx)
	} else {
		fmt.Println("    (the clusters are removed now; run the demo with -keep to look around)")
	}

	step("tearing down")
	if !report.OK() {
		return fmt.Errorf("verification failed: %d difference(s) between source and target", len(report.Problems()))
	}
	fmt.Println("\ndemo OK: the target is a verified copy of the source")
	return nil
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
