package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

const (
	// startTimeout bounds initdb and the server's start in Start.
	startTimeout = 2 * time.Minute
	// loadTimeout bounds LoadPagila; the load takes seconds.
	loadTimeout = 5 * time.Minute
)

// Start is New for tests: it fails the test on error, closes the cluster when the test and
// its subtests are done (even if they panicked), and logs progress with t.Logf unless
// opts.Logf is set. When the test has failed, the tail of the server log is logged before
// the cluster goes.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	c, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: server log of the cluster on port %d, last lines:\n%s", c.Port(), c.LogTail(30))
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// Dataset returns the absolute path of the sample dataset name, ../shared/datasets/name seen
// from the repository root (the nearest directory at or above the working directory that
// holds go.mod). The environment variable PGCARAVAN_SHARED, if set, names the shared
// directory instead.
//
// A missing dataset skips the test, or fails it when CI is true: CI must not pass by
// skipping.
func Dataset(t testing.TB, name string) string {
	t.Helper()
	path, err := datasetPath(name)
	if err == nil {
		return path
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("pgtest: %v; the dataset is required in CI", err)
	} else {
		t.Skipf("pgtest: %v", err)
	}
	return "" // only reached with a testing.TB whose Fatalf and Skipf return
}

func datasetPath(name string) (string, error) {
	shared := os.Getenv("PGCARAVAN_SHARED")
	if shared == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("dataset %q: %w (or set PGCARAVAN_SHARED to the directory holding datasets/)", name, err)
		}
		shared = filepath.Join(root, "..", "shared")
	}
	path, err := filepath.Abs(filepath.Join(shared, "datasets", name))
	if err != nil {
		return "", fmt.Errorf("dataset %q: %w", name, err)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("dataset %q not found: looked for %s (set PGCARAVAN_SHARED to the directory holding datasets/)", name, path)
	} else if err != nil {
		return "", fmt.Errorf("dataset %q: %w", name, err)
	}
	return path, nil
}

// moduleRoot walks up from the working directory (a test's package directory) to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

// LoadPagila creates database dbname on c and loads the pagila sample database into it
// (schema.sql, then data.sql, in one psql session). Without the dataset it skips or fails
// the test as Dataset does.
func LoadPagila(t testing.TB, c *Cluster, dbname string) {
	t.Helper()
	dir := Dataset(t, "pagila")
	ctx, cancel := context.WithTimeout(t.Context(), loadTimeout)
	defer cancel()
	if err := c.CreateDatabase(ctx, dbname); err != nil {
		t.Fatal(err)
	}
	err := c.Psql(ctx, dbname, "-f", filepath.Join(dir, "schema.sql"), "-f", filepath.Join(dir, "data.sql"))
	if err != nil {
		t.Fatalf("pgtest: load pagila into database %q: %v", dbname, err)
	}
}
