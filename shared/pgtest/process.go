package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// waitDelay bounds how long a finished child may keep our output pipes open. pg_ctl hands
// the server its own log file, so this only matters if that ever changes; a test should
// then fail rather than hang.
const waitDelay = 10 * time.Second

// binaries are the PostgreSQL programs a cluster runs. postgres itself is found by initdb
// and pg_ctl next to their own (symlink-resolved) path.
type binaries struct {
	initdb string
	pgCtl  string
	psql   string
}

func findBinaries() (binaries, error) {
	var b binaries
	var err error
	if b.initdb, err = findBinary("initdb"); err != nil {
		return binaries{}, err
	}
	if b.pgCtl, err = findBinary("pg_ctl"); err != nil {
		return binaries{}, err
	}
	if b.psql, err = findBinary("psql"); err != nil {
		return binaries{}, err
	}
	return b, nil
}

// findBinary looks on PATH first, then in pg_config --bindir, then in the newest
// /usr/lib/postgresql/N/bin: Debian and Ubuntu install the server programs only there.
func findBinary(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		path := filepath.Join(strings.TrimSpace(string(out)), name)
		if isExecutable(path) {
			return path, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", math.Inf(-1)
	for _, dir := range dirs {
		// Versions are "9.6", "10", "15": as numbers they sort right.
		version, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		path := filepath.Join(dir, name)
		if err == nil && version > bestVersion && isExecutable(path) {
			best, bestVersion = path, version
		}
	}
	if best != "" {
		return best, nil
	}
	return "", fmt.Errorf("pgtest: %s not found on PATH, in pg_config --bindir or in /usr/lib/postgresql/*/bin; install the PostgreSQL 15 server and client packages", name)
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// serverCredential returns whom initdb, pg_ctl and the server run as. PostgreSQL refuses to
// run as root, so under root that is the postgres OS user; otherwise nil, which means the
// current user.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL will not run as root, so the server must run as the OS user postgres: %w (create it, e.g. useradd --system postgres)", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: OS user postgres has uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: OS user postgres has gid %q: %w", u.Gid, err)
	}
	// Groups is empty on purpose: the server must not keep root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// childEnv is the whole environment of every child. The caller's PG* variables (PGHOST,
// PGPORT, PGDATA, PGOPTIONS, …) would otherwise redirect or change what the harness runs.
func childEnv(locale string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=" + locale}
}

// serverCommand prepares initdb or pg_ctl to run as the cluster's OS user, in the cluster
// directory: the postgres user may not be able to enter the caller's working directory.
func (c *Cluster) serverCommand(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = childEnv(c.locale)
	cmd.Dir = c.root
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	cmd.WaitDelay = waitDelay
	return cmd
}

// run runs cmd and puts its output in the error: initdb and pg_ctl say there what went wrong.
func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", commandLine(cmd), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func commandLine(cmd *exec.Cmd) string {
	return filepath.Base(cmd.Path) + " " + strings.Join(cmd.Args[1:], " ")
}

// waitSeconds is pg_ctl's -t: what is left of ctx, or pg_ctl's own default of 60 s.
func waitSeconds(ctx context.Context) string {
	deadline, ok := ctx.Deadline()
	if !ok {
		return "60"
	}
	return strconv.Itoa(max(1, int(math.Ceil(time.Until(deadline).Seconds()))))
}

// processAlive reports whether pid names a process. EPERM means it exists but belongs to
// someone else.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// livePostmaster reports whether the postmaster named in data's postmaster.pid is running.
// PIDs are reused, and a stale postmaster.pid must not make us signal another program, so
// where /proc exists the process must have its working directory in data (the postmaster
// chdirs there). sure is false when a live process holds the PID and /proc cannot tell
// whose it is.
func livePostmaster(data string) (alive, sure bool) {
	content, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return false, true
	}
	firstLine, _, _ := strings.Cut(string(content), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(firstLine))
	if err != nil || pid <= 0 || !processAlive(pid) {
		return false, true
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		return true, false // no procfs here (macOS)
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if errors.Is(err, fs.ErrNotExist) {
		return false, true // exited since the signal check
	}
	if err != nil {
		return true, false
	}
	want, err := filepath.EvalSymlinks(data)
	if err != nil {
		return true, false
	}
	return cwd == want, true
}
