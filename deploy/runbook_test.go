package deploy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/pgcaravan/pgcaravan/coordinator"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/rpcsec"
	"github.com/pgcaravan/pgcaravan/shared/testlog"
	"github.com/pgcaravan/pgcaravan/worker"
)

// The docs' commands all talk to localhost:7420 (a kubectl port-forward)
// with the token in $PGCARAVAN_AUTH_TOKEN and certificates in the working
// directory. The test runs three coordinators, one per way of reaching the
// admin API the chart sets up, and sends each command to the one it is
// written for:
//
//   - token: a bearer token, plaintext (fleet mode, the default);
//   - tls: a token and mutual TLS (fleet mode with tls.enabled, tls.mutual);
//   - open: no token, loopback only (the clone Job).
const (
	docAddress = "localhost:7420"
	testToken  = "runbook-test-token"
)

// serverNames are the names the test certificate carries: the Service the
// runbook's release (mig) and the chart test's release (t) make, and the
// tls.serverName of the fleet CI values.
var serverNames = []string{"mig-pgcaravan-coordinator", "t-pgcaravan-coordinator", "coordinator.migration.internal", "localhost"}

// TestRunbookCommands runs every grpcurl command of deploy/README.md and of
// the chart's NOTES.txt (for each CI values file) against real coordinators
// through grpcurl's Go library: the Cutover and Cleanup commands, and what
// follows them, against live migrations with a real cdcnode (live_test.go).
// Then it runs a worker to the end of an offline migration and checks that
// every metric the runbook names is served.
func TestRunbookCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL clusters")
	}
	ctx := t.Context()
	dir := t.TempDir()
	certs := writeCerts(t, dir)
	// The source commits asynchronously (pgtest's default, and common on
	// busy production sources): a Cutover must still carry every
	// transaction committed before it was called.
	src := pgtest.Start(t, pgtest.Options{Settings: map[string]string{"synchronous_commit": "off"}})
	dst := pgtest.Start(t, pgtest.Options{})

	coords := map[string]*testCoordinator{}
	secs := map[string]rpcsec.Config{
		"token": {Token: testToken},
		"tls":   {Token: testToken, CertFile: certs.serverCert, KeyFile: certs.serverKey, CAFile: certs.ca},
		"open":  {},
	}
	for _, name := range []string{"token", "tls", "open"} {
		db := "app_" + name
		loadSource(t, src, db)
		if err := dst.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
		coords[name] = startCoordinator(t, src.URI(db), dst.URI(db), secs[name], certs)
	}
	for name, c := range coords {
		c.waitPhase(t, pb.Phase_PHASE_COPY)
		t.Logf("coordinator %s listens on %s", name, c.addr)
	}

	env := map[string]string{"PGCARAVAN_AUTH_TOKEN": testToken}
	// cdcServed collects the metric names the live migrations' cdcnodes
	// served, for the metrics subtest.
	cdcServed := map[string]bool{}
	// exec runs one documented line against addr, or, when addr is empty,
	// against the shared coordinator the line is written for.
	exec := func(t *testing.T, line, addr string) bool {
		t.Helper()
		cmd, err := parseGrpcurl(line, env)
		if err != nil {
			t.Errorf("%s\n  %v", line, err)
			return false
		}
		if cmd.address != docAddress {
			t.Errorf("%s\n  address %q: the docs reach the coordinator through a port-forward to %s", line, cmd.address, docAddress)
			return false
		}
		where := route(cmd)
		if addr == "" {
			addr = coords[where].addr
		} else {
			where = "live " + where
		}
		out, err := cmd.run(ctx, addr, dir)
		if err != nil {
			t.Errorf("%s\n  failed against the %s coordinator: %v\n%s", line, where, err, out)
			return false
		}
		t.Logf("%s\n%s", line, firstLines(out, 6))
		return true
	}
	// runDoc runs a document's lines: up to its first Cutover against the
	// shared coordinators, from there on against a live migration of its
	// own (see live_test.go). live says whether the document describes a
	// live migration, which must show Cutover (and no other may).
	runDoc := func(t *testing.T, name string, lines []string, live bool) {
		t.Helper()
		before, after := splitAtCutover(lines)
		for _, l := range before {
			if isCleanup(l) {
				t.Errorf("%s\n  Cleanup before any Cutover would drop the slot while changes are still to apply", l)
				continue
			}
			exec(t, l, "")
		}
		if !live {
			if len(after) > 0 {
				t.Errorf("%s shows Cutover but describes an offline copy (follow: false), where Cutover fails:\n  %s", name, after[0])
			}
			return
		}
		if len(after) == 0 {
			t.Fatalf("%s describes a live migration (follow: true) but shows no grpcurl Cutover command", name)
		}
		first, err := parseGrpcurl(after[0], env)
		if err != nil {
			t.Fatalf("%s\n  %v", after[0], err)
		}
		r := route(first)
		for _, l := range after[1:] {
			if c, err := parseGrpcurl(l, env); err == nil && route(c) != r {
				t.Errorf("%s\n  reaches the coordinator another way (%s) than the Cutover before it (%s)", l, route(c), r)
			}
		}
		db := "live_" + strings.NewReplacer("/", "_", "-", "_").Replace(strings.ToLower(name))
		lm := startLive(t, src, dst, db, r, certs)
		runLive(t, lm, after, exec)
		maps.Copy(cdcServed, lm.cdcNames)
	}

	t.Run("README", func(t *testing.T) {
		data, err := os.ReadFile("README.md")
		if err != nil {
			t.Fatal(err)
		}
		lines := grpcurlLines(string(data), true)
		if len(lines) < 8 {
			t.Fatalf("found %d grpcurl commands in README.md; the runbook has more", len(lines))
		}
		if n := checkCDCFields(t, string(data)); n < 5 {
			t.Errorf("README.md names %d fields of Status's cdc block (`cdc.x`); the runbook's lag table names more", n)
		}
		runDoc(t, "README", lines, true)
	})
	for _, file := range valuesFiles(t) {
		name := strings.TrimSuffix(filepath.Base(file), "-values.yaml")
		t.Run("NOTES/"+name, func(t *testing.T) {
			lines := grpcurlLines(renderNotes(t, "-f", file), false)
			if len(lines) < 4 {
				t.Fatalf("found %d grpcurl commands in NOTES.txt; want status, tables, units, pause, resume", len(lines))
			}
			follow, _ := lookup(readValues(t, file), "follow").(bool)
			runDoc(t, "NOTES/"+name, lines, follow)
		})
	}
	t.Run("metrics", func(t *testing.T) {
		if len(cdcServed) == 0 {
			// No fleet's live migration ran above (-run left them out):
			// one of its own, for the cdcnode's metrics.
			lm := startLive(t, src, dst, "live_metrics", "token", certs)
			lm.change(t, 1)
			lm.waitApplied(t)
			lm.scrapeCDC(t)
			maps.Copy(cdcServed, lm.cdcNames)
		}
		runWorkerAndCheckMetrics(t, coords["token"], dst.URI("app_token"), src.URI("app_token"), cdcServed)
	})
}

// route picks the coordinator a documented command is written for.
func route(c grpcurlCommand) string {
	if !c.plaintext {
		return "tls"
	}
	hasToken := slices.ContainsFunc(c.headers, func(h string) bool {
		return strings.HasPrefix(strings.ToLower(h), "authorization:")
	})
	if hasToken {
		return "token"
	}
	return "open"
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines[n] = "…"
	}
	return strings.Join(lines, "\n")
}

// loadSource creates database db on the source with two related tables.
func loadSource(t *testing.T, c *pgtest.Cluster, db string) {
	t.Helper()
	ctx := t.Context()
	if err := c.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	err := c.Exec(ctx, db, `
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id),
  amount numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX orders_customer_idx ON orders (customer_id);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, 1 + g % 100, g * 1.25, now() FROM generate_series(1, 1000) g;`)
	if err != nil {
		t.Fatal(err)
	}
}

// testCoordinator is a coordinator running in-process, as `pgcaravan
// coordinator` runs in the chart's StatefulSet.
type testCoordinator struct {
	addr        string
	metricsAddr string
	client      rpcsec.Config
	done        chan struct{}
	err         error
}

func startCoordinator(t *testing.T, srcURI, dstURI string, sec rpcsec.Config, certs testCerts) *testCoordinator {
	t.Helper()
	cfg := coordinator.DefaultConfig()
	cfg.SourceURI, cfg.TargetURI, cfg.Dir = srcURI, dstURI, t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = freeAddr(t)
	cfg.Security = sec
	cfg.ExitGrace = 100 * time.Millisecond
	coord, err := coordinator.New(cfg, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testCoordinator{metricsAddr: cfg.MetricsListen, done: make(chan struct{}),
		client: rpcsec.Config{Token: sec.Token}}
	if sec.TLS() {
		tc.client.CAFile, tc.client.CertFile, tc.client.KeyFile = certs.ca, certs.clientCert, certs.clientKey
	}
	go func() {
		defer close(tc.done)
		tc.err = coord.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-tc.done
	})
	select {
	case <-coord.Ready():
	case <-tc.done:
		t.Fatalf("coordinator stopped before it listened: %v", tc.err)
	}
	tc.addr = coord.Addr()
	return tc
}

// waitPhase polls Status until the migration reaches phase.
func (c *testCoordinator) waitPhase(t *testing.T, phase pb.Phase) {
	t.Helper()
	opts, err := rpcsec.DialOptions(c.client)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		s, err := admin.Status(ctx, &pb.StatusRequest{})
		cancel()
		if err == nil && s.GetPhase() == phase {
			return
		}
		last = fmt.Sprint(s.GetPhase(), err)
		select {
		case <-c.done:
			t.Fatalf("coordinator ended before %s: %v", phase, c.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("coordinator did not reach %s in time; last: %s", phase, last)
}

// runWorkerAndCheckMetrics runs a worker against c with the flags the
// chart gives it (health and metrics listeners, the token), holds one
// table's copy back with a lock on the target so the worker's per-unit
// metrics exist while it runs, checks the health service the readiness
// probe reads, then lets the migration finish. Every pgcaravan_* name the
// runbook mentions must have been served by the coordinator, the worker,
// or a live migration's cdcnode (cdcServed).
func runWorkerAndCheckMetrics(t *testing.T, c *testCoordinator, dstURI, srcURI string, cdcServed map[string]bool) {
	ctx := t.Context()
	lockConn, err := pgx.Connect(ctx, dstURI)
	if err != nil {
		t.Fatal(err)
	}
	defer lockConn.Close(context.Background())
	lock, err := lockConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(ctx, "LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	cfg := worker.DefaultConfig()
	cfg.Coordinator, cfg.SourceURI, cfg.TargetURI = c.addr, srcURI, dstURI
	cfg.Loops = []worker.Loop{{Count: 2}}
	cfg.Name = "runbook-worker"
	cfg.Security = rpcsec.Config{Token: testToken}
	cfg.MetricsListen, cfg.HealthListen = freeAddr(t), freeAddr(t)
	w, err := worker.New(cfg, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	var workerErr error
	go func() {
		defer close(workerDone)
		workerErr = w.Run(wctx)
	}()
	defer func() {
		stopWorker()
		<-workerDone
	}()

	served := map[string]bool{}
	// The worker's health service says SERVING once it has registered:
	// what the chart's readiness probe reads.
	waitFor(t, "the worker's health service to say SERVING", func() bool {
		return healthServing(ctx, cfg.HealthListen)
	})
	// customers copies; orders waits on the lock.
	waitFor(t, "the worker to finish a unit", func() bool {
		body := scrape(cfg.MetricsListen)
		names(body, served)
		return strings.Contains(body, "pgcaravan_worker_units_total{")
	})
	names(scrape(c.metricsAddr), served)
	maps.Copy(served, cdcServed)

	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the migration did not finish within 2 minutes of the lock's release")
	}
	if c.err != nil {
		t.Fatalf("coordinator: %v", c.err)
	}
	// A worker exits 0 once it hears the migration is finished.
	select {
	case <-workerDone:
	case <-time.After(time.Minute):
		t.Fatal("the worker did not exit within a minute of the migration's end")
	}
	if workerErr != nil {
		t.Fatalf("worker: %v", workerErr)
	}

	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	mentioned := map[string]bool{}
	names(string(data), mentioned)
	if len(mentioned) < 5 {
		t.Fatalf("README.md names %d metrics; the runbook's table has more", len(mentioned))
	}
	for name := range mentioned {
		if !served[name] {
			t.Errorf("README.md names %s, which neither the coordinator, the worker nor the cdcnode serves", name)
		}
	}
}

var metricName = regexp.MustCompile(`\bpgcaravan_[a-z_]+[a-z]\b`)

// names adds the pgcaravan_* metric names in text to into (the
// exposition's HELP/TYPE lines name even label-less vectors).
func names(text string, into map[string]bool) {
	for _, m := range metricName.FindAllString(text, -1) {
		into[m] = true
	}
}

func scrape(addr string) string {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func healthServing(ctx context.Context, addr string) bool {
	opts, _ := rpcsec.DialOptions(rpcsec.Config{})
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return false
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// renderNotes renders the chart's NOTES.txt, which `helm template` leaves
// out: a copy of the chart gets one more template that wraps the notes in
// a ConfigMap, rendered with --show-only.
func renderNotes(t *testing.T, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pgcaravan")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes, err := fs.ReadFile(os.DirFS(chartDir), "templates/NOTES.txt")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := `{{- define "pgcaravan.test.notes" -}}` + "\n" + string(notes) + "\n{{- end }}\n" +
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n" +
		`  notes: {{ include "pgcaravan.test.notes" . | toJson }}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes-test.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := helmTemplateChart(t, dir, append(args, "--show-only", "templates/zz-notes-test.yaml")...)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(out), &cm); err != nil {
		t.Fatalf("notes wrapper: %v\n%s", err, out)
	}
	return cm.Data["notes"]
}

// testCerts are the files writeCerts makes: a CA, the coordinator's
// certificate, and a client certificate; ca.crt, client.crt and client.key
// have the names the docs' commands use.
type testCerts struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func writeCerts(t *testing.T, dir string) testCerts {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgcaravan test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, dns []string, ips []net.IP) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: dns, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	serverCert, serverKey := issue(2, "coordinator", x509.ExtKeyUsageServerAuth, serverNames, []net.IP{net.IPv4(127, 0, 0, 1)})
	clientCert, clientKey := issue(3, "worker", x509.ExtKeyUsageClientAuth, nil, nil)
	files := map[string][]byte{
		"ca.crt":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.crt": serverCert, "server.key": serverKey,
		"client.crt": clientCert, "client.key": clientKey,
	}
	for name, data := range files {
		if err := writeFile(dir, name, data); err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	return testCerts{ca: p("ca.crt"), serverCert: p("server.crt"), serverKey: p("server.key"),
		clientCert: p("client.crt"), clientKey: p("client.key")}
}
