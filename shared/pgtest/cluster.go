package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// portAttempts is how many free ports New tries. Between closing the probe listener
	// and the server's bind, another process (often another test's cluster) can take the
	// port.
	portAttempts = 3
	// closeTimeout bounds Close, which has no context: it runs from t.Cleanup, after the
	// test's context is already cancelled.
	closeTimeout = 30 * time.Second
	// tailBytes is how much of the end of the server log LogTail reads.
	tailBytes = 1 << 20
)

// ownerFile, in the cluster directory, holds the PID of the process that made the cluster,
// so that a later New can tell an orphan from a cluster in use (see reapOrphans).
const ownerFile = "pgtest.owner"

// Options configure a cluster.
type Options struct {
	// Settings are extra postgresql.conf lines (name -> value), applied after the defaults.
	// Values are written quoted, so give them bare: "256MB", not "'256MB'". The port is the
	// harness's to choose and may not be set here.
	Settings map[string]string
	// Durable keeps fsync and synchronous_commit on (benchmarks); default off for speed.
	Durable bool
	// Logf, if set, receives progress lines (e.g. t.Logf).
	Logf func(format string, args ...any)
}

// Cluster is one running (or stopped) PostgreSQL cluster in a directory of its own.
//
// Port, Dir, URI and LogTail may be called at any time, from any goroutine. CreateDatabase,
// Exec and Psql may run concurrently with each other. Stop, Start, Restart and Close must
// not run concurrently with anything else on the same cluster.
type Cluster struct {
	opts    Options
	bin     binaries
	cred    *syscall.Credential // nil: children run as the current user
	locale  string              // LC_ALL of the children: the locale initdb accepted
	root    string              // from os.MkdirTemp; holds data, the server log and ownerFile
	data    string
	logPath string
	port    int

	mu     sync.Mutex
	closed bool
}

// New creates a cluster with initdb and starts it. On error it removes whatever it made.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	if err := checkSettings(opts.Settings); err != nil {
		return nil, err
	}
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, bin: bin, cred: cred, locale: "C"}
	reapOrphans(ctx, bin, cred, c.logf)
	if err := c.create(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

func (c *Cluster) create(ctx context.Context) error {
	// 1. Directory: fresh, and owned by the server's OS user, who must be able to create
	//    the data directory and the log in it. t.TempDir() would not do: its parents are
	//    private to the user running the tests.
	root, err := os.MkdirTemp("", "pgtest-*")
	if err != nil {
		return fmt.Errorf("pgtest: create cluster directory: %w", err)
	}
	c.root = root
	c.data = filepath.Join(root, "data")
	c.logPath = filepath.Join(root, "server.log")
	if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("pgtest: create cluster directory: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(root, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: give cluster directory %s to the postgres OS user: %w", root, err)
		}
	}

	// 2. initdb.
	if err := c.initdb(ctx); err != nil {
		return err
	}
	confPath := filepath.Join(c.data, "postgresql.conf")
	initialConf, err := os.ReadFile(confPath)
	if err != nil {
		return fmt.Errorf("pgtest: read %s: %w", confPath, err)
	}

	// 3. Configure and start on a free port. The whole file is rewritten on each attempt,
	//    so the port line stays single and the file reads as one would expect.
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return err
		}
		conf := append(slices.Clip(initialConf), c.settingsBlock()...)
		if err := os.WriteFile(confPath, conf, 0o600); err != nil {
			return fmt.Errorf("pgtest: write %s: %w", confPath, err)
		}
		logStart := fileSize(c.logPath)
		err = c.start(ctx)
		if err == nil {
			return nil
		}
		if attempt == portAttempts || !strings.Contains(c.logFrom(logStart), "Address already in use") {
			return err
		}
		c.logf("pgtest: port %d was taken before the server could bind it; trying another", c.port)
	}
}

// initdb initializes the data directory. C.UTF-8 is not installed everywhere (older glibc,
// musl); C is.
func (c *Cluster) initdb(ctx context.Context) error {
	var errs []error
	for _, locale := range []string{"C.UTF-8", "C"} {
		// initdb leaves nothing behind when it fails in a directory it created, but an
		// interrupted run can.
		if err := os.RemoveAll(c.data); err != nil {
			return fmt.Errorf("pgtest: clear %s: %w", c.data, err)
		}
		c.locale = locale
		// --no-sync: nothing needs the initial files on disk before the server starts, and
		// syncing them costs most of initdb's time.
		err := run(c.serverCommand(ctx, c.bin.initdb, "-D", c.data, "-U", "postgres", "--auth=trust",
			"-E", "UTF8", "--locale="+locale, "--no-sync"))
		if err == nil {
			c.logf("pgtest: initdb %s (locale %s)", c.data, locale)
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("pgtest: initdb: %w", errors.Join(errs...))
}

// settingsBlock is appended to initdb's postgresql.conf. Later lines win, so the caller's
// Settings come last.
func (c *Cluster) settingsBlock() string {
	var b strings.Builder
	b.WriteString("\n# Added by pgtest.\n")
	set := func(name, value string) {
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(value, "'", "''"))
	}
	set("listen_addresses", "127.0.0.1")
	set("port", strconv.Itoa(c.port))
	// No Unix socket: its directory would be one more path shared between clusters, and
	// every client here uses TCP.
	set("unix_socket_directories", "")
	set("wal_level", "logical")
	set("max_wal_senders", "10")
	set("max_replication_slots", "10")
	set("max_connections", "100")
	set("shared_buffers", "128MB")
	if !c.opts.Durable {
		// A test cluster is thrown away after a crash anyway.
		set("fsync", "off")
		set("synchronous_commit", "off")
		set("full_page_writes", "off")
	}
	// The server writes to the file pg_ctl -l names, outside the data directory.
	set("logging_collector", "off")
	for _, name := range slices.Sorted(maps.Keys(c.opts.Settings)) {
		set(name, c.opts.Settings[name])
	}
	return b.String()
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// checkSettings rejects what settingsBlock cannot write as one valid line, and the port,
// which URI and the retry on a taken port depend on.
func checkSettings(settings map[string]string) error {
	for name, value := range settings {
		switch {
		case !settingName.MatchString(name):
			return fmt.Errorf("pgtest: setting %q is not a valid parameter name", name)
		case strings.EqualFold(name, "port"):
			return errors.New(`pgtest: Settings may not set "port"; the harness picks a free one (see Cluster.Port)`)
		case strings.ContainsAny(value, "\r\n\x00"):
			return fmt.Errorf("pgtest: setting %s: value %q spans lines", name, value)
		}
	}
	return nil
}

// freePort asks the kernel for a port nobody listens on. It is free when the listener
// closes, and usually still free when the server binds it a moment later.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Close stops the server at once (pg_ctl stop -m immediate: the data is about to go, so a
// shutdown checkpoint would be wasted) and removes the cluster directory. Calling it again
// does nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return c.destroy(ctx)
}

// destroy is Close without the bookkeeping, for reapOrphans too.
func (c *Cluster) destroy(ctx context.Context) error {
	if c.root == "" {
		return nil // New failed before making anything
	}
	var errs []error
	// A server a test stopped, or killed to inject a fault, has nothing to stop.
	if alive, _ := livePostmaster(c.data); alive {
		err := run(c.serverCommand(ctx, c.bin.pgCtl, "stop", "-D", c.data, "-m", "immediate", "-w", "-t", waitSeconds(ctx), "-s"))
		if err != nil {
			errs = append(errs, fmt.Errorf("pgtest: stop cluster in %s: %w", c.data, err))
		}
	}
	if err := os.RemoveAll(c.root); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: remove cluster directory: %w", err))
	} else {
		c.logf("pgtest: removed cluster %s", c.root)
	}
	return errors.Join(errs...)
}

// Port is the TCP port the server listens on at 127.0.0.1. It stays the same across Stop
// and Start.
func (c *Cluster) Port() int { return c.port }

// Dir is the data directory.
func (c *Cluster) Dir() string { return c.data }

// URI is a libpq/pgx connection URI for database dbname as the superuser postgres.
func (c *Cluster) URI(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, url.PathEscape(dbname))
}

// CreateDatabase creates database name, which may contain any character but NUL.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("pgtest: create database %q: names cannot contain NUL", name)
	}
	quoted := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE "+quoted); err != nil {
		return fmt.Errorf("pgtest: create database %q: %w", name, err)
	}
	return nil
}

// Exec runs sql, which may hold many statements, in database dbname and stops at the first
// error. The script goes through psql's standard input, so each statement runs on its own,
// as in a file: CREATE DATABASE and VACUUM work, and nothing wraps the whole in a
// transaction.
func (c *Cluster) Exec(ctx context.Context, dbname, sql string) error {
	return c.psql(ctx, dbname, strings.NewReader(sql), "-f", "-")
}

// Psql runs psql -X -q -v ON_ERROR_STOP=1 -d URI(dbname) args..., for example "-f",
// path. The error includes psql's stderr. Query output is discarded; pass "-o", path to keep
// it.
func (c *Cluster) Psql(ctx context.Context, dbname string, args ...string) error {
	return c.psql(ctx, dbname, nil, args...)
}

func (c *Cluster) psql(ctx context.Context, dbname string, stdin io.Reader, args ...string) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	// psql is a client, so it runs as the caller and may read the caller's files.
	cmd := exec.CommandContext(ctx, c.bin.psql,
		append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.URI(dbname)}, args...)...)
	cmd.Env = childEnv(c.locale)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = waitDelay
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgtest: %s: %w: %s", commandLine(cmd), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast) and keeps the data.
func (c *Cluster) Stop(ctx context.Context) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	err := run(c.serverCommand(ctx, c.bin.pgCtl, "stop", "-D", c.data, "-m", "fast", "-w", "-t", waitSeconds(ctx), "-s"))
	if err != nil {
		return fmt.Errorf("pgtest: stop cluster on port %d: %w", c.port, err)
	}
	c.logf("pgtest: stopped cluster on port %d", c.port)
	return nil
}

// Start starts a stopped server again, on the same port.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	return c.start(ctx)
}

// Restart is Stop then Start.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx); err != nil {
		return err
	}
	return c.Start(ctx)
}

// start waits (pg_ctl -w) until the server accepts connections, or until ctx's deadline.
func (c *Cluster) start(ctx context.Context) error {
	err := run(c.serverCommand(ctx, c.bin.pgCtl, "start", "-D", c.data, "-l", c.logPath, "-w", "-t", waitSeconds(ctx), "-s"))
	if err != nil {
		// pg_ctl only says to read the log; the reason is there.
		return fmt.Errorf("pgtest: start cluster on port %d: %w\nserver log:\n%s", c.port, err, c.LogTail(20))
	}
	c.logf("pgtest: started cluster on port %d in %s", c.port, c.data)
	return nil
}

// LogTail returns the last n lines of the server log, for failure messages.
func (c *Cluster) LogTail(n int) string {
	if n <= 0 {
		return ""
	}
	start := max(0, fileSize(c.logPath)-tailBytes)
	lines := strings.Split(strings.TrimRight(c.logFrom(start), "\n"), "\n")
	if start > 0 {
		lines = lines[1:] // cut in the middle
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logFrom returns the server log from byte offset on, or "" if there is none.
func (c *Cluster) logFrom(offset int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	text, _ := io.ReadAll(f)
	return string(text)
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

func (c *Cluster) checkOpen() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("pgtest: cluster on port %d is closed", c.port)
	}
	return nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}
