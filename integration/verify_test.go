package integration

import (
	"context"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// verifySchema is a table big enough to be cut into ten ranges of 2000
// rows, and one without a key, compared whole.
const verifySchema = `
	CREATE TABLE big (id int8 PRIMARY KEY, v text, n int);
	INSERT INTO big SELECT g, md5(g::text), g % 7 FROM generate_series(1, 20000) g;
	CREATE TABLE nokey (a int, b text);
	INSERT INTO nokey SELECT g, 'b' || g FROM generate_series(1, 300) g;
`

// verifyChanges changes one row, deletes one and adds one in big, and
// changes a row of nokey: what a person might do by hand on the target.
const verifyChanges = `
	UPDATE big SET v = 'changed by hand' WHERE id = 4242;
	DELETE FROM big WHERE id = 777;
	INSERT INTO big VALUES (20001, 'added', 0);
	UPDATE nokey SET b = 'changed' WHERE a = 3;
`

// verifyPair starts a source and a target holding the same app database.
func verifyPair(t *testing.T) (src, dst *pgtest.Cluster) {
	t.Helper()
	src, dst = verifySource(t)
	if err := dst.Exec(context.Background(), "app", verifySchema); err != nil {
		t.Fatal(err)
	}
	return src, dst
}

// verifySource starts a source with the app database and a target with an
// empty one, for a clone to fill.
func verifySource(t *testing.T) (src, dst *pgtest.Cluster) {
	t.Helper()
	ctx := context.Background()
	src, dst = pgtest.Start(t, pgtest.Options{}), pgtest.Start(t, pgtest.Options{})
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Exec(ctx, "app", verifySchema); err != nil {
		t.Fatal(err)
	}
	return src, dst
}

// matchAll reports each pattern out does not match; spaces in a pattern
// match any run of spaces (the report's columns are aligned).
func matchAll(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		re := regexp.MustCompile(strings.ReplaceAll(p, " ", " +"))
		if !re.MatchString(out) {
			t.Errorf("%s does not match %q:\n%s", what, p, out)
		}
	}
}

// TestVerifyCLI runs `pgcaravan verify` on an equal pair, then after
// changing, deleting and adding rows on the target: every key is named,
// exit 1; a rerun on the same --dir compares only the ranges that
// differed; --restart compares all again.
func TestVerifyCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	src, dst := verifyPair(t)
	args := []string{"verify", "--source", src.URI("app"), "--target", dst.URI("app"),
		"--verify-range-rows", "2000", "--verify-leaf-rows", "100", "--jobs", "2"}

	out, code := run(t, 5*time.Minute, args...)
	if code != 0 {
		t.Fatalf("verify of an equal pair exited %d:\n%s", code, out)
	}
	matchAll(t, "verify of an equal pair", out,
		`public\.big 20000 20000 OK`,
		`public\.nokey 300 300 OK`,
		`ranges: 11 in 2 tables \(1 without an integer key, compared whole\): 11 compared, 0 equal in an earlier run \(skipped\), 0 differ`,
		`verification OK`)

	if err := dst.Exec(context.Background(), "app", verifyChanges); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "verify")
	keys := []string{
		`public\.big, by key id:\n missing on target id = 777\n changed id = 4242\n extra on target id = 20001\n`,
		`public\.nokey: no integer key; the table differs as a whole`,
		`verification FAILED`,
	}
	out, code = run(t, 5*time.Minute, append(args, "--dir", dir)...)
	if code != 1 {
		t.Fatalf("verify of a changed target exited %d, want 1:\n%s", code, out)
	}
	matchAll(t, "verify of a changed target", out, append(keys,
		`public\.big 20000 20000 DIFF`,
		`: 11 compared, 0 equal in an earlier run \(skipped\), 4 differ`)...)

	// The rerun reads only the three differing ranges of big and nokey's
	// one range, and finds the same keys.
	out, code = run(t, 5*time.Minute, append(args, "--dir", dir)...)
	if code != 1 {
		t.Fatalf("verify resumed on the same --dir exited %d, want 1:\n%s", code, out)
	}
	matchAll(t, "verify resumed", out, append(keys, `: 4 compared, 7 equal in an earlier run \(skipped\), 4 differ`)...)

	out, code = run(t, 5*time.Minute, append(args, "--dir", dir, "--restart")...)
	if code != 1 {
		t.Fatalf("verify --restart exited %d, want 1:\n%s", code, out)
	}
	matchAll(t, "verify --restart", out, append(keys, `: 11 compared, 0 equal in an earlier run \(skipped\), 4 differ`)...)

	out, code = run(t, time.Minute, "verify", "--source", src.URI("app"), "--target", dst.URI("app"), "--restart")
	if code != 2 || !strings.Contains(out, "--restart needs --dir") {
		t.Errorf("verify --restart without --dir exited %d, want 2:\n%s", code, out)
	}
}

// TestVerifyAdminAPI calls AdminService/Verify over real gRPC on a
// `clone --follow` that is following a quiet source: the pair is equal;
// rows changed by hand on the target are named by key; a second call
// resumes from the results kept in the coordinator's --dir.
func TestVerifyAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ctx := context.Background()
	src, dst := verifySource(t)
	addr, dir := freeAddr(t), t.TempDir()
	clone := start(t, "clone", "clone", "--follow", "--listen", addr, "--source", src.URI("app"), "--target", dst.URI("app"),
		"--dir", dir, "--table-jobs", "1", "--index-jobs", "1")
	admin := newFleetAdmin(t, addr)
	waitFollowing(t, admin, clone, "clone")

	callVerify := func(req *pb.VerifyRequest) *pb.VerifyResponse {
		t.Helper()
		req.RangeRows, req.LeafRows = 2000, 100
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		resp, err := admin.Verify(cctx, req)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		return resp
	}
	table := func(resp *pb.VerifyResponse, name string) *pb.VerifyTable {
		t.Helper()
		for _, tb := range resp.GetTables() {
			if tb.GetTable() == name {
				return tb
			}
		}
		t.Fatalf("Verify response has no table %s: %v", name, resp)
		return nil
	}

	// 1. The clone is equal to its quiet source.
	resp := callVerify(&pb.VerifyRequest{Jobs: 2, AllChecks: true})
	if !resp.GetOk() || resp.GetChecksFailed() != 0 || len(resp.GetChecks()) != int(resp.GetChecksTotal()) {
		t.Fatalf("Verify of the clone: ok %v, %d of %d checks failed: %v", resp.GetOk(), resp.GetChecksFailed(), resp.GetChecksTotal(), resp.GetChecks())
	}
	if big := table(resp, "public.big"); big.GetKey() != "id" || big.GetRanges() != 10 || big.GetRangesCompared() != 10 {
		t.Errorf("big: %v, want 10 ranges on id, all compared", big)
	}
	if nk := table(resp, "public.nokey"); nk.GetKey() != "" || nk.GetRanges() != 1 {
		t.Errorf("nokey: %v, want compared whole", nk)
	}
	// The clone's own worker loops ran the ranges, as verify units.
	units, err := admin.ListUnits(ctx, &pb.ListUnitsRequest{State: pb.UnitState_UNIT_STATE_DONE})
	if err != nil {
		t.Fatal(err)
	}
	var verifyUnits int
	for _, u := range units.GetUnits() {
		if u.GetUnit().GetKind() == pb.UnitKind_UNIT_KIND_VERIFY && u.GetWorkerId() != "" {
			verifyUnits++
		}
	}
	if verifyUnits != 11 {
		t.Errorf("%d verify units done by the clone's workers, want 11 (one per range)", verifyUnits)
	}

	// 2. Changes by hand on the target are found, key by key.
	if err := dst.Exec(ctx, "app", verifyChanges); err != nil {
		t.Fatal(err)
	}
	wantRows := []string{"777 ROW_CHANGE_MISSING_ON_TARGET", "4242 ROW_CHANGE_CHANGED", "20001 ROW_CHANGE_EXTRA_ON_TARGET"}
	rowsOf := func(tb *pb.VerifyTable) []string {
		var out []string
		for _, r := range tb.GetRows() {
			out = append(out, strconv.FormatInt(r.GetKey(), 10)+" "+r.GetChange().String())
		}
		return out
	}
	resp = callVerify(&pb.VerifyRequest{Restart: true})
	var failed []string
	for _, c := range resp.GetChecks() {
		failed = append(failed, c.GetKind()+" "+c.GetObject())
	}
	slices.Sort(failed)
	if want := []string{"checksum public.big", "checksum public.nokey"}; resp.GetOk() || !slices.Equal(failed, want) {
		t.Errorf("Verify after changes: ok %v, failed checks %q, want %q", resp.GetOk(), failed, want)
	}
	big := table(resp, "public.big")
	if got := rowsOf(big); !slices.Equal(got, wantRows) || big.GetRangesDiffer() != 3 {
		t.Errorf("big: rows %q in %d differing ranges, want %q in 3", got, big.GetRangesDiffer(), wantRows)
	}
	if nk := table(resp, "public.nokey"); nk.GetRangesDiffer() != 1 {
		t.Errorf("nokey: %v, want its one range to differ", nk)
	}

	// 3. A second call resumes: the equal ranges are not read again.
	resp = callVerify(&pb.VerifyRequest{})
	big = table(resp, "public.big")
	if big.GetRangesResumed() != 7 || big.GetRangesCompared() != 3 || !slices.Equal(rowsOf(big), wantRows) {
		t.Errorf("resumed big: %v, want 7 ranges resumed, 3 compared, rows %q", big, wantRows)
	}

	// 4. Bad arguments are refused.
	_, err = admin.Verify(ctx, &pb.VerifyRequest{Jobs: -1})
	if grpcstatus.Code(err) != codes.InvalidArgument {
		t.Errorf("Verify with jobs -1 = %v, want InvalidArgument", err)
	}
}

// TestVerifyOnWorkers calls AdminService/Verify on a `coordinator --follow`
// with two worker processes that finished the copy: the workers stay for
// the follow phase, the ranges are leased to them as verify units (the
// coordinator's ListUnits shows which worker ran each), an equal pair
// passes, and a row changed by hand on the target is named by its key.
// Cleanup then lets the workers exit.
func TestVerifyOnWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ctx := context.Background()
	src, dst := verifySource(t)
	srcURI, dstURI := src.URI("app"), dst.URI("app")
	addr, dir := freeAddr(t), t.TempDir()
	coord := start(t, "coordinator", "coordinator", "--follow", "--listen", addr, "--source", srcURI, "--target", dstURI, "--dir", dir)
	workers := []*proc{
		start(t, "worker-1", "worker", "--coordinator", addr, "--source", srcURI, "--target", dstURI, "--jobs", "1", "--name", "w1"),
		start(t, "worker-2", "worker", "--coordinator", addr, "--source", srcURI, "--target", dstURI, "--jobs", "1", "--name", "w2"),
	}
	admin := newFleetAdmin(t, addr)
	waitFollowing(t, admin, coord, "coordinator")
	for _, w := range workers {
		select {
		case <-w.done:
			t.Fatalf("%s exited after the copy, before the follow phase ended:\n%s", w.name, tail(w.output(), 20))
		default:
		}
	}

	callVerify := func(req *pb.VerifyRequest) *pb.VerifyResponse {
		t.Helper()
		req.RangeRows, req.LeafRows = 2000, 100
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		resp, err := admin.Verify(cctx, req)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		return resp
	}
	// verifyUnits checks that every range of the last call was a verify
	// unit done by one of the two workers, and returns how many.
	verifyUnits := func(want int) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := admin.Status(cctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]string{}
		for _, w := range st.GetWorkers() {
			names[w.GetWorkerId()] = w.GetName()
		}
		units, err := admin.ListUnits(cctx, &pb.ListUnitsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		byWorker := map[string]int{}
		n := 0
		for _, u := range units.GetUnits() {
			if u.GetUnit().GetKind() != pb.UnitKind_UNIT_KIND_VERIFY {
				continue
			}
			n++
			if u.GetState() != pb.UnitState_UNIT_STATE_DONE || names[u.GetWorkerId()] == "" {
				t.Errorf("verify unit %d (%s) is %s, run by %q: want done by w1 or w2 (%v)",
					u.GetUnit().GetId(), u.GetUnit().GetDescription(), u.GetState(), u.GetWorkerId(), names)
			}
			byWorker[names[u.GetWorkerId()]]++
		}
		if n != want {
			t.Errorf("%d verify units, want one per range compared (%d)", n, want)
		}
		// Which worker takes each unit is up to the scheduler: one may take
		// them all while the other is between polls. That the workers, not
		// the coordinator, ran every unit is checked above.
		t.Logf("verify units by worker: %v", byWorker)
	}

	// 1. The clone is equal to its quiet source; the 11 ranges ran on the workers.
	resp := callVerify(&pb.VerifyRequest{Jobs: 1})
	if !resp.GetOk() || resp.GetChecksFailed() != 0 {
		t.Fatalf("Verify of the clone: ok %v, %d of %d checks failed: %v", resp.GetOk(), resp.GetChecksFailed(), resp.GetChecksTotal(), resp.GetChecks())
	}
	if big := table(t, resp, "public.big"); big.GetKey() != "id" || big.GetRanges() != 10 || big.GetRangesCompared() != 10 {
		t.Errorf("big: %v, want 10 ranges on id, all compared", big)
	}
	verifyUnits(11)
	if !strings.Contains(coord.output(), "verify ranges are spread over the workers") {
		t.Errorf("the coordinator did not say it spread the ranges over the workers")
	}

	// 2. A row changed by hand on the target is found by its key, from
	// the workers' sums and the coordinator's search.
	if err := dst.Exec(ctx, "app", `UPDATE big SET v = 'changed by hand' WHERE id = 4242`); err != nil {
		t.Fatal(err)
	}
	resp = callVerify(&pb.VerifyRequest{Restart: true})
	big := table(t, resp, "public.big")
	if resp.GetOk() || big.GetRangesDiffer() != 1 || len(big.GetRows()) != 1 ||
		big.GetRows()[0].GetKey() != 4242 || big.GetRows()[0].GetChange() != pb.RowChange_ROW_CHANGE_CHANGED {
		t.Errorf("Verify after a change: ok %v, big %v; want key 4242 changed in 1 differing range", resp.GetOk(), big)
	}
	verifyUnits(11)

	// 3. Cleanup ends the migration, and the workers hear it and exit.
	out, code := run(t, 2*time.Minute, "cleanup", "--coordinator", addr)
	if code != 0 {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	for _, p := range append(workers, coord) {
		if code := p.wait(t, time.Minute); code != 0 {
			t.Fatalf("%s exited %d after cleanup:\n%s", p.name, code, tail(p.output(), 20))
		}
	}
}

// table returns the named table of a Verify response.
func table(t *testing.T, resp *pb.VerifyResponse, name string) *pb.VerifyTable {
	t.Helper()
	for _, tb := range resp.GetTables() {
		if tb.GetTable() == name {
			return tb
		}
	}
	t.Fatalf("Verify response has no table %s: %v", name, resp)
	return nil
}

// waitFollowing waits up to 3 minutes for the migration behind admin to
// reach phase follow, failing if p, its process called name, exits first.
func waitFollowing(t *testing.T, admin pb.AdminServiceClient, p *proc, name string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		st, err := admin.Status(ctx, &pb.StatusRequest{})
		cancel()
		if err == nil && st.GetPhase() == pb.Phase_PHASE_FOLLOW {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before following:\n%s", name, tail(p.output(), 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not following after 3 minutes (last status %v, %v)", name, st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
