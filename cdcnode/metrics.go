package cdcnode

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/metrics"
)

// ops is what /metrics, /healthz and /readyz read beyond the progress the
// coordinator gets: connection states, loop turns and event counts.
type ops struct {
	// started is set once the spool is open.
	started atomic.Bool
	// coordinator: the WatchPhase stream is up; source: the slot is
	// streaming to the node; target: the apply session is set up.
	coordinator, source, target atomic.Bool
	// Unix nanoseconds of the stream and report loops' last turns; 0
	// before a loop's first.
	streamTurn, reportTurn atomic.Int64
	// diskFullPauses counts the times receiving stopped on a full spool disk.
	diskFullPauses atomic.Int64
	// reconnects counts retries after a lost or refused connection, by peer.
	reconnects [numPeers]atomic.Int64
}

const (
	peerSource = iota
	peerTarget
	peerCoordinator
	numPeers
)

var peerNames = [numPeers]string{"source", "target", "coordinator"}

// turn records a loop's turn now.
func turn(at *atomic.Int64) { at.Store(time.Now().UnixNano()) }

// listenOps binds --metrics-listen and serves /metrics, /healthz and
// /readyz on it.
func (n *Node) listenOps() (*metrics.Server, error) {
	reg := metrics.NewRegistry()
	reg.MustRegister(newCollector(n))
	ms, err := metrics.Listen(n.cfg.MetricsListen, reg)
	if err != nil {
		return nil, err
	}
	ms.Handle("/healthz", probe(n.wedged))
	ms.Handle("/readyz", probe(n.unready))
	return ms, nil
}

// probe answers 200 "ok" when check finds nothing wrong, else 503 with
// one line per problem.
func probe(check func(time.Time) []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		problems := check(time.Now())
		if len(problems) == 0 {
			fmt.Fprintln(w, "ok")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
	})
}

// wedged is liveness: the process answers, and the stream and report
// loops, which turn every few seconds whatever the databases do, have
// turned within WedgedAfter. The apply loop is not checked: a target
// statement may rightly run for long (a lock wait, a REPLICA IDENTITY FULL
// table without an index), and a restart would only roll it back and run
// it again. Nor is the watch loop, which waits for the coordinator's news.
func (n *Node) wedged(now time.Time) []string {
	var problems []string
	for _, l := range []struct {
		name string
		at   *atomic.Int64
	}{{"stream", &n.ops.streamTurn}, {"report", &n.ops.reportTurn}} {
		if at := l.at.Load(); at != 0 && now.Sub(time.Unix(0, at)) > n.cfg.WedgedAfter {
			problems = append(problems, fmt.Sprintf("the %s loop has not turned for %s (limit %s): wedged",
				l.name, now.Sub(time.Unix(0, at)).Round(time.Second), n.cfg.WedgedAfter))
		}
	}
	return problems
}

// unready is readiness: the slot streams to the node, and, while it only
// streams (the copy runs), the coordinator's stream is up, since it brings
// the word to apply; once it applies, the target session is up (it goes on
// applying while the coordinator is away).
func (n *Node) unready(time.Time) []string {
	var problems []string
	w := n.state()
	if w == nil {
		return []string{"the coordinator has not answered yet"}
	}
	if !n.ops.source.Load() {
		if n.diskFull.Load() {
			problems = append(problems, "receiving is paused: the spool's disk is full")
		} else {
			problems = append(problems, "the source's slot is not streaming")
		}
	}
	if w.GetBackfillComplete() {
		if !n.ops.target.Load() {
			problems = append(problems, "applying, but not connected to the target")
		}
	} else if !n.ops.coordinator.Load() {
		problems = append(problems, "waiting for the backfill, but not connected to the coordinator")
	}
	return problems
}

// state is the coordinator's last word, or nil.
func (n *Node) state() *pb.WatchPhaseResponse {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.watch
}

// collector exports the node's state to Prometheus at scrape time, from
// the same progress report the coordinator gets.
type collector struct {
	n *Node

	received, flushed, applied, lagBytes, lagSeconds, spoolBytes, segments, changes, txns,
	pauses, paused, reconnects, phase *prometheus.Desc
}

func newCollector(n *Node) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgcaravan_cdc_"+name, help, labels, nil)
	}
	return &collector{n: n,
		received: d("received_lsn", "Highest WAL position the source has sent, or said in a keepalive it has flushed (bytes)."),
		flushed:  d("flushed_lsn", "End of the last transaction fsynced in the spool, reported to the source as flushed (bytes)."),
		applied:  d("applied_lsn", "End of the last transaction applied on the target: its replication origin (bytes)."),
		lagBytes: d("lag_bytes", "received_lsn minus applied_lsn (or the slot's start before anything is applied)."),
		lagSeconds: d("lag_seconds", "Seconds since the commit of the last applied transaction while spooled ones wait; "+
			"0 when caught up, absent until this process applied one."),
		spoolBytes: d("spool_bytes", "Size of the spool's segment files."),
		segments:   d("spool_segments", "Segment files in the spool."),
		changes:    d("changes_applied_total", "Changes applied on the target by this process."),
		txns:       d("transactions_applied_total", "Source transactions applied on the target by this process."),
		pauses:     d("disk_full_pauses_total", "Times receiving stopped because the spool's disk was full."),
		paused:     d("receiving_paused", "1 while receiving is stopped because the spool's disk is full (WAL waits on the source)."),
		reconnects: d("reconnects_total", "Retries after a lost or refused connection, by peer.", "peer"),
		phase:      d("phase", "1 for the node's phase: streaming (the copy runs, changes are spooled) or applying.", "phase"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.flushed, c.applied, c.lagBytes, c.lagSeconds, c.spoolBytes, c.segments,
		c.changes, c.txns, c.pauses, c.paused, c.reconnects, c.phase} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.pauses, n.ops.diskFullPauses.Load())
	for p, name := range peerNames {
		counter(c.reconnects, n.ops.reconnects[p].Load(), name)
	}
	w := n.state()
	if w != nil {
		applying := 0.0
		if w.GetBackfillComplete() {
			applying = 1
		}
		gauge(c.phase, 1-applying, "streaming")
		gauge(c.phase, applying, "applying")
	}
	if !n.ops.started.Load() {
		return
	}
	p := n.progress()
	lsn := func(s string) pglogrepl.LSN {
		v, _ := pglogrepl.ParseLSN(s)
		return v
	}
	received, flushed, applied := lsn(p.GetReceivedLsn()), lsn(p.GetFlushedLsn()), lsn(p.GetAppliedLsn())
	gauge(c.received, float64(received))
	gauge(c.flushed, float64(flushed))
	gauge(c.applied, float64(applied))
	// As the coordinator's status counts it: from the slot's start while
	// nothing is applied.
	base := max(applied, lsn(w.GetStartLsn()))
	lag := 0.0
	if received > base {
		lag = float64(received - base)
	}
	gauge(c.lagBytes, lag)
	// Pending means spooled, not received: keepalives move received past
	// WAL the slot never sends us (other databases'), which is no lag.
	if t := p.GetAppliedCommitTime(); t != nil {
		lagSeconds := 0.0
		if flushed > applied {
			lagSeconds = max(time.Since(t.AsTime()).Seconds(), 0)
		}
		gauge(c.lagSeconds, lagSeconds)
	}
	gauge(c.spoolBytes, float64(p.GetSpoolBytes()))
	gauge(c.segments, float64(countSegments(filepath.Join(n.cfg.Dir, "spool"))))
	counter(c.changes, p.GetChangesApplied())
	counter(c.txns, p.GetTransactionsApplied())
	paused := 0.0
	if p.GetDiskFull() {
		paused = 1
	}
	gauge(c.paused, paused)
}

// countSegments counts the spool's segment files (DIR/spool/*.seg).
func countSegments(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	count := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".seg") && e.Type().IsRegular() {
			count++
		}
	}
	return count
}
