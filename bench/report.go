package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Results is everything one invocation measured; it is written as JSON.
type Results struct {
	Preset     string            `json:"preset"`
	StartedAt  time.Time         `json:"started_at"`
	FinishedAt time.Time         `json:"finished_at"`
	Machine    Machine           `json:"machine"`
	Tools      map[string]string `json:"tools"`
	// Settings are the postgresql.conf lines both clusters got on top of pgtest's
	// defaults (fsync and synchronous_commit stay on).
	Settings map[string]string `json:"settings"`
	Jobs     JobCounts         `json:"jobs"`
	Datasets []Dataset         `json:"datasets"`
	// Runs are the summary per dataset and method: the median run of each.
	Runs []Summary `json:"runs"`
	// Apply is the apply benchmark, with its sizes.
	ApplySizes *applySizes   `json:"apply_sizes,omitempty"`
	Apply      []ApplyResult `json:"apply,omitempty"`
	// Notes say what could not run, and why.
	Notes []string `json:"notes,omitempty"`
}

// JobCounts are the parallelism the tools were given.
type JobCounts struct {
	TableJobs  int `json:"table_jobs"`
	IndexJobs  int `json:"index_jobs"`
	Workers    int `json:"workers"`
	WorkerJobs int `json:"worker_jobs"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	Cores           int     `json:"cores"`
	CPUModel        string  `json:"cpu_model"`
	MemoryBytes     int64   `json:"memory_bytes"`
	Kernel          string  `json:"kernel"`
	Disk            string  `json:"disk"`
	DiskFreeBytes   int64   `json:"disk_free_bytes"`
	PostgresVersion string  `json:"postgres_version"`
	LoadAtStart     float64 `json:"load1_at_start"`
	LoadAtEnd       float64 `json:"load1_at_end"`
}

// Dataset is one source database.
type Dataset struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// DataBytes is the tables' size (heap, TOAST, free space and visibility maps): what
	// MB/s divides.
	DataBytes     int64 `json:"data_bytes"`
	IndexBytes    int64 `json:"index_bytes"`
	DatabaseBytes int64 `json:"database_bytes"`
	Rows          int64 `json:"rows"`
	// LargeObjects and LargeObjectBytes count pg_largeobject_metadata and the bytes in
	// pg_largeobject: what LO/s divides.
	LargeObjects     int64       `json:"large_objects,omitempty"`
	LargeObjectBytes int64       `json:"large_object_bytes,omitempty"`
	Tables           []TableSize `json:"tables"`
	GenerateSeconds  float64     `json:"generate_seconds"`
}

// TableSize is one source table.
type TableSize struct {
	Name       string `json:"name"`
	Rows       int64  `json:"rows"`
	DataBytes  int64  `json:"data_bytes"`
	IndexBytes int64  `json:"index_bytes"`
}

// Run is one copy of one dataset by one method, verified.
type Run struct {
	WallSeconds float64 `json:"wall_seconds"`
	// Steps are the physical reference's phases (schema, data, post-data, analyze),
	// or pgcaravan's own (from its store: copy, index, constraint, vacuum, ...; phases
	// of units overlap, so they do not add up to the wall time).
	Steps map[string]float64 `json:"steps_seconds,omitempty"`
	// ClientCPUSeconds is the CPU of every client process the method ran, with the
	// children they waited for (pg_dump, pg_restore, psql, pgcopydb's sub-processes), not
	// the servers'.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// PgcaravanCPUSeconds is the own CPU of pgcaravan's processes (not the pg_dump and
	// pg_restore they run); PgcaravanPeakShare the largest share of the machine they used
	// over one sampling interval.
	PgcaravanCPUSeconds float64 `json:"pgcaravan_cpu_seconds,omitempty"`
	PgcaravanPeakShare  float64 `json:"pgcaravan_peak_share,omitempty"`
	HelperCPUSeconds    float64 `json:"pgcaravan_helpers_cpu_seconds,omitempty"`
	Load1AtStart        float64 `json:"load1_at_start"`
	Verified            bool    `json:"verified"`
	VerifySeconds       float64 `json:"verify_seconds"`
	Error               string  `json:"error,omitempty"`
	Log                 string  `json:"log_dir,omitempty"`
}

// Summary is a dataset and method's median run, with what is derived from it.
type Summary struct {
	Dataset string `json:"dataset"`
	Method  string `json:"method"`
	Label   string `json:"label"`
	// Skipped says why the method did not run (pgcopydb not installable, say).
	Skipped string `json:"skipped,omitempty"`
	Run
	AllWallSeconds []float64 `json:"all_wall_seconds,omitempty"`
	MBPerSecond    float64   `json:"mb_per_second,omitempty"`
	// LargeObjectsPerSecond is the dataset's large objects over wall time, on a dataset
	// made of them.
	LargeObjectsPerSecond float64 `json:"large_objects_per_second,omitempty"`
	// ClientCPUShare and PgcaravanCPUShare are CPU seconds over wall time × cores.
	ClientCPUShare    float64 `json:"client_cpu_share,omitempty"`
	PgcaravanCPUShare float64 `json:"pgcaravan_cpu_share,omitempty"`
	// Ratios are wall time over the other method's (lower is faster); 0 when that
	// method has no good run.
	RatioToPgcopydb float64 `json:"ratio_to_pgcopydb,omitempty"`
	RatioToPhysical float64 `json:"ratio_to_physical,omitempty"`
}

// OK says whether the run finished and verified.
func (s Summary) OK() bool { return s.Skipped == "" && s.Error == "" && s.Verified }

// summarize picks the median of runs (by wall time; the lower middle of an even count) and
// derives throughput and CPU shares from it.
func summarize(dataset string, m string, runs []Run, data int64, cores int) Summary {
	s := Summary{Dataset: dataset, Method: m}
	var good []Run
	for _, r := range runs {
		if r.Error == "" && r.Verified {
			good = append(good, r)
		}
	}
	if len(good) < len(runs) {
		// A failed run is reported as such, whatever the others did.
		for _, r := range runs {
			if r.Error != "" || !r.Verified {
				s.Run = r
				return s
			}
		}
	}
	slices.SortFunc(good, func(a, b Run) int { return cmpFloat(a.WallSeconds, b.WallSeconds) })
	for _, r := range good {
		s.AllWallSeconds = append(s.AllWallSeconds, r.WallSeconds)
	}
	s.Run = good[(len(good)-1)/2]
	if s.WallSeconds > 0 {
		s.MBPerSecond = float64(data) / 1e6 / s.WallSeconds
		machine := s.WallSeconds * float64(cores)
		s.ClientCPUShare = s.ClientCPUSeconds / machine
		s.PgcaravanCPUShare = s.PgcaravanCPUSeconds / machine
	}
	return s
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// addRatios fills each summary's ratios to pgcopydb's and the physical reference's wall
// time on the same dataset.
func addRatios(sums []Summary) {
	wall := map[[2]string]float64{}
	for _, s := range sums {
		if s.OK() {
			wall[[2]string{s.Dataset, s.Method}] = s.WallSeconds
		}
	}
	for i := range sums {
		s := &sums[i]
		if !s.OK() {
			continue
		}
		if w := wall[[2]string{s.Dataset, methodPgcopydb}]; w > 0 {
			s.RatioToPgcopydb = s.WallSeconds / w
		}
		if w := wall[[2]string{s.Dataset, methodPhysical}]; w > 0 {
			s.RatioToPhysical = s.WallSeconds / w
		}
	}
}

// printTable writes the results as text tables: one row per dataset and method, then
// pgcaravan's own CPU use.
func printTable(w io.Writer, r *Results) {
	sizes := map[string]int64{}
	lobs := map[string]Dataset{}
	for _, d := range r.Datasets {
		sizes[d.Name] = d.DataBytes
		if d.LargeObjects > 0 {
			lobs[d.Name] = d
		}
	}
	var tables, objects []Summary
	for _, s := range r.Runs {
		if _, ok := lobs[s.Dataset]; ok {
			objects = append(objects, s)
		} else {
			tables = append(tables, s)
		}
	}
	if len(tables) > 0 {
		printCopies(w, r, tables, sizes)
	}
	if len(objects) > 0 {
		if len(tables) > 0 {
			fmt.Fprintln(w)
		}
		printLargeObjects(w, r, objects, lobs)
	}

	printSteps(w, r)
	if !slices.ContainsFunc(r.Runs, func(s Summary) bool { return isPgcaravan(s.Method) && s.OK() }) {
		printNotes(w, r)
		return
	}
	fmt.Fprintf(w, "\npgcaravan's own CPU during its copies (goal: under 10%% of the machine, %d cores;\nhelpers = the pg_dump and pg_restore it runs, not counted as its own):\n\n", r.Machine.Cores)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "dataset\tmethod\twall s\tCPU s\taverage\tpeak (1 s)\thelpers CPU s\t")
	for _, s := range r.Runs {
		if !isPgcaravan(s.Method) || !s.OK() {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.1f%%\t%.1f%%\t%.2f\t\n", s.Dataset, methodLabel(s.Method, r.Jobs), seconds(s.WallSeconds),
			s.PgcaravanCPUSeconds, 100*s.PgcaravanCPUShare, 100*s.PgcaravanPeakShare, s.HelperCPUSeconds)
	}
	tw.Flush()
	printNotes(w, r)
}

// stepOrder is the order phases are shown in: the reference's, then
// pgcaravan's.
var stepOrder = []string{"schema", "data", "post-data", "analyze",
	"snapshot and catalog", "schema dump", "plan", "roles", "pre-data restore", "after-schema",
	"copy", "large objects", "index", "constraint", "foreign key", "vacuum", "post-data rest", "sequences"}

// printSteps writes where the time of the reference and of pgcaravan went:
// the reference's steps run one after another; pgcaravan's phases span
// from a kind's first unit's start to its last unit's end, and overlap.
func printSteps(w io.Writer, r *Results) {
	var rows []Summary
	for _, s := range r.Runs {
		if s.OK() && len(s.Steps) > 0 {
			rows = append(rows, s)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nWhere the time went (seconds; the reference's steps run in turn, pgcaravan's phases overlap):\n\n")
	for _, s := range rows {
		var parts []string
		seen := map[string]bool{}
		for _, name := range stepOrder {
			if v, ok := s.Steps[name]; ok {
				parts = append(parts, fmt.Sprintf("%s %.1f", name, v))
				seen[name] = true
			}
		}
		var rest []string
		for name := range s.Steps {
			if !seen[name] {
				rest = append(rest, name)
			}
		}
		slices.Sort(rest)
		for _, name := range rest {
			parts = append(parts, fmt.Sprintf("%s %.1f", name, s.Steps[name]))
		}
		fmt.Fprintf(w, "  %s / %s (wall %s): %s\n", s.Dataset, methodLabel(s.Method, r.Jobs), seconds(s.WallSeconds), strings.Join(parts, ", "))
	}
}

// printCopies writes the table of the copies of table data.
func printCopies(w io.Writer, r *Results, runs []Summary, sizes map[string]int64) {
	fmt.Fprintf(w, "Copies (wall time includes schema, data, indexes and constraints; MB = 10^6 bytes of table data;\nratios are wall time over pgcopydb's and the physical reference's, lower is faster):\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "dataset\tdata MB\tmethod\twall s\tMB/s\t× pgcopydb\t× physical\tclient CPU\tverified\t")
	for _, s := range runs {
		mb := fmt.Sprintf("%.0f", float64(sizes[s.Dataset])/1e6)
		label := methodLabel(s.Method, r.Jobs)
		switch {
		case s.Skipped != "":
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\tskipped\t\n", s.Dataset, mb, label)
		case s.Error != "":
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\tFAILED\t\n", s.Dataset, mb, label, seconds(s.WallSeconds))
		case !s.Verified:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\tDIFFERS\t\n", s.Dataset, mb, label, seconds(s.WallSeconds))
		default:
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%.1f%%\tok\t\n", s.Dataset, mb, label,
				seconds(s.WallSeconds), s.MBPerSecond, ratio(s.RatioToPgcopydb), ratio(s.RatioToPhysical), 100*s.ClientCPUShare)
		}
	}
	tw.Flush()
}

// printLargeObjects writes the table of the copies of datasets made of large objects,
// whose measure is objects per second.
func printLargeObjects(w io.Writer, r *Results, runs []Summary, lobs map[string]Dataset) {
	fmt.Fprintf(w, "Large objects (wall time includes the schema, the table and every object; LO/s = large objects over wall time;\nLO MB = 10^6 bytes in pg_largeobject; × pgcopydb is wall time over pgcopydb's, lower is faster):\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "dataset\tobjects\tLO MB\tmethod\twall s\tLO/s\t× pgcopydb\tclient CPU\tverified\t")
	for _, s := range runs {
		d := lobs[s.Dataset]
		label := methodLabel(s.Method, r.Jobs)
		head := fmt.Sprintf("%s\t%d\t%.0f\t%s", s.Dataset, d.LargeObjects, float64(d.LargeObjectBytes)/1e6, label)
		switch {
		case s.Skipped != "":
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tskipped\t\n", head)
		case s.Error != "":
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\tFAILED\t\n", head, seconds(s.WallSeconds))
		case !s.Verified:
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\tDIFFERS\t\n", head, seconds(s.WallSeconds))
		default:
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.1f%%\tok\t\n", head, seconds(s.WallSeconds), s.LargeObjectsPerSecond,
				ratio(s.RatioToPgcopydb), 100*s.ClientCPUShare)
		}
	}
	tw.Flush()
}

// printNotes lists what was skipped or failed, and the run's notes.
func printNotes(w io.Writer, r *Results) {
	var failed []string
	for _, s := range r.Runs {
		switch {
		case s.Skipped != "":
			failed = append(failed, fmt.Sprintf("%s/%s skipped: %s", s.Dataset, s.Method, s.Skipped))
		case s.Error != "":
			failed = append(failed, fmt.Sprintf("%s/%s failed: %s", s.Dataset, s.Method, firstLine(s.Error)))
		case !s.Verified:
			failed = append(failed, fmt.Sprintf("%s/%s: the target differs from the source (see %s)", s.Dataset, s.Method, filepath.Join(s.Log, "verify.log")))
		}
	}
	if len(failed)+len(r.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range append(slices.Clone(r.Notes), failed...) {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
}

func seconds(s float64) string { return fmt.Sprintf("%.1f", s) }

func ratio(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// writeJSON writes r to path, creating its directory.
func writeJSON(path string, r *Results) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// describeMachine reads what describes this machine from /proc and /sys; what it cannot
// read stays empty. dir is where the clusters' files go.
func describeMachine(dir string) Machine {
	m := Machine{Cores: numCPU(), Kernel: readTrimmed("/proc/sys/kernel/osrelease"), LoadAtStart: load1()}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 10, 64); err == nil {
		m.MemoryBytes = kb << 10
	}
	m.Disk, m.DiskFreeBytes = describeDisk(dir)
	return m
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// load1 is the one-minute load average, or -1 when unknown.
func load1() float64 {
	f := strings.Fields(readTrimmed("/proc/loadavg"))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// describeDisk names the filesystem holding dir (device, type, whether the device
// rotates) and its free space.
func describeDisk(dir string) (string, int64) {
	var free int64
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		free = int64(st.Bavail) * int64(st.Bsize)
	}
	// The mount with the longest mount point that is a prefix of dir holds it.
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", free
	}
	defer f.Close()
	var dev, fstype, best string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 3 {
			continue
		}
		mp := fl[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, dev, fstype = mp, fl[0], fl[2]
		}
	}
	if dev == "" {
		return "", free
	}
	desc := fmt.Sprintf("%s (%s on %s)", dev, fstype, best)
	if strings.HasPrefix(dev, "/dev/") {
		name := filepath.Base(dev)
		// A partition's queue is its disk's: /sys/class/block/vda1/.. is vda.
		rot := readTrimmed("/sys/class/block/" + name + "/queue/rotational")
		if rot == "" {
			rot = readTrimmed("/sys/class/block/" + name + "/../queue/rotational")
		}
		switch rot {
		case "0":
			desc += ", non-rotational"
		case "1":
			desc += ", rotational"
		}
	}
	return desc, free
}
