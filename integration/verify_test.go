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
	ctx := context.Background()
	src, dst = pgtest.Start(t, pgtest.Options{}), pgtest.Start(t, pgtest.Options{})
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, "app", verifySchema); err != nil {
			t.Fatal(err)
		}
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
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Exec(ctx, "app", verifySchema); err != nil {
		t.Fatal(err)
	}
	addr, dir := freeAddr(t), t.TempDir()
	clone := start(t, "clone", "clone", "--follow", "--listen", addr, "--source", src.URI("app"), "--target", dst.URI("app"),
		"--dir", dir, "--table-jobs", "1", "--index-jobs", "1")
	admin := newFleetAdmin(t, addr)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := admin.Status(cctx, &pb.StatusRequest{})
		cancel()
		if err == nil && st.GetPhase() == pb.Phase_PHASE_FOLLOW {
			break
		}
		select {
		case <-clone.done:
			t.Fatalf("clone exited before following:\n%s", tail(clone.output(), 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("clone is not following after 3 minutes (last status %v, %v)", st, err)
		}
		time.Sleep(200 * time.Millisecond)
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
	_, err := admin.Verify(ctx, &pb.VerifyRequest{Jobs: -1})
	if grpcstatus.Code(err) != codes.InvalidArgument {
		t.Errorf("Verify with jobs -1 = %v, want InvalidArgument", err)
	}
}
