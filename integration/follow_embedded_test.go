package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
)

// TestLiveEmbeddedClone: `pgcaravan clone --follow --listen ADDR` runs the
// coordinator, workers and cdcnode in one process. While it follows, its
// progress view and `status` show the lag; `pgcaravan cutover --coordinator
// ADDR` ends it: it cleans up after the cutover and exits 0, and the target
// verifies equal. Its change stream serves metrics and probes on
// --cdc-metrics-listen.
func TestLiveEmbeddedClone(t *testing.T) {
	lf := newLiveFleet(t, 20_000, false)
	metrics := freeAddr(t)
	clone := start(t, "clone", "clone", "--follow", "--replica-identity-full", "--listen", lf.addr,
		"--source", lf.srcURI, "--target", lf.dstURI, "--dir", lf.dir, "--table-jobs", "2", "--index-jobs", "1",
		"--cdc-metrics-listen", metrics)
	// waitFor gives up if the coordinator's process exits: here it is the clone.
	lf.coord = clone
	lf.startLoad()
	lf.waitPhase(pb.Phase_PHASE_FOLLOW)
	following := len(clone.output())
	lf.waitFor("the progress view to show the lag while following", func() bool {
		out := clone.output()[following:]
		return strings.Contains(out, "follow ") && strings.Contains(out, "changes: received") && strings.Contains(out, " lag ")
	})
	out, code := run(t, time.Minute, "status", "--coordinator", lf.addr)
	if code != 0 || !strings.Contains(out, "lag") {
		t.Errorf("status while following (exit %d) shows no lag:\n%s", code, out)
	}
	lf.waitFor("the change stream's metrics to say it applies", func() bool {
		return strings.Contains(scrape(t, metrics), `pgcaravan_cdc_phase{phase="applying"} 1`)
	})
	if m := scrape(t, metrics); !strings.Contains(m, "pgcaravan_cdc_changes_applied_total") || !strings.Contains(m, "pgcaravan_cdc_lag_bytes") {
		t.Errorf("the embedded change stream's /metrics lacks its counters:\n%s", m)
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + metrics + probe)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s while following: %s", probe, resp.Status)
		}
	}
	lf.stopWorkload()
	out, code = run(t, 5*time.Minute, "cutover", "--coordinator", lf.addr)
	if code != 0 || !strings.Contains(out, "cutover complete") {
		t.Fatalf("cutover exited %d:\n%s", code, out)
	}
	if code := clone.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("clone exited %d after the cutover:\n%s", code, tail(clone.output(), 30))
	}
	if out := clone.output(); !strings.Contains(out, "live migration complete") {
		t.Errorf("clone did not say the live migration completed:\n%s", tail(out, 30))
	}
	mustVerify(t, lf.srcURI, lf.dstURI)
	lf.sourceClean()
}
