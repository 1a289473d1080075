package verify

import (
	"regexp"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

func tableResult(t *testing.T, r *Report, name string) TableResult {
	t.Helper()
	for _, tr := range r.Tables {
		if tr.Table == name {
			return tr
		}
	}
	t.Fatalf("no table result for %s in %+v", name, r.Tables)
	return TableResult{}
}

// TestCompareRanges cuts a keyed table into ranges, finds each differing
// key, resumes from the kept results, compares a table without a key
// whole, and reads the source under a given snapshot.
func TestCompareRanges(t *testing.T) {
	p := startPair(t)
	for _, c := range []*pgtest.Cluster{p.src, p.tgt} {
		if err := c.CreateDatabase(t.Context(), "app"); err != nil {
			t.Fatal(err)
		}
	}
	p.both(t, "app", `
		CREATE TABLE big (id int8 PRIMARY KEY, v text, n int);
		INSERT INTO big SELECT g, md5(g::text), g % 7 FROM generate_series(1, 20000) g;
		CREATE TABLE nokey (a int, b text);
		INSERT INTO nokey SELECT g, 'b' || g FROM generate_series(1, 300) g;
		CREATE TABLE small (id int2 PRIMARY KEY, v text);
		INSERT INTO small SELECT g, 'v' || g FROM generate_series(-20, 20) g;
	`)
	opts := Options{RangeRows: 2000, LeafRows: 100, Jobs: 3}

	// 1. Equal: every range of the big table compared, the others whole.
	r := p.compare(t, "app", opts)
	if !r.OK() {
		t.Fatalf("equal databases differ:\n%s", printed(r))
	}
	big := tableResult(t, r, "public.big")
	if big.Key != "id" || big.Ranges != 10 || big.Compared != 10 || big.Differ != 0 {
		t.Errorf("big: %+v, want 10 ranges on id, all compared and equal", big)
	}
	if nk := tableResult(t, r, "public.nokey"); nk.Key != "" || nk.Ranges != 1 {
		t.Errorf("nokey: %+v, want one whole-table range", nk)
	}
	if sm := tableResult(t, r, "public.small"); sm.Key != "id" || sm.Ranges != 1 {
		t.Errorf("small: %+v, want one range on id", sm)
	}
	if c, _ := find(r, "rows", "public.big"); c.Source != "20000" || c.Target != "20000" {
		t.Errorf("rows check of big: %+v", c)
	}

	// 2. A row changed, one deleted and one added on the target: each key
	// is named, and the results are kept in the dir.
	mustExec(t, p.tgt, "app", `
		UPDATE big SET v = 'changed by hand' WHERE id = 4242;
		DELETE FROM big WHERE id = 777;
		INSERT INTO big VALUES (20001, 'added', 0);
		UPDATE nokey SET b = 'changed' WHERE a = 3;
		DELETE FROM small WHERE id = -7;
	`)
	opts.Dir = t.TempDir()
	r = p.compare(t, "app", opts)
	if got, want := problems(r), []string{"checksum public.big", "checksum public.nokey", "checksum public.small", "rows public.small"}; !slices.Equal(got, want) {
		t.Errorf("problems %q, want %q\n%s", got, want, printed(r))
	}
	big = tableResult(t, r, "public.big")
	wantRows := []RowDiff{{777, MissingOnTarget}, {4242, Changed}, {20001, ExtraOnTarget}}
	if !slices.Equal(big.Rows, wantRows) || big.Differ != 3 || big.Compared != 10 {
		t.Errorf("big: %+v, want rows %v in 3 differing ranges", big, wantRows)
	}
	if sm := tableResult(t, r, "public.small"); !slices.Equal(sm.Rows, []RowDiff{{-7, MissingOnTarget}}) {
		t.Errorf("small: %+v", sm)
	}
	if nk := tableResult(t, r, "public.nokey"); nk.Differ != 1 || len(nk.Rows) != 0 {
		t.Errorf("nokey: %+v, want one differing whole range", nk)
	}
	out := printed(r)
	for _, re := range []string{
		`public\.big, by key id:\n +missing on target +id = 777\n +changed +id = 4242\n +extra on target +id = 20001\n`,
		`public\.nokey: no integer key; the table differs as a whole`,
		`ranges: 12 in 3 tables \(1 without an integer key, compared whole\): 12 compared, 0 equal in an earlier run \(skipped\), 5 differ`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("report does not match %q:\n%s", re, out)
		}
	}

	// 3. A rerun on the same dir compares only the ranges that differed.
	r = p.compare(t, "app", opts)
	big = tableResult(t, r, "public.big")
	if big.Resumed != 7 || big.Compared != 3 || !slices.Equal(big.Rows, wantRows) {
		t.Errorf("resumed big: %+v, want 7 ranges resumed, 3 compared, rows %v", big, wantRows)
	}
	if c, _ := find(r, "rows", "public.big"); c.Source != "20000" || c.Target != "20000" {
		t.Errorf("rows check of a resumed big: %+v", c)
	}

	// 4. Once the target is fixed, the rerun still skips the equal ranges
	// and passes; a restart compares everything again.
	mustExec(t, p.tgt, "app", `
		UPDATE big SET v = md5('4242') WHERE id = 4242;
		INSERT INTO big VALUES (777, md5('777'), 777 % 7);
		DELETE FROM big WHERE id = 20001;
		UPDATE nokey SET b = 'b3' WHERE a = 3;
		INSERT INTO small VALUES (-7, 'v-7');
	`)
	r = p.compare(t, "app", opts)
	if !r.OK() {
		t.Fatalf("fixed target differs:\n%s", printed(r))
	}
	if big = tableResult(t, r, "public.big"); big.Resumed != 7 || big.Compared != 3 {
		t.Errorf("big after the fix: %+v", big)
	}
	if sm := tableResult(t, r, "public.small"); sm.Compared != 1 {
		t.Errorf("small after the fix: %+v", sm)
	}
	opts.Restart = true
	r = p.compare(t, "app", opts)
	if big = tableResult(t, r, "public.big"); big.Resumed != 0 || big.Compared != 10 || !r.OK() {
		t.Errorf("big after a restart: %+v\n%s", big, printed(r))
	}
	opts.Restart, opts.Dir = false, ""

	// 5. With MaxKeys reached, the other differing ranges are named, not
	// searched.
	mustExec(t, p.tgt, "app", `UPDATE big SET n = -1 WHERE id IN (10, 5000, 9000, 13000, 17000, 19999)`)
	opts.MaxKeys = 2
	r = p.compare(t, "app", opts)
	big = tableResult(t, r, "public.big")
	if len(big.Rows) != 2 || len(big.Unsearched)+big.MoreRows != 4 || big.Differ != 6 {
		t.Errorf("big with max keys 2: %+v, want 2 rows listed and the rest unsearched or counted", big)
	}
	if out := printed(r); !regexp.MustCompile(`and range \[\d+, [+\d]+.*\): 2000 source rows, 2000 target rows, not searched`).MatchString(out) {
		t.Errorf("report does not name an unsearched range:\n%s", out)
	}
	mustExec(t, p.tgt, "app", `UPDATE big SET n = id % 7 WHERE id IN (10, 5000, 9000, 13000, 17000, 19999)`)
	opts.MaxKeys = 0

	// 6. A snapshot exported on the source pins what the source side reads.
	conn, err := pgx.Connect(t.Context(), p.src.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	tx, err := conn.BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	var snap string
	if err := tx.QueryRow(t.Context(), "SELECT pg_export_snapshot()").Scan(&snap); err != nil {
		t.Fatal(err)
	}
	mustExec(t, p.src, "app", `DELETE FROM big WHERE id = 12345`)
	if r = p.compare(t, "app", opts); r.OK() {
		t.Fatalf("a row deleted on the source after the snapshot is not seen without --snapshot")
	}
	opts.Snapshot = snap
	if r = p.compare(t, "app", opts); !r.OK() {
		t.Errorf("under the snapshot exported before the delete, the sides differ:\n%s", printed(r))
	}
	opts.Snapshot = "00000003-0000FFFF-1"
	if _, err := Compare(t.Context(), p.src.URI("app"), p.tgt.URI("app"), opts); err == nil {
		t.Error("an unknown snapshot was accepted")
	}
}
