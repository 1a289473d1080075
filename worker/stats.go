package worker

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// stats are the worker's Prometheus metrics.
type stats struct {
	units   *prometheus.CounterVec
	rows    prometheus.Counter
	bytes   prometheus.Counter
	running prometheus.Gauge
}

func newStats() *stats {
	return &stats{
		units: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgcaravan_worker_units_total",
			Help: "Units this worker ran, by kind and outcome (done, failed, released, abandoned)."}, []string{"kind", "outcome"}),
		rows:    prometheus.NewCounter(prometheus.CounterOpts{Name: "pgcaravan_worker_rows_total", Help: "Rows this worker copied."}),
		bytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "pgcaravan_worker_bytes_total", Help: "COPY stream bytes this worker copied."}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgcaravan_worker_units_running", Help: "Units running now."}),
	}
}

func (s *stats) register(r prometheus.Registerer) {
	r.MustRegister(s.units, s.rows, s.bytes, s.running)
}

func (s *stats) outcome(kind pb.UnitKind, outcome string) {
	s.units.WithLabelValues(strings.ToLower(strings.TrimPrefix(kind.String(), "UNIT_KIND_")), outcome).Inc()
}
