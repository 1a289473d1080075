package cdcnode

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// TestProbes: /healthz fails only for a loop that stopped turning, and
// /readyz names what the node's phase needs and lacks.
func TestProbes(t *testing.T) {
	now := time.Now()
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	for _, tc := range []struct {
		name string
		set  func(n *Node)
		// want is a part of each problem, in order; none means 200 ok.
		healthz, readyz []string
	}{
		{name: "starting", set: func(*Node) {},
			readyz: []string{"coordinator has not answered"}},
		{name: "streaming during the copy", set: func(n *Node) {
			n.watch = &pb.WatchPhaseResponse{}
			n.ops.coordinator.Store(true)
			n.ops.source.Store(true)
			n.ops.streamTurn.Store(ago(time.Second))
			n.ops.reportTurn.Store(ago(time.Second))
		}},
		{name: "coordinator away during the copy", set: func(n *Node) {
			n.watch = &pb.WatchPhaseResponse{}
			n.ops.source.Store(true)
		}, readyz: []string{"not connected to the coordinator"}},
		{name: "applying with the coordinator away", set: func(n *Node) {
			n.watch = &pb.WatchPhaseResponse{BackfillComplete: true}
			n.ops.source.Store(true)
			n.ops.target.Store(true)
		}},
		{name: "applying without the target", set: func(n *Node) {
			n.watch = &pb.WatchPhaseResponse{BackfillComplete: true}
			n.ops.coordinator.Store(true)
			n.ops.source.Store(true)
		}, readyz: []string{"not connected to the target"}},
		{name: "disk full", set: func(n *Node) {
			n.watch = &pb.WatchPhaseResponse{}
			n.ops.coordinator.Store(true)
			n.diskFull.Store(true)
			n.ops.streamTurn.Store(ago(5 * time.Second))
		}, readyz: []string{"spool's disk is full"}},
		{name: "stream wedged", set: func(n *Node) {
			n.watch = &pb.WatchPhaseResponse{}
			n.ops.coordinator.Store(true)
			n.ops.source.Store(true)
			n.ops.streamTurn.Store(ago(2 * time.Minute))
			n.ops.reportTurn.Store(ago(time.Second))
		}, healthz: []string{"stream loop has not turned for 2m0s"}},
		{name: "report wedged", set: func(n *Node) {
			n.ops.reportTurn.Store(ago(3 * time.Minute))
		}, healthz: []string{"report loop has not turned"}, readyz: []string{"coordinator has not answered"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{cfg: Config{WedgedAfter: time.Minute}}
			tc.set(n)
			for _, p := range []struct {
				path  string
				check func(time.Time) []string
				want  []string
			}{{"/healthz", n.wedged, tc.healthz}, {"/readyz", n.unready, tc.readyz}} {
				rec := httptest.NewRecorder()
				probe(func(time.Time) []string { return p.check(now) }).ServeHTTP(rec, httptest.NewRequest("GET", p.path, nil))
				body := rec.Body.String()
				if len(p.want) == 0 {
					if rec.Code != http.StatusOK || body != "ok\n" {
						t.Errorf("%s = %d %q, want 200 ok", p.path, rec.Code, body)
					}
					continue
				}
				lines := strings.Split(strings.TrimSpace(body), "\n")
				if rec.Code != http.StatusServiceUnavailable || len(lines) != len(p.want) {
					t.Errorf("%s = %d %q, want 503 with %d problems", p.path, rec.Code, body, len(p.want))
					continue
				}
				for i, want := range p.want {
					if !strings.Contains(lines[i], want) {
						t.Errorf("%s problem %d = %q, want it to say %q", p.path, i, lines[i], want)
					}
				}
			}
		})
	}
}
