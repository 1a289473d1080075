package verify

import (
	"path/filepath"
	"slices"
	"testing"
)

func TestDiffRows(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, tgt []rowHash
		want     []RowDiff
	}{
		{name: "equal", src: []rowHash{{1, "a"}, {2, "b"}}, tgt: []rowHash{{1, "a"}, {2, "b"}}},
		{name: "empty"},
		{
			name: "changed, missing, extra",
			src:  []rowHash{{1, "a"}, {2, "b"}, {3, "c"}, {5, "e"}},
			tgt:  []rowHash{{1, "a"}, {2, "x"}, {4, "d"}, {5, "e"}, {6, "f"}},
			want: []RowDiff{{2, Changed}, {3, MissingOnTarget}, {4, ExtraOnTarget}, {6, ExtraOnTarget}},
		},
		{name: "all missing", src: []rowHash{{7, "a"}, {8, "b"}}, want: []RowDiff{{7, MissingOnTarget}, {8, MissingOnTarget}}},
		{
			// A target without the unique index may hold a key twice.
			name: "duplicate on target",
			src:  []rowHash{{1, "a"}, {2, "b"}},
			tgt:  []rowHash{{1, "z"}, {1, "a"}, {2, "c"}, {2, "d"}},
			want: []RowDiff{{1, ExtraOnTarget}, {2, Changed}, {2, ExtraOnTarget}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := diffRows(tc.src, tc.tgt); !slices.Equal(got, tc.want) {
				t.Errorf("diffRows = %v, want %v", got, tc.want)
			}
		})
	}
}

func ptr(v int64) *int64 { return &v }

func TestKeyRanges(t *testing.T) {
	if got := cut([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 5); !slices.Equal(got, []int64{3, 5, 7, 9}) {
		t.Errorf("cut into 5 = %v", got)
	}
	// Bounds are strictly increasing and above the first key, so no range
	// is empty by construction.
	if got := cut([]int64{1, 1, 1, 2}, 4); !slices.Equal(got, []int64{2}) {
		t.Errorf("cut of repeated keys = %v", got)
	}
	if got := cut([]int64{1, 2, 3}, 1); got != nil {
		t.Errorf("cut into 1 = %v", got)
	}

	rs := tablePlan{Key: "id", Bounds: []int64{10, 20}}.ranges()
	if len(rs) != 3 || rs[0].String() != "[-inf, 10)" || rs[1].String() != "[10, 20)" || rs[2].String() != "[20, +inf)" {
		t.Fatalf("ranges = %v", rs)
	}
	if w := rs[1].where("id"); w != ` WHERE t."id" >= 10 AND t."id" < 20` {
		t.Errorf("where = %q", w)
	}
	if w := (KeyRange{}).where("Id"); w != "" {
		t.Errorf("where of the whole key = %q", w)
	}
	if w := rs[0].where(`Key "x"`); w != ` WHERE t."Key ""x""" < 10` {
		t.Errorf("where with a quoted key = %q", w)
	}

	r := KeyRange{From: ptr(10), To: ptr(20)}
	parts := r.split([]int64{10, 15, 15, 25, 12})
	var got []string
	for _, p := range parts {
		got = append(got, p.String())
	}
	if want := []string{"[10, 12)", "[12, 15)", "[15, 20)"}; !slices.Equal(got, want) {
		t.Errorf("split = %q, want %q", got, want)
	}
	if parts := r.split([]int64{10}); parts != nil {
		t.Errorf("split at the lower bound only = %v, want nil", parts)
	}
}

func TestState(t *testing.T) {
	dir := t.TempDir()
	pair := statePair{Source: "a:5432/db", Target: "b:5432/db"}
	st, err := openState(dir, false, pair)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openState(dir, false, pair); err == nil {
		t.Fatal("a second open of a results file in use succeeded")
	}
	for _, name := range []string{"s.a", "s.ab"} {
		if err := st.putPlan(name, tablePlan{Key: "id", Bounds: []int64{5}}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := st.putResult(name, i, rangeResult{Source: tableSum{Rows: int64(i), Sum: "1"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A new plan forgets the results of the old one, and only its table's.
	if err := st.putPlan("s.a", tablePlan{}); err != nil {
		t.Fatal(err)
	}
	if res, err := st.results("s.a"); err != nil || len(res) != 0 {
		t.Errorf("results after a new plan: %v, %v", res, err)
	}
	if res, err := st.results("s.ab"); err != nil || len(res) != 2 || res[1].Source.Rows != 1 {
		t.Errorf("results of the other table: %v, %v", res, err)
	}
	st.close()

	if _, err := openState(dir, false, statePair{Source: "c:5432/db", Target: pair.Target}); err == nil {
		t.Error("a results file of another pair was opened")
	}
	st, err = openState(dir, true, statePair{Source: "c:5432/db", Target: pair.Target})
	if err != nil {
		t.Fatalf("restart on another pair: %v", err)
	}
	defer st.close()
	if _, ok, err := st.plan("s.ab"); ok || err != nil {
		t.Errorf("plan after restart: %v, %v", ok, err)
	}
	if _, err := filepath.Glob(filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}
}

func TestTableSumAdd(t *testing.T) {
	a := tableSum{Rows: 2, Sum: "-9223372036854775808"}
	b := tableSum{Rows: 3, Sum: "-9223372036854775808"}
	if got := a.add(b); got != (tableSum{Rows: 5, Sum: "-18446744073709551616"}) {
		t.Errorf("add = %+v", got)
	}
	if got := (tableSum{}).add(tableSum{Rows: 1, Sum: "7"}); got != (tableSum{Rows: 1, Sum: "7"}) {
		t.Errorf("add to zero = %+v", got)
	}
}
