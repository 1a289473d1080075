package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat. Linux fixes it at 100
// on every architecture it exports to user space, whatever the kernel's internal HZ.
const clockTicks = 100

// stopGrace is how long a pgcaravan process gets to stop after an interrupt before it is
// killed; other programs are killed at once.
const stopGrace = 30 * time.Second

// cpuTimes is the CPU a process used, user plus system.
type cpuTimes struct {
	// Own is the process's own threads.
	Own time.Duration
	// Total adds the children it waited for (pg_dump, pg_restore, pgcopydb's
	// sub-processes): what wait4 reports.
	Total time.Duration
}

// process is one child the benchmark runs, with its stdout (unless redirected) and stderr
// in a log file, and its CPU accounted at exit.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	// pgcaravan marks pgcaravan's own processes, whose CPU the issue bounds.
	pgcaravan bool

	mu     sync.Mutex
	done   bool      // the final times are read; the process may be reaped
	cpu    cpuTimes  // valid once done
	exited time.Time // valid once done

	started time.Time
}

// newProcess prepares path args...; the caller may still set Stdin and Stdout before
// start. Its environment is the benchmark's own minus PG* and PGCARAVAN_* variables, so
// nothing but the flags decides where it connects.
func newProcess(ctx context.Context, name, logPath, path string, args ...string) *process {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = childEnv()
	// Put the child in its own process group so that Ctrl-C in the terminal reaches only
	// the benchmark, which then stops its children in order (pgcaravan gets an interrupt
	// and time to stop, the clusters go last).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return &process{name: name, cmd: cmd, log: logPath}
}

// asPgcaravan makes an interrupt, not a kill, stop the process, and counts its CPU as
// pgcaravan's.
func (p *process) asPgcaravan() *process {
	p.pgcaravan = true
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(os.Interrupt) }
	p.cmd.WaitDelay = stopGrace
	return p
}

func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue // PGHOST, PGDATABASE, PGCARAVAN_SOURCE_URI, PGCOPYDB_DIR, …
		}
		env = append(env, kv)
	}
	return env
}

// start starts the process with its output appended to its log.
func (p *process) start() error {
	if err := os.MkdirAll(filepath.Dir(p.log), 0o755); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open its log: %w", p.name, err)
	}
	defer f.Close() // the child has its own descriptor
	p.started = time.Now()
	fmt.Fprintf(f, "# %s started\n$ %s\n", p.started.Format(stampFormat), commandLine(p.cmd))
	if p.cmd.Stdout == nil {
		p.cmd.Stdout = f
	}
	p.cmd.Stderr = f
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("%s: start %s: %w", p.name, p.cmd.Path, err)
	}
	return nil
}

// wait waits for the process to exit, reads its CPU times while it is a zombie (the only
// moment its own times and its children's can both be read exactly), then reaps it. The
// error names the process and ends with the tail of its log.
func (p *process) wait() error {
	pid := p.cmd.Process.Pid
	waitErr := waitExited(pid)
	exited := time.Now()
	var own time.Duration
	if waitErr == nil {
		if st, err := readStat(pid); err == nil {
			own = st.own
		}
	}
	p.mu.Lock()
	err := p.cmd.Wait()
	p.cpu.Own = own
	p.exited = exited
	if ps := p.cmd.ProcessState; ps != nil {
		p.cpu.Total = ps.UserTime() + ps.SystemTime()
	}
	p.done = true
	p.mu.Unlock()
	p.note(fmt.Sprintf("# %s exited (%s) after %.2f s; CPU %.2f s own, %.2f s with waited-for children",
		exited.Format(stampFormat), p.cmd.ProcessState, exited.Sub(p.started).Seconds(), p.cpu.Own.Seconds(), p.cpu.Total.Seconds()))
	if err != nil {
		last := tail(p.log, 15)
		return fmt.Errorf("%s failed (%w): %s\n%s", p.name, err, lastMessage(last), indent(last))
	}
	return nil
}

// lastMessage is the last line of a log tail that the program wrote, not the benchmark.
func lastMessage(tail string) string {
	lines := strings.Split(tail, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "# ") && !strings.HasPrefix(l, "(log: ") {
			return l
		}
	}
	return "no output"
}

// stampFormat is the time of day in the logs' start and exit lines.
const stampFormat = "15:04:05.000"

// note appends a line to the process's log, best effort.
func (p *process) note(line string) {
	f, err := os.OpenFile(p.log, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

// ownNow is the process's own CPU so far, and false when it cannot be read (it has just
// been reaped by someone else, which wait prevents while it holds mu).
func (p *process) ownNow() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.cpu.Own, true
	}
	if p.cmd.Process == nil {
		return 0, false
	}
	st, err := readStat(p.cmd.Process.Pid)
	if err != nil {
		return 0, false
	}
	return st.own, true
}

// waitExited blocks until process pid has exited, without reaping it
// (waitid(P_PID, pid, WEXITED|WNOWAIT)), so that /proc/pid/stat still holds its final
// times. The syscall package has no Waitid; golang.org/x/sys/unix would be a new direct
// dependency for one call.
func waitExited(pid int) error {
	const (
		pPID    = 1
		wExited = 0x4
		wNoWait = 0x01000000
	)
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), wExited|wNoWait, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return fmt.Errorf("waitid %d: %w", pid, errno)
		}
	}
}

// procStat is what the benchmark reads from /proc/PID/stat.
type procStat struct {
	own      time.Duration // utime + stime
	children time.Duration // cutime + cstime: waited-for children
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// parseStat parses /proc/PID/stat. The command name (field 2) is in parentheses and may
// hold spaces and parentheses itself, so fields are counted after the last ')'.
func parseStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat: %d fields after the command name, want at least 15", len(f))
	}
	var ticks [4]int64
	for k := range ticks {
		v, err := strconv.ParseInt(f[11+k], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat: field %d: %w", 14+k, err)
		}
		ticks[k] = v
	}
	tick := time.Second / clockTicks
	return procStat{
		own:      time.Duration(ticks[0]+ticks[1]) * tick,
		children: time.Duration(ticks[2]+ticks[3]) * tick,
	}, nil
}

// group is the processes of one timed run. If one fails, the others are stopped: a worker
// whose coordinator died would otherwise wait for it forever.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	procs  []*process
	meter  *cpuMeter
	// pipeEnds are the parent's copies of the pipes between processes, closed once the
	// processes have started.
	pipeEnds []*os.File
}

func newGroup(ctx context.Context, meter *cpuMeter) *group {
	ctx, cancel := context.WithCancel(ctx)
	return &group{ctx: ctx, cancel: cancel, meter: meter}
}

// command prepares a process in the group; it starts with startAll.
func (g *group) command(name, logPath, path string, args ...string) *process {
	p := newProcess(g.ctx, name, logPath, path, args...)
	g.procs = append(g.procs, p)
	return p
}

// run starts every prepared process and waits for all of them. The first failure is
// returned; the rest are stopped.
func (g *group) run() error {
	defer g.cancel()
	var started []*process
	var startErr error
	for _, p := range g.procs {
		if err := p.start(); err != nil {
			startErr = err
			g.cancel()
			break
		}
		started = append(started, p)
		if p.pgcaravan && g.meter != nil {
			g.meter.add(p)
		}
	}
	// The parent's copies of the pipe ends must go, or a reader never sees EOF.
	for _, f := range g.pipeEnds {
		f.Close()
	}
	errs := make([]error, len(started))
	var wg sync.WaitGroup
	for i, p := range started {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = p.wait(); errs[i] != nil {
				g.cancel()
			}
		}()
	}
	wg.Wait()
	if startErr != nil {
		return startErr
	}
	// The first process to fail is the cause; the others were stopped because of it.
	var first error
	var firstAt time.Time
	for i, err := range errs {
		if err != nil && (first == nil || started[i].exited.Before(firstAt)) {
			first, firstAt = err, started[i].exited
		}
	}
	return first
}

// cpu sums the CPU of every process of the group, and of pgcaravan's processes alone.
func (g *group) cpu() (all, pgcaravan cpuTimes) {
	for _, p := range g.procs {
		all.Own += p.cpu.Own
		all.Total += p.cpu.Total
		if p.pgcaravan {
			pgcaravan.Own += p.cpu.Own
			pgcaravan.Total += p.cpu.Total
		}
	}
	return all, pgcaravan
}

// pipe connects from's stdout to to's stdin through a kernel pipe: no benchmark code
// touches the bytes.
func (g *group) pipe(from, to *process) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe %s to %s: %w", from.name, to.name, err)
	}
	from.cmd.Stdout = w
	to.cmd.Stdin = r
	g.pipeEnds = append(g.pipeEnds, r, w)
	return nil
}

// cpuMeter samples the own CPU of pgcaravan's processes once per interval, for the peak
// share of the machine over any one interval.
type cpuMeter struct {
	interval time.Duration
	cores    int

	mu    sync.Mutex
	procs []*process
	last  map[*process]time.Duration
	peak  float64 // fraction of the machine
}

func newCPUMeter(interval time.Duration, cores int) *cpuMeter {
	return &cpuMeter{interval: interval, cores: cores, last: map[*process]time.Duration{}}
}

func (m *cpuMeter) add(p *process) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.procs = append(m.procs, p)
	m.last[p] = 0
}

// run samples until ctx is done.
func (m *cpuMeter) run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.sample(now.Sub(prev))
			prev = now
		}
	}
}

func (m *cpuMeter) sample(elapsed time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var used time.Duration
	for _, p := range m.procs {
		own, ok := p.ownNow()
		if !ok {
			continue
		}
		used += own - m.last[p]
		m.last[p] = own
	}
	if elapsed > 0 {
		m.peak = max(m.peak, used.Seconds()/(elapsed.Seconds()*float64(m.cores)))
	}
}

func (m *cpuMeter) peakShare() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// commandLine is how a command is shown in logs. Connection URIs here carry no password.
func commandLine(cmd *exec.Cmd) string {
	return strings.Join(cmd.Args, " ")
}

// tail returns the last n lines of the file at path, or a note that it cannot be read.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxBytes = 64 << 10
	if info, err := f.Stat(); err == nil && info.Size() > maxBytes {
		if _, err := f.Seek(-maxBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(log %s: %v)", path, err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(log %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n(log: " + path + ")"
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
