package coordinator

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// collector exports the coordinator's state to Prometheus at scrape time,
// from the same status the admin API serves, so the two never disagree.
type collector struct {
	st  *store.Store
	rpc *rpcserver.Server

	units, rowsDone, bytesDone, rowsTotal, bytesTotal, workers, phase, expirations, redeliveries *prometheus.Desc
}

func newCollector(st *store.Store, rpc *rpcserver.Server) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgcaravan_"+name, help, labels, nil)
	}
	return &collector{st: st, rpc: rpc,
		units:        d("units", "Units by state.", "state"),
		rowsDone:     d("rows_copied", "Rows copied so far."),
		bytesDone:    d("bytes_copied", "COPY stream bytes copied so far."),
		rowsTotal:    d("rows_estimated", "Rows in the source tables, estimated from the catalog."),
		bytesTotal:   d("bytes_estimated", "Bytes in the source tables (heap + TOAST)."),
		workers:      d("workers_connected", "Workers seen in the last 30 seconds."),
		phase:        d("phase", "1 for the migration's current phase.", "phase"),
		expirations:  d("lease_expirations_total", "Leases that expired because their worker stopped heartbeating."),
		redeliveries: d("unit_redeliveries_total", "Deliveries of units after their first."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.units, c.rowsDone, c.bytesDone, c.rowsTotal, c.bytesTotal, c.workers,
		c.phase, c.expirations, c.redeliveries} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, expirations, redeliveries := c.rpc.Metrics(time.Now())
	if s == nil {
		return
	}
	for _, u := range s.GetUnits() {
		ch <- prometheus.MustNewConstMetric(c.units, prometheus.GaugeValue, float64(u.GetCount()), stateLabel(u.GetState()))
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	gauge(c.rowsDone, s.GetRowsDone())
	gauge(c.bytesDone, s.GetBytesDone())
	gauge(c.rowsTotal, s.GetRowsTotalEstimate())
	gauge(c.bytesTotal, s.GetBytesTotalEstimate())
	gauge(c.workers, int64(len(s.GetWorkers())))
	ch <- prometheus.MustNewConstMetric(c.expirations, prometheus.CounterValue, float64(expirations))
	ch <- prometheus.MustNewConstMetric(c.redeliveries, prometheus.CounterValue, float64(redeliveries))
	for p := range pb.Phase_name {
		if p == 0 {
			continue
		}
		v := 0.0
		if pb.Phase(p) == s.GetPhase() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, phaseLabel(pb.Phase(p)))
	}
}

func stateLabel(s pb.UnitState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "UNIT_STATE_"))
}

func phaseLabel(p pb.Phase) string { return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_")) }
