package deploy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"

	"github.com/pgcaravan/pgcaravan/cdcnode"
	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/fleet"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
	"github.com/pgcaravan/pgcaravan/shared/testlog"
	"github.com/pgcaravan/pgcaravan/worker"
)

// A document's Cutover and Cleanup commands end a live migration, so they
// cannot run against the coordinators the other commands share. The test
// splits each document at its first Cutover command: what comes before
// runs against the shared coordinators; the Cutover command and everything
// after it run, in order, against a live migration of their own, started
// for that document the way the chart starts it:
//
//   - fleet (token or tls): a coordinator with --follow and
//     --replica-identity-full, a worker and a real cdcnode, in-process
//     through their New and Run, as the chart's StatefulSets and
//     Deployment run them;
//   - open (the clone Job): `pgcaravan clone --follow` in-process through
//     fleet.Run, which must then end by itself after the Cutover (the Job
//     completes).
//
// Before the document's commands run, the copy is done (PHASE_FOLLOW) and
// the source has changed since the snapshot: after the Cutover command the
// target must hold those changes, and after the Cleanup command (or the
// clone's own cleanup) every process must have ended cleanly and the slot
// and publications must be gone from the source.

// isCutover and isCleanup say whether a documented grpcurl line calls
// those methods.
func isCutover(line string) bool { return strings.Contains(line, "pgcaravan.v1.AdminService/Cutover") }
func isCleanup(line string) bool { return strings.Contains(line, "pgcaravan.v1.AdminService/Cleanup") }

// splitAtCutover returns the lines before the first Cutover command and
// the lines from it on.
func splitAtCutover(lines []string) (shared, live []string) {
	i := slices.IndexFunc(lines, isCutover)
	if i < 0 {
		return lines, nil
	}
	return lines[:i], lines[i:]
}

// liveMigration is one --follow migration whose copy is done.
type liveMigration struct {
	name           string
	addr           string
	srcURI, dstURI string
	// done is closed when every process of the migration has returned;
	// errs then holds their errors by process.
	done chan struct{}
	errs map[string]error
	// client is how the harness reaches the admin API.
	client rpcsec.Config
	// clone: the processes end by themselves after the Cutover.
	clone bool
	// nextOrder is the next order id the source changes insert.
	nextOrder int
	// lastChange is the source's WAL insert and flush positions right
	// after the last change committed (for the failure message).
	lastChange string
	// cdcMetrics is the cdcnode's --metrics-listen (fleet only), as the
	// chart starts it; cdcNames gets the metric names it served once it
	// had applied changes.
	cdcMetrics string
	cdcNames   map[string]bool
}

// liveSchemaExtra is a table without a key: with
// --replica-identity-full (the chart's migration.replicaIdentityFull) its
// UPDATEs and DELETEs are carried too.
const liveSchemaExtra = `CREATE TABLE notes (at timestamptz NOT NULL DEFAULT now(), body text NOT NULL);
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 50) g;`

// startLive starts a live migration of a new database db for a document
// whose commands take route ("token", "tls" or "open"), and waits until
// its copy is done.
func startLive(t *testing.T, src, dst *pgtest.Cluster, db, route string, certs testCerts) *liveMigration {
	t.Helper()
	ctx := t.Context()
	loadSource(t, src, db)
	if err := src.Exec(ctx, db, liveSchemaExtra); err != nil {
		t.Fatal(err)
	}
	if err := dst.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	lm := &liveMigration{name: db, srcURI: src.URI(db), dstURI: dst.URI(db), done: make(chan struct{}),
		errs: map[string]error{}, nextOrder: 100000, cdcNames: map[string]bool{}}
	if route == "open" {
		lm.startClone(t)
	} else {
		lm.startFleet(t, route, certs)
	}
	lm.waitPhase(t, pb.Phase_PHASE_FOLLOW)
	return lm
}

// startFleet runs a coordinator with --follow, a worker and a cdcnode,
// with the security of route.
func (lm *liveMigration) startFleet(t *testing.T, route string, certs testCerts) {
	t.Helper()
	sec := rpcsec.Config{Token: testToken}
	if route == "tls" {
		sec.CertFile, sec.KeyFile, sec.CAFile = certs.serverCert, certs.serverKey, certs.ca
	}
	cfg := coordinator.DefaultConfig()
	cfg.SourceURI, cfg.TargetURI, cfg.Dir = lm.srcURI, lm.dstURI, t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Security = sec
	cfg.ExitGrace = 100 * time.Millisecond
	cfg.Follow, cfg.ReplicaIdentityFull = true, true
	coord, err := coordinator.New(cfg, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	client := rpcsec.Config{Token: testToken}
	if route == "tls" {
		client.CAFile, client.CertFile, client.KeyFile = certs.ca, certs.clientCert, certs.clientKey
	}
	lm.client = client
	ctx, cancel := context.WithCancel(context.Background())
	coordDone := make(chan struct{})
	var coordErr error
	go func() {
		defer close(coordDone)
		coordErr = coord.Run(ctx)
	}()
	select {
	case <-coord.Ready():
	case <-coordDone:
		cancel()
		t.Fatalf("coordinator stopped before it listened: %v", coordErr)
	}
	lm.addr = coord.Addr()
	procs := map[string]func(context.Context) error{}

	wcfg := worker.DefaultConfig()
	wcfg.Coordinator, wcfg.SourceURI, wcfg.TargetURI = lm.addr, lm.srcURI, lm.dstURI
	wcfg.Loops = []worker.Loop{{Count: 2}}
	wcfg.Name = lm.name + "-worker"
	wcfg.Security = client
	w, err := worker.New(wcfg, testlog.New(t))
	if err != nil {
		cancel()
		<-coordDone
		t.Fatal(err)
	}
	procs["worker"] = w.Run

	ncfg := cdcnode.DefaultConfig()
	ncfg.Coordinator, ncfg.SourceURI, ncfg.TargetURI = lm.addr, lm.srcURI, lm.dstURI
	ncfg.Dir, ncfg.Name, ncfg.Security = t.TempDir(), lm.name+"-cdcnode", client
	ncfg.MetricsListen = freeAddr(t)
	lm.cdcMetrics = ncfg.MetricsListen
	node, err := cdcnode.New(ncfg, testlog.New(t))
	if err != nil {
		cancel()
		<-coordDone
		t.Fatal(err)
	}
	procs["cdcnode"] = node.Run

	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(procs))
	for name, run := range procs {
		go func() { results <- result{name, run(ctx)} }()
	}
	go func() {
		defer close(lm.done)
		for range procs {
			r := <-results
			lm.errs[r.name] = r.err
		}
		<-coordDone
		lm.errs["coordinator"] = coordErr
	}()
	t.Cleanup(func() {
		cancel()
		<-lm.done
	})
}

// startClone runs `pgcaravan clone --follow` as the chart's Job does, with
// its admin API open on loopback.
func (lm *liveMigration) startClone(t *testing.T) {
	t.Helper()
	lm.clone = true
	cfg := fleet.Config{Coordinator: coordinator.DefaultConfig(), Worker: worker.DefaultConfig(), CDC: cdcnode.DefaultConfig(),
		TableJobs: 2, IndexJobs: 2}
	cfg.Coordinator.SourceURI, cfg.Coordinator.TargetURI, cfg.Coordinator.Dir = lm.srcURI, lm.dstURI, t.TempDir()
	cfg.Coordinator.Listen = "127.0.0.1:0"
	cfg.Coordinator.Follow, cfg.Coordinator.ReplicaIdentityFull = true, true
	cfg.Worker.SourceURI, cfg.Worker.TargetURI = lm.srcURI, lm.dstURI
	listening := make(chan string, 1)
	cfg.OnListen = func(addr string) { listening <- addr }
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(lm.done)
		_, err := fleet.Run(ctx, cfg, testlog.New(t))
		lm.errs["clone"] = err
	}()
	t.Cleanup(func() {
		cancel()
		<-lm.done
	})
	select {
	case lm.addr = <-listening:
	case <-lm.done:
		t.Fatalf("clone stopped before it listened: %v", lm.errs["clone"])
	}
}

// admin calls f with an admin client of the migration.
func (lm *liveMigration) admin(t *testing.T, f func(context.Context, pb.AdminServiceClient) error) error {
	t.Helper()
	opts, err := rpcsec.DialOptions(lm.client)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(lm.addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return f(ctx, pb.NewAdminServiceClient(conn))
}

// status reads the migration's Status; nil when it does not answer.
func (lm *liveMigration) status(t *testing.T) *pb.StatusResponse {
	t.Helper()
	var s *pb.StatusResponse
	_ = lm.admin(t, func(ctx context.Context, a pb.AdminServiceClient) error {
		var err error
		s, err = a.Status(ctx, &pb.StatusRequest{})
		return err
	})
	return s
}

func (lm *liveMigration) waitPhase(t *testing.T, phase pb.Phase) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last *pb.StatusResponse
	for time.Now().Before(deadline) {
		if s := lm.status(t); s != nil {
			last = s
			if s.GetPhase() == phase {
				return
			}
			if s.GetPhase() == pb.Phase_PHASE_FAILED {
				t.Fatalf("%s: the live migration failed: %v", lm.name, s.GetFailedUnits())
			}
		}
		select {
		case <-lm.done:
			t.Fatalf("%s: the live migration ended before %s: %v", lm.name, phase, lm.errs)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s: did not reach %s in time; last status: phase %s, cdc %v", lm.name, phase, last.GetPhase(), last.GetCdc())
}

// change writes to the source what the apply must carry: inserts, an
// update, a delete, and an update and a delete on the table without a key.
func (lm *liveMigration) change(t *testing.T, round int) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, lm.srcURI)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	first := lm.nextOrder
	lm.nextOrder += 20
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO orders (id, customer_id, amount) SELECT g, 1 + g %% 100, g * 0.5 FROM generate_series(%d, %d) g`, first, first+19),
		fmt.Sprintf(`UPDATE customers SET name = name || ' r%d' WHERE id %% 10 = %d`, round, round%10),
		fmt.Sprintf(`DELETE FROM orders WHERE id = %d`, round+1),
		fmt.Sprintf(`UPDATE notes SET body = body || ' r%d' WHERE body = 'note %d'`, round, round+1),
		fmt.Sprintf(`DELETE FROM notes WHERE body = 'note %d'`, 50-round),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: change the source: %s: %v", lm.name, sql, err)
		}
	}
	err = conn.QueryRow(ctx, `SELECT 'insert ' || pg_current_wal_insert_lsn() || ', flush ' || pg_current_wal_flush_lsn()`).Scan(&lm.lastChange)
	if err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until the cdcnode reports having applied something:
// the Status's cdc block is what the runbook tells people to watch.
func (lm *liveMigration) waitApplied(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last *pb.StatusResponse
	for time.Now().Before(deadline) {
		if s := lm.status(t); s != nil {
			last = s
			if s.GetCdc().GetAppliedLsn() != "" && s.GetCdc().GetChangesApplied() > 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: the cdcnode applied nothing within a minute of the source's changes; last cdc status: %v", lm.name, last.GetCdc())
}

// scrapeCDC checks, on a fleet's cdcnode that has applied changes, the
// endpoints the chart's probes and ServiceMonitor read: /healthz and
// /readyz answer 200, and /metrics serves pgcaravan_cdc_* (their names go
// to cdcNames, for the runbook's metrics table).
func (lm *liveMigration) scrapeCDC(t *testing.T) {
	t.Helper()
	if lm.cdcMetrics == "" {
		return
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		waitFor(t, "the cdcnode's "+path+" to answer 200 while it applies", func() bool {
			return httpStatus("http://"+lm.cdcMetrics+path) == http.StatusOK
		})
	}
	body := scrape(lm.cdcMetrics)
	if !strings.Contains(body, "pgcaravan_cdc_applied_lsn ") {
		t.Errorf("%s: the cdcnode's /metrics has no pgcaravan_cdc_applied_lsn:\n%s", lm.name, body)
	}
	names(body, lm.cdcNames)
}

func httpStatus(url string) int {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// sameContents fails the test unless the target's tables hold what the
// source's hold.
func (lm *liveMigration) sameContents(t *testing.T) {
	t.Helper()
	const q = `SELECT (SELECT count(*) || ' ' || coalesce(sum(amount), 0) || ' ' || coalesce(max(id), 0) FROM orders),
		(SELECT md5(string_agg(id || name, ',' ORDER BY id)) FROM customers),
		(SELECT md5(string_agg(body, ',' ORDER BY body)) FROM notes)`
	read := func(uri string) [3]string {
		conn, err := pgx.Connect(t.Context(), uri)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var r [3]string
		if err := conn.QueryRow(t.Context(), q).Scan(&r[0], &r[1], &r[2]); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if s, d := read(lm.srcURI), read(lm.dstURI); s != d {
		t.Errorf("%s: after Cutover the target differs from the source (orders count/sum/max id, customers hash, notes hash):\n  source %v\n  target %v\n"+
			"  (every change committed before the Cutover call; the source's WAL positions right after the last one: %s)", lm.name, s, d, lm.lastChange)
	}
}

// waitEnded waits for every process of the migration to return, and
// fails the test on any error.
func (lm *liveMigration) waitEnded(t *testing.T, after string) {
	t.Helper()
	select {
	case <-lm.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s: the migration's processes did not end within a minute of %s", lm.name, after)
	}
	for name, err := range lm.errs {
		if err != nil {
			t.Errorf("%s: %s returned %v after %s", lm.name, name, err, after)
		}
	}
}

// cleanedUp fails the test if the migration left a slot or a publication
// on the source.
func (lm *liveMigration) cleanedUp(t *testing.T) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), lm.srcURI)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var slots, pubs []string
	err = conn.QueryRow(t.Context(), `SELECT
		coalesce((SELECT array_agg(slot_name::text) FROM pg_replication_slots WHERE database = current_database()), '{}'),
		coalesce((SELECT array_agg(pubname::text) FROM pg_publication), '{}')`).Scan(&slots, &pubs)
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) > 0 || len(pubs) > 0 {
		t.Errorf("%s: after cleanup the source still has slots %v and publications %v", lm.name, slots, pubs)
	}
}

// runLive runs a document's commands from its first Cutover on against a
// live migration: the source changes, the apply catches up, then each
// command runs in order, with the checks that Cutover and Cleanup did what
// the document says.
func runLive(t *testing.T, lm *liveMigration, lines []string, run func(t *testing.T, line, addr string) bool) {
	t.Helper()
	for round := 1; round <= 3; round++ {
		lm.change(t, round)
	}
	lm.waitApplied(t)
	lm.scrapeCDC(t)
	lm.change(t, 4)
	cutover, cleaned := false, false
	for _, l := range lines {
		if cleaned {
			t.Errorf("%s\n  comes after Cleanup, which ends the coordinator: nothing answers it", l)
			continue
		}
		if !run(t, l, lm.addr) {
			return
		}
		switch {
		case isCutover(l):
			if s := lm.status(t); !lm.clone && s.GetPhase() != pb.Phase_PHASE_DONE {
				t.Errorf("%s\n  after Cutover the phase is %s, want PHASE_DONE", l, s.GetPhase())
			}
			if !cutover {
				lm.sameContents(t)
			}
			cutover = true
			if lm.clone {
				// The clone cleans up by itself and the Job completes.
				lm.waitEnded(t, "Cutover")
				lm.cleanedUp(t)
				cleaned = true
			}
		case isCleanup(l):
			if !cutover {
				t.Errorf("%s\n  Cleanup before Cutover drops the slot while changes are still to apply", l)
			}
			lm.waitEnded(t, "Cleanup")
			lm.cleanedUp(t)
			cleaned = true
		}
	}
	if !cleaned {
		t.Errorf("%s: the document's commands end without a Cleanup (or a clone that cleans up by itself): the slot would stay and retain WAL on the source", lm.name)
	}
}

// cdcField matches the cdc block's fields the runbook names, as grpcurl
// prints them: `cdc.lagBytes`.
var cdcField = regexp.MustCompile("`cdc\\.([a-zA-Z]+)`")

// checkCDCFields fails the test for every `cdc.x` the text names that
// Status's cdc block does not have.
func checkCDCFields(t *testing.T, text string) int {
	t.Helper()
	fields := (&pb.CDCStatus{}).ProtoReflect().Descriptor().Fields()
	known := map[string]bool{}
	for i := range fields.Len() {
		known[fields.Get(i).JSONName()] = true
	}
	n := 0
	for _, m := range cdcField.FindAllStringSubmatch(text, -1) {
		n++
		if !known[m[1]] {
			t.Errorf("the runbook names cdc.%s, which Status's cdc block does not have (it has %v)", m[1], slices.Sorted(func(yield func(string) bool) {
				for k := range known {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}
	return n
}
