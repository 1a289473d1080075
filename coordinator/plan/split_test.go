package plan_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// powersOfTwo are the histogram bounds of a skewed key: each of the 20
// buckets holds 5% of the rows, and half of the rows have keys below 1024
// out of a range that reaches 2^20.
func powersOfTwo() []int64 {
	b := make([]int64, 21)
	for i := range b {
		b[i] = 1 << i
	}
	return b
}

// splitInput has a table of every kind the splitter tells apart, with an
// explicit --split-tables-larger-than of 1 GiB and --split-max-parts 16.
func splitInput() plan.Input {
	tables := []plan.Table{
		// Skewed key that follows the physical order: 4 key ranges cut at the
		// quartiles (32, 1024, 32768), not at equal widths (262144, ...).
		{OID: 100, Schema: "s", Name: "skewed", RelKind: "r", Columns: []string{"id", "v"}, BinarySafe: true, EstRows: 40_000_000,
			Bytes: 4 * gib, HeapPages: 4 * gib / 8192, SplitKey: &plan.SplitKey{Column: "id", Bounds: powersOfTwo(), Correlation: 1}},
		// Mostly TOAST: an 8 MB heap, 6 GiB in all. Sized on the heap it
		// would stay whole; on heap + TOAST it is 6 parts.
		{OID: 200, Schema: "s", Name: "toasty", RelKind: "r", Columns: []string{"id", "doc"}, BinarySafe: true, EstRows: 50_000,
			Bytes: 6 * gib, HeapPages: 1000},
		// 100 parts by size, capped at 16; the key does not follow the
		// physical order, so CTID ranges.
		{OID: 300, Schema: "s", Name: "huge", RelKind: "r", Columns: []string{"id"}, BinarySafe: true, EstRows: 900_000_000,
			Bytes: 100 * gib, HeapPages: 100 * gib / 8192, SplitKey: &plan.SplitKey{Column: "id", Bounds: []int64{0, 10, 20}, Correlation: 0.2}},
		// A key without statistics: CTID ranges.
		{OID: 400, Schema: "s", Name: "nostats", RelKind: "r", Columns: []string{"id"}, BinarySafe: true,
			Bytes: 2*gib + gib/2, HeapPages: (2*gib + gib/2) / 8192, SplitKey: &plan.SplitKey{Column: "id"}},
		// Bounds from a sample of a key in descending physical order.
		{OID: 500, Schema: "s", Name: "sampled", RelKind: "r", Columns: []string{"k"}, BinarySafe: true,
			Bytes: 4 * gib, HeapPages: 4 * gib / 8192,
			SplitKey: &plan.SplitKey{Column: "k", Bounds: []int64{-9_000_000_000, -5, 0, 7, 9_000_000_000}, Correlation: -0.95, Sampled: true}},
		// A source before PostgreSQL 14 (no TID range scans): key ranges
		// even on an uncorrelated key, and no split without a key.
		{OID: 600, Schema: "s", Name: "old_keyed", RelKind: "r", Columns: []string{"id"}, BinarySafe: true,
			Bytes: 2 * gib, SplitKey: &plan.SplitKey{Column: "id", Bounds: []int64{0, 1000, 2000, 3000, 4000}, Correlation: 0.1}},
		{OID: 601, Schema: "s", Name: "old_plain", RelKind: "r", Columns: []string{"id"}, BinarySafe: true, Bytes: 2 * gib},
		{OID: 700, Schema: "s", Name: "small", RelKind: "r", Columns: []string{"id"}, BinarySafe: true, Bytes: 100 * mib, HeapPages: 12800},
		// A partitioned table with one big leaf: the parent's index waits
		// for every part of every leaf.
		{OID: 800, Schema: "s", Name: "events", RelKind: "p", Columns: []string{"id", "at"}, BinarySafe: true},
		{OID: 801, Schema: "s", Name: "events_big", RelKind: "r", ParentOID: 800, Columns: []string{"id", "at"}, BinarySafe: true,
			Bytes: 2 * gib, HeapPages: 2 * gib / 8192},
		{OID: 802, Schema: "s", Name: "events_small", RelKind: "r", ParentOID: 800, Columns: []string{"id", "at"}, BinarySafe: false,
			Bytes: 10 * mib, HeapPages: 1280},
	}
	post := []plan.Entry{
		{DumpID: 10, Desc: "CONSTRAINT", Schema: "s", Tag: "skewed skewed_pkey", ObjOID: 9001, TableOID: 100,
			IndexOID: 9101, ConType: "p", ConName: "skewed_pkey",
			IndexDef: "CREATE UNIQUE INDEX skewed_pkey ON s.skewed USING btree (id)"},
		{DumpID: 20, Desc: "INDEX", Schema: "s", Tag: "toasty_doc_idx", ObjOID: 9102, TableOID: 200, IndexOID: 9102},
		{DumpID: 21, Desc: "INDEX", Schema: "s", Tag: "events_at_idx", ObjOID: 9103, TableOID: 800, IndexOID: 9103},
		{DumpID: 22, Desc: "INDEX", Schema: "s", Tag: "events_big_at_idx", ObjOID: 9104, TableOID: 801, IndexOID: 9104},
		{DumpID: 30, Desc: "INDEX ATTACH", Schema: "s", Tag: "events_big_at_idx", ObjOID: 9201, TableOID: 800,
			IndexOID: 9104, ParentIndexOID: 9103},
	}
	return plan.Input{
		Tables:   tables,
		PostData: post,
		Options: plan.Options{BinaryCopy: true, CopyFormat: plan.FormatAuto, LargeObjectsPerUnit: 1000,
			SplitTablesLargerThan: gib, SplitMaxParts: 16},
	}
}

// splitDerivedInput has no --split-tables-larger-than: with 2 copy jobs and
// 64 GiB in all, the threshold is 64 GiB / (4 * 2) = 8 GiB.
func splitDerivedInput() plan.Input {
	linear := make([]int64, 101)
	for i := range linear {
		linear[i] = int64(i) * 15_000
	}
	return plan.Input{
		Tables: []plan.Table{
			{OID: 1, Schema: "public", Name: "accounts", RelKind: "r", Columns: []string{"aid", "bid", "abalance", "filler"}, BinarySafe: true,
				EstRows: 1_500_000, Bytes: 48 * gib, HeapPages: 48 * gib / 8192,
				SplitKey: &plan.SplitKey{Column: "aid", Bounds: linear, Correlation: 1}},
			{OID: 2, Schema: "public", Name: "history", RelKind: "r", Columns: []string{"tid", "delta"}, BinarySafe: true,
				Bytes: 15*gib + 1000*mib, HeapPages: (15*gib + 1000*mib) / 8192},
			{OID: 3, Schema: "public", Name: "branches", RelKind: "r", Columns: []string{"bid"}, BinarySafe: true,
				Bytes: 24 * mib, HeapPages: 3072},
		},
		Options: plan.Options{BinaryCopy: true, CopyJobs: 2},
	}
}

func copiesOf(p plan.Plan, table string) []plan.Unit {
	var out []plan.Unit
	for _, u := range p.Units {
		if u.Kind == plan.KindCopy && u.Table == table {
			out = append(out, u)
		}
	}
	return out
}

func keyCuts(units []plan.Unit) []int64 {
	var cuts []int64
	for _, u := range units[1:] {
		cuts = append(cuts, u.Copy.Key.Lower)
	}
	return cuts
}

// TestSplitRanges checks, for every split table, that its parts cover every
// row exactly once: key ranges meet end to end from -inf to +inf, block
// ranges from block 0 to the open end; and that a split table's copies run
// without TRUNCATE or FREEZE and its last unit is VACUUM (ANALYZE).
func TestSplitRanges(t *testing.T) {
	for _, in := range []plan.Input{splitInput(), splitDerivedInput()} {
		p := plan.Build(in)
		for _, tb := range in.Tables {
			units := copiesOf(p, tb.QualifiedName())
			if !tb.HasData() {
				continue
			}
			var vacuum plan.Unit
			for _, u := range p.Units {
				if u.Kind == plan.KindVacuum && u.TableOID == tb.OID {
					vacuum = u
				}
			}
			if len(units) == 1 {
				c := units[0].Copy
				if !c.TruncateFreeze || c.Key != nil || c.StartBlock != 0 || c.EndBlock != 0 {
					t.Errorf("%s whole-table copy %+v, want TRUNCATE + FREEZE and no range", tb.Name, c)
				}
				if vacuum.SQL != `ANALYZE "s"."`+tb.Name+`";` && vacuum.SQL != `ANALYZE "public"."`+tb.Name+`";` || !vacuum.Transactional {
					t.Errorf("%s: last unit %q transactional=%t, want ANALYZE", tb.Name, vacuum.SQL, vacuum.Transactional)
				}
				continue
			}
			if !strings.HasPrefix(vacuum.SQL, "VACUUM (ANALYZE) ") || vacuum.Transactional {
				t.Errorf("%s: last unit %q transactional=%t, want VACUUM (ANALYZE) outside a transaction", tb.Name, vacuum.SQL, vacuum.Transactional)
			}
			var size int64
			for i, u := range units {
				c := u.Copy
				size += u.Size
				if c.TruncateFreeze {
					t.Errorf("%s part %d truncates: it would take back the parts already done", tb.Name, i)
				}
				if !slices.Contains(vacuum.DependsOn, u.ID) {
					t.Errorf("%s: vacuum does not wait for part %d", tb.Name, u.ID)
				}
				first, last := i == 0, i == len(units)-1
				if k := c.Key; k != nil {
					if k.LowerUnbounded != first || k.UpperUnbounded != last {
						t.Errorf("%s part %d: key range %+v, want only the first open below and only the last above", tb.Name, i, k)
					}
					if !first && k.Lower != units[i-1].Copy.Key.Upper {
						t.Errorf("%s part %d starts at %d, the previous ends at %d", tb.Name, i, k.Lower, units[i-1].Copy.Key.Upper)
					}
					if !first && !last && k.Lower >= k.Upper {
						t.Errorf("%s part %d: empty key range %+v", tb.Name, i, k)
					}
					continue
				}
				if first && c.StartBlock != 0 {
					t.Errorf("%s: first block range starts at %d", tb.Name, c.StartBlock)
				}
				if last != (c.EndBlock == 0) {
					t.Errorf("%s part %d: blocks %d-%d, want only the last open-ended", tb.Name, i, c.StartBlock, c.EndBlock)
				}
				if !first && c.StartBlock != units[i-1].Copy.EndBlock {
					t.Errorf("%s part %d starts at block %d, the previous ends at %d", tb.Name, i, c.StartBlock, units[i-1].Copy.EndBlock)
				}
			}
			if d := size - tb.Bytes; d < -int64(len(units)) || d > 0 {
				t.Errorf("%s: parts sized %d in all, want about %d", tb.Name, size, tb.Bytes)
			}
		}
	}
}

func TestSplitChoices(t *testing.T) {
	p := plan.Build(splitInput())
	count := func(table string) int { return len(copiesOf(p, table)) }

	if got := keyCuts(copiesOf(p, "s.skewed")); !slices.Equal(got, []int64{32, 1024, 32768}) {
		t.Errorf("skewed key cut at %v, want the quartiles [32 1024 32768]", got)
	}
	if n := count("s.toasty"); n != 6 {
		t.Errorf("toasty (8 MB heap, 6 GiB with TOAST): %d parts, want 6", n)
	}
	huge := copiesOf(p, "s.huge")
	if len(huge) != 16 || huge[0].Copy.Key != nil {
		t.Errorf("huge: %d parts (key %v), want 16 CTID ranges (--split-max-parts)", len(huge), huge[0].Copy.Key)
	}
	if u := copiesOf(p, "s.nostats"); len(u) != 3 || u[0].Copy.Key != nil {
		t.Errorf("nostats: %d parts, want 3 CTID ranges", len(u))
	}
	if got := keyCuts(copiesOf(p, "s.sampled")); !slices.Equal(got, []int64{-5, 0, 7}) {
		t.Errorf("sampled key cut at %v, want [-5 0 7]", got)
	}
	if got := keyCuts(copiesOf(p, "s.old_keyed")); !slices.Equal(got, []int64{2000}) {
		t.Errorf("old_keyed cut at %v, want [2000]", got)
	}
	for _, table := range []string{"s.old_plain", "s.small", "s.events_small"} {
		if n := count(table); n != 1 {
			t.Errorf("%s: %d parts, want whole", table, n)
		}
	}
	if u := copiesOf(p, "s.events_small"); u[0].Copy.Format != plan.FormatText {
		t.Errorf("events_small is not binary safe, copied as %s", u[0].Copy.Format)
	}

	// Index builds wait for every part of their table, and a partitioned
	// table's for every part of every leaf.
	parts := func(tables ...string) []uint64 {
		var ids []uint64
		for _, tb := range tables {
			for _, u := range copiesOf(p, tb) {
				ids = append(ids, u.ID)
			}
		}
		slices.Sort(ids)
		return ids
	}
	for _, u := range p.Units {
		var want []uint64
		switch {
		case u.Kind == plan.KindIndex && u.Description == "skewed_pkey":
			want = parts("s.skewed")
		case u.Kind == plan.KindIndex && u.Description == "toasty_doc_idx":
			want = parts("s.toasty")
		case u.Kind == plan.KindIndex && u.Description == "events_at_idx":
			want = parts("s.events_big", "s.events_small")
		default:
			continue
		}
		if !slices.Equal(u.DependsOn, want) {
			t.Errorf("%s depends on %v, want every part %v", u.Description, u.DependsOn, want)
		}
	}

	derived := plan.Build(splitDerivedInput())
	if got := keyCuts(copiesOf(derived, "public.accounts")); !slices.Equal(got, []int64{250_000, 500_000, 750_000, 1_000_000, 1_250_000}) {
		t.Errorf("accounts (48 GiB at 8 GiB) cut at %v, want 6 equal-depth parts", got)
	}
	if n := len(copiesOf(derived, "public.history")); n != 2 {
		t.Errorf("history (15.98 GiB at 8 GiB): %d parts, want 2", n)
	}
}

func TestSplitThreshold(t *testing.T) {
	table := func(bytes int64) plan.Table { return plan.Table{RelKind: "r", Bytes: bytes} }
	for _, tc := range []struct {
		name   string
		tables []plan.Table
		opts   plan.Options
		want   int64
	}{
		{"explicit", []plan.Table{table(100 * gib)}, plan.Options{SplitTablesLargerThan: 5 * mib}, 5 * mib},
		{"off", []plan.Table{table(100 * gib)}, plan.Options{SplitTablesLargerThan: -1}, 0},
		{"total over 4 per job", []plan.Table{table(60 * gib), table(4 * gib)}, plan.Options{CopyJobs: 8}, 2 * gib},
		{"4 jobs by default", []plan.Table{table(64 * gib)}, plan.Options{}, 4 * gib},
		{"floor", []plan.Table{table(20 * gib)}, plan.Options{CopyJobs: 4}, plan.MinSplitBytes},
		{"ceiling", []plan.Table{table(10 << 40)}, plan.Options{CopyJobs: 4}, plan.MaxSplitBytes},
		// Only tables with rows of their own count.
		{"data only", []plan.Table{table(32 * gib), {RelKind: "m", Bytes: 1 << 40}, {RelKind: "p"}}, plan.Options{CopyJobs: 1}, 8 * gib},
	} {
		if got := plan.SplitThreshold(tc.tables, tc.opts); got != tc.want {
			t.Errorf("%s: SplitThreshold = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestParseSplitSize(t *testing.T) {
	for in, want := range map[string]int64{
		"auto": 0, "off": -1, "1048576": 1 << 20, "512MB": 512 << 20, "1.5GB": 3 << 29, "2TB": 2 << 40,
		"64kB": 64 << 10, " 10 GB ": 10 << 30, "100B": 100,
	} {
		got, err := plan.ParseSplitSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSplitSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1GB", "ten", "5XB", "NaN", "1e30TB", "0.1B"} {
		if got, err := plan.ParseSplitSize(in); err == nil {
			t.Errorf("ParseSplitSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestSplitKeyExtremes cuts keys that span the whole int64 range without
// overflowing.
func TestSplitKeyExtremes(t *testing.T) {
	in := plan.Input{
		Tables: []plan.Table{{OID: 1, Schema: "s", Name: "t", RelKind: "r", Columns: []string{"k"}, Bytes: 4 * gib, HeapPages: 4 * gib / 8192,
			SplitKey: &plan.SplitKey{Column: "k", Bounds: []int64{math.MinInt64, math.MaxInt64}, Correlation: 1}}},
		Options: plan.Options{SplitTablesLargerThan: gib},
	}
	got := keyCuts(copiesOf(plan.Build(in), "s.t"))
	if len(got) != 3 || !slices.IsSorted(got) || got[1] < -1<<10 || got[1] > 1<<10 {
		t.Errorf("cuts of the int64 range = %v, want about [-2^62 0 2^62]", got)
	}
	// Bounds closer together than the parts asked for: no empty ranges.
	in.Tables[0].SplitKey.Bounds = []int64{1, 2, 3}
	if got := keyCuts(copiesOf(plan.Build(in), "s.t")); !slices.Equal(got, []int64{2, 3}) {
		t.Errorf("cuts of [1 2 3] in 4 = %v, want [2 3]", got)
	}
}

// TestSplitKeyOrder: key ranges while n * (1 - |correlation|) <= 1, CTID
// ranges past it, so the more parts, the closer a key must follow the heap.
func TestSplitKeyOrder(t *testing.T) {
	for _, tc := range []struct {
		correlation float64
		bytes       int64
		byKey       bool
	}{
		{1, 16 * gib, true},
		{-1, 16 * gib, true},
		{0.89, 4 * gib, true},   // 4 * 0.11 = 0.44
		{0.89, 16 * gib, false}, // 16 * 0.11 = 1.76
		{0.5, 2 * gib, true},    // 2 * 0.5 = 1
		{0.5, 3 * gib, false},
		{0, 2 * gib, false},
	} {
		in := plan.Input{
			Tables: []plan.Table{{OID: 1, Schema: "s", Name: "t", RelKind: "r", Columns: []string{"k"}, Bytes: tc.bytes, HeapPages: tc.bytes / 8192,
				SplitKey: &plan.SplitKey{Column: "k", Bounds: []int64{0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000}, Correlation: tc.correlation}}},
			Options: plan.Options{SplitTablesLargerThan: gib},
		}
		units := copiesOf(plan.Build(in), "s.t")
		if got := units[0].Copy.Key != nil; got != tc.byKey || len(units) < 2 {
			t.Errorf("correlation %.2f in %d parts: key ranges %t, want %t", tc.correlation, len(units), got, tc.byKey)
		}
	}
}
