package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// tools are the client programs the methods run.
type tools struct {
	psql, pgDump, pgRestore, pgbench string
	pgcaravan                        string
	// pgcopydb is empty when it could not be found or installed; pgcopydbMissing says why.
	pgcopydb        string
	pgcopydbMissing string
	// wal2jsonMissing says why the source server has no wal2json, which pgcopydb's
	// follow decodes with; empty when it has it or nobody asked.
	wal2jsonMissing string
}

// pgcopydbFollowMissing says why pgcopydb follow cannot run, or "".
func (t *tools) pgcopydbFollowMissing() string {
	if t.pgcopydbMissing != "" {
		return t.pgcopydbMissing
	}
	return t.wal2jsonMissing
}

// findTools locates the PostgreSQL client programs: on PATH, else in the newest
// /usr/lib/postgresql/N/bin, where Debian puts pgbench and the server programs.
func findTools(pgcaravan string) (tools, error) {
	t := tools{pgcaravan: pgcaravan}
	var missing []string
	for _, x := range []struct {
		name string
		dst  *string
	}{{"psql", &t.psql}, {"pg_dump", &t.pgDump}, {"pg_restore", &t.pgRestore}, {"pgbench", &t.pgbench}} {
		path, err := findProgram(x.name)
		if err != nil {
			missing = append(missing, x.name)
			continue
		}
		*x.dst = path
	}
	if len(missing) > 0 {
		return tools{}, fmt.Errorf("%s not found on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL (Debian: apt-get install postgresql, which brings the clients and pgbench)",
			strings.Join(missing, ", "))
	}
	return t, nil
}

func findProgram(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first; "9.6" < "10" as numbers, not as strings.
	slices.SortFunc(dirs, func(a, b string) int {
		return cmpVersion(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, dir := range dirs {
		path := filepath.Join(dir, name)
		if info, err := os.Stat(path); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// cmpVersion compares dotted version numbers ("9.6", "15").
func cmpVersion(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			fmt.Sscan(as[i], &x)
		}
		if i < len(bs) {
			fmt.Sscan(bs[i], &y)
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// ensurePgcopydb finds pgcopydb, and when it is missing and install is set, installs
// Debian's package with apt-get (as root, or through sudo -n). It never fails the
// benchmark: when pgcopydb cannot be had, t.pgcopydbMissing says why and that method is
// skipped.
func (t *tools) ensurePgcopydb(ctx context.Context, install bool, logf func(string, ...any)) {
	if path, err := findProgram("pgcopydb"); err == nil {
		t.pgcopydb = path
		return
	}
	if !install {
		t.pgcopydbMissing = "pgcopydb is not installed and -install-pgcopydb=false"
		return
	}
	if err := aptInstall(ctx, "pgcopydb", logf); err != nil {
		t.pgcopydbMissing = fmt.Sprintf("pgcopydb is not installed and could not be installed: %v", err)
		return
	}
	path, err := findProgram("pgcopydb")
	if err != nil {
		t.pgcopydbMissing = "apt-get installed pgcopydb, but no pgcopydb program is on PATH or in /usr/lib/postgresql/*/bin"
		return
	}
	t.pgcopydb = path
}

// ensureWal2json looks for the wal2json output plugin in the library directory of the
// server at uri (pgcopydb 0.10's follow decodes with nothing else) and, when it is
// missing and install is set, installs Debian's postgresql-MAJOR-wal2json. Like
// ensurePgcopydb it never fails the benchmark: t.wal2jsonMissing says why not.
func (t *tools) ensureWal2json(ctx context.Context, uri string, install bool, logf func(string, ...any)) {
	var libdir string
	var major int
	conn, err := pgx.Connect(ctx, uri)
	if err == nil {
		err = conn.QueryRow(ctx, `SELECT (SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'),
			current_setting('server_version_num')::int / 10000`).Scan(&libdir, &major)
		conn.Close(context.Background())
	}
	if err != nil {
		t.wal2jsonMissing = fmt.Sprintf("cannot tell whether the source server has wal2json: %v", err)
		return
	}
	plugin := filepath.Join(libdir, "wal2json.so")
	if _, err := os.Stat(plugin); err == nil {
		return
	}
	pkg := fmt.Sprintf("postgresql-%d-wal2json", major)
	if !install {
		t.wal2jsonMissing = fmt.Sprintf("pgcopydb follow needs the wal2json plugin (%s is missing; Debian: apt-get install %s) and -install-pgcopydb=false", plugin, pkg)
		return
	}
	if err := aptInstall(ctx, pkg, logf); err != nil {
		t.wal2jsonMissing = fmt.Sprintf("pgcopydb follow needs the wal2json plugin (%s is missing) and %s could not be installed: %v", plugin, pkg, err)
		return
	}
	if _, err := os.Stat(plugin); err != nil {
		t.wal2jsonMissing = fmt.Sprintf("apt-get installed %s, but %s is still missing", pkg, plugin)
	}
}

// aptInstall runs apt-get update and apt-get install -y pkg, through sudo -n when not
// root (so a password prompt fails instead of hanging the benchmark).
func aptInstall(ctx context.Context, pkg string, logf func(string, ...any)) error {
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return errors.New("apt-get not found (not a Debian-like system); install pgcopydb by hand")
	}
	prefix := []string{apt}
	if os.Geteuid() != 0 {
		sudo, err := exec.LookPath("sudo")
		if err != nil {
			return errors.New("not root and sudo not found; run `apt-get install -y pgcopydb` as root")
		}
		prefix = []string{sudo, "-n", apt}
	}
	logf("%s not found: installing it with %s install -y %s", pkg, strings.Join(prefix, " "), pkg)
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", pkg}} {
		cmd := exec.CommandContext(ctx, prefix[0], append(prefix[1:], args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w: %s", commandLine(cmd), err, lastLines(out.String(), 5))
		}
	}
	return nil
}

// version runs path --version and returns its first line, or "" when it fails.
func version(ctx context.Context, path string) string {
	if path == "" {
		return ""
	}
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = childEnv()
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return firstLine(strings.TrimSpace(string(out)))
}

// gitDescribe names the pgcaravan revision benchmarked, or "" outside a git checkout.
func gitDescribe(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
