package filter_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
)

// OIDs of the test source, named after their objects.
const (
	oidCustomers = 16467
	oidCustSeq   = 16466
	oidOrders    = 16476
	oidOrdersSeq = 16475
	oidEv        = 16495
	oidEv2024    = 16498
	oidEv2025    = 16501
	oidT2        = 16508
	oidFreeSeq   = 16507
	oidCustPkey  = 16474 // constraint
	oidCustPkIdx = 16473
	oidOrdTotIdx = 16488
	oidEvAt      = 16504
	oidEv24At    = 16505
	oidEv25At    = 16506
)

// shopEntries is the table of contents pg_dump 15 wrote for this schema
// (pg_restore --list --verbose), pre- and post-data:
//
//	CREATE SCHEMA app; CREATE EXTENSION pg_trgm;
//	CREATE TABLE app.customers (id serial PRIMARY KEY, name text);
//	CREATE TABLE app.orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
//	    cust int REFERENCES app.customers(id), total numeric);
//	CREATE INDEX orders_total_idx ON app.orders(total);
//	CREATE VIEW app.cust_view AS SELECT * FROM app.customers;
//	CREATE FUNCTION app.trg() ...; CREATE TRIGGER t1 ... ON app.customers ...;
//	COMMENT ON TABLE app.customers IS 'c';
//	CREATE TABLE app.ev (id int, at date) PARTITION BY RANGE (at);
//	CREATE TABLE app.ev_2024 PARTITION OF app.ev ...; ... app.ev_2025 ...;
//	CREATE INDEX ev_at ON app.ev(at);
//	CREATE SEQUENCE app.free_seq;
//	CREATE TABLE app.t2 (x int DEFAULT nextval('app.customers_id_seq'));
func shopEntries() []filter.Entry {
	e := func(id int, desc, names string, oid uint32, deps ...int) filter.Entry {
		schema, rest, _ := strings.Cut(names, " ")
		if schema == "-" {
			schema = ""
		}
		tag := rest
		if i := strings.LastIndex(rest, " "); i >= 0 {
			tag = rest[:i]
		}
		return filter.Entry{DumpID: id, Desc: desc, Schema: schema, Tag: tag, Names: names, ObjOID: oid, Deps: deps}
	}
	return []filter.Entry{
		e(7, "SCHEMA", "- app postgres", 16384),
		e(2, "EXTENSION", "- pg_trgm ", 16385),
		e(3440, "COMMENT", "- EXTENSION pg_trgm ", 0, 2),
		e(257, "FUNCTION", "app trg() postgres", 16493, 7),
		e(217, "TABLE", "app customers postgres", oidCustomers, 7),
		e(3441, "COMMENT", "app TABLE customers postgres", 0, 217),
		e(220, "VIEW", "app cust_view postgres", 16489, 217, 217, 7),
		e(216, "SEQUENCE", "app customers_id_seq postgres", oidCustSeq, 7, 217),
		e(3442, "SEQUENCE OWNED BY", "app customers_id_seq postgres", 0, 216),
		e(221, "TABLE", "app ev postgres", oidEv, 7),
		e(222, "TABLE", "app ev_2024 postgres", oidEv2024, 221, 7),
		e(223, "TABLE", "app ev_2025 postgres", oidEv2025, 7, 221),
		e(224, "SEQUENCE", "app free_seq postgres", oidFreeSeq, 7),
		e(219, "TABLE", "app orders postgres", oidOrders, 7),
		e(218, "SEQUENCE", "app orders_id_seq postgres", oidOrdersSeq, 219, 7),
		e(225, "TABLE", "app t2 postgres", oidT2, 216, 7),
		e(3274, "TABLE ATTACH", "app ev_2024 postgres", 0, 222, 221),
		e(3275, "TABLE ATTACH", "app ev_2025 postgres", 0, 223, 221),
		e(3276, "DEFAULT", "app customers id postgres", 16470, 217, 216, 217),
		e(3279, "CONSTRAINT", "app customers customers_pkey postgres", oidCustPkey, 217),
		e(3281, "CONSTRAINT", "app orders orders_pkey postgres", 16482, 219),
		e(3283, "INDEX", "app ev_at postgres", oidEvAt, 221),
		e(3284, "INDEX", "app ev_2024_at_idx postgres", oidEv24At, 3283, 222, 222),
		e(3285, "INDEX", "app ev_2025_at_idx postgres", oidEv25At, 223, 223, 3283),
		e(3282, "INDEX", "app orders_total_idx postgres", oidOrdTotIdx, 219),
		e(3286, "INDEX ATTACH", "app ev_2024_at_idx postgres", 0, 3284, 3283, 222, 221),
		e(3287, "INDEX ATTACH", "app ev_2025_at_idx postgres", 0, 3285, 3283, 223, 221),
		e(3289, "TRIGGER", "app customers t1 postgres", 16494, 257, 217),
		e(3288, "FK CONSTRAINT", "app orders orders_cust_fkey postgres", 16483, 217, 3279, 219),
	}
}

func shopCatalog() filter.Catalog {
	return filter.Catalog{
		Relations: []filter.Relation{
			{OID: oidCustomers, Schema: "app", Name: "customers", Kind: "r"},
			{OID: oidEv, Schema: "app", Name: "ev", Kind: "p"},
			{OID: oidEv2024, Schema: "app", Name: "ev_2024", Kind: "r", ParentOID: oidEv},
			{OID: oidEv2025, Schema: "app", Name: "ev_2025", Kind: "r", ParentOID: oidEv},
			{OID: oidOrders, Schema: "app", Name: "orders", Kind: "r"},
			{OID: oidT2, Schema: "app", Name: "t2", Kind: "r"},
		},
		Indexes: []filter.Index{
			{OID: oidCustPkIdx, Schema: "app", Name: "customers_pkey", ConstraintOID: oidCustPkey},
			{OID: oidOrdTotIdx, Schema: "app", Name: "orders_total_idx"},
			{OID: oidEvAt, Schema: "app", Name: "ev_at"},
			{OID: oidEv24At, Schema: "app", Name: "ev_2024_at_idx"},
			{OID: oidEv25At, Schema: "app", Name: "ev_2025_at_idx"},
		},
		IdentitySequences: []uint32{oidOrdersSeq},
		ForeignKeys:       []filter.ForeignKey{{OID: 16483, TableOID: oidOrders, RefTableOID: oidCustomers}},
	}
}

func mustParse(t *testing.T, in string) *filter.Filter {
	t.Helper()
	f, err := filter.Parse("test.ini", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

// excludedIDs are the selection's excluded dump ids, in entry order.
func excludedIDs(entries []filter.Entry, sel filter.Selection) []int {
	var out []int
	for _, e := range entries {
		if sel.Excluded[e.DumpID] {
			out = append(out, e.DumpID)
		}
	}
	return out
}

func TestSelect(t *testing.T) {
	tests := []struct {
		name     string
		filter   string
		entries  func([]filter.Entry) []filter.Entry
		excluded []int
		tables   []uint32
		noData   []uint32
		skipped  []string // substrings, each must be in some Skipped line
		warnings int
	}{{
		name:   "exclude-table and what depends on it",
		filter: "[exclude-table]\napp.customers\n",
		// The comment, the view, the column default, the primary key, the
		// trigger and the foreign key from orders go; the serial sequence
		// stays (t2's default uses it) without its OWNED BY.
		excluded: []int{217, 3441, 220, 3442, 3276, 3279, 3289, 3288},
		tables:   []uint32{oidCustomers},
		skipped: []string{
			"table app.customers: excluded by [exclude-table]",
			"view app cust_view: depends on table app.customers, which is left out",
			"fk constraint app orders orders_cust_fkey: depends on table app.customers",
			"trigger app customers t1: depends on table app.customers",
			"sequence owned by app customers_id_seq: its owner table app.customers is left out",
		},
	}, {
		name:   "an owned sequence nothing else uses goes with its table",
		filter: "[exclude-table]\napp.customers\n",
		entries: func(es []filter.Entry) []filter.Entry {
			return slices.DeleteFunc(es, func(e filter.Entry) bool { return e.DumpID == 225 })
		},
		excluded: []int{217, 3441, 220, 216, 3442, 3276, 3279, 3289, 3288},
		tables:   []uint32{oidCustomers},
		skipped:  []string{"sequence app customers_id_seq: owned by table app.customers, which is left out"},
	}, {
		name:     "an identity sequence goes with its table",
		filter:   "[exclude-table]\napp.orders\n",
		excluded: []int{219, 218, 3281, 3282, 3288},
		tables:   []uint32{oidOrders},
		skipped:  []string{"sequence app orders_id_seq: depends on table app.orders"},
	}, {
		name:   "one leaf partition",
		filter: "[exclude-table]\napp.ev_2024\n",
		// Its ATTACH, its index and that index's attachment; the parent,
		// the other partition and the parent's index stay.
		excluded: []int{222, 3274, 3284, 3286},
		tables:   []uint32{oidEv2024},
		skipped:  []string{"partition app.ev_2024: excluded by [exclude-table]", "index attach app ev_2024_at_idx: depends on"},
	}, {
		name:     "a partitioned table takes its partitions",
		filter:   "[exclude-table]\napp.ev\n",
		excluded: []int{221, 222, 223, 3274, 3275, 3283, 3284, 3285, 3286, 3287},
		tables:   []uint32{oidEv, oidEv2024, oidEv2025},
	}, {
		name:     "include-only-table keeps partitions of an included parent and non-table objects",
		filter:   "[include-only-table]\napp.ev\n",
		excluded: []int{217, 3441, 220, 216, 3442, 219, 218, 225, 3276, 3279, 3281, 3282, 3289, 3288},
		tables:   []uint32{oidCustomers, oidOrders, oidT2},
		skipped:  []string{"table app.orders: not in [include-only-table]"},
	}, {
		name:   "exclude-schema leaves out everything in it",
		filter: "[exclude-schema]\napp\n",
		excluded: []int{7, 257, 217, 3441, 220, 216, 3442, 221, 222, 223, 224, 219, 218, 225, 3274, 3275, 3276,
			3279, 3281, 3283, 3284, 3285, 3282, 3286, 3287, 3289, 3288},
		tables:  []uint32{oidCustomers, oidEv, oidEv2024, oidEv2025, oidOrders, oidT2},
		skipped: []string{"schema app: excluded by [exclude-schema]", "function app trg(): schema app excluded by [exclude-schema]"},
	}, {
		name:     "include-only-schema of another schema is the same",
		filter:   "[include-only-schema]\npublic\n",
		excluded: []int{7, 257, 217, 3441, 220, 216, 3442, 221, 222, 223, 224, 219, 218, 225, 3274, 3275, 3276, 3279, 3281, 3283, 3284, 3285, 3282, 3286, 3287, 3289, 3288},
		tables:   []uint32{oidCustomers, oidEv, oidEv2024, oidEv2025, oidOrders, oidT2},
		skipped:  []string{"not in [include-only-schema]"},
	}, {
		name:     "exclude-index",
		filter:   "[exclude-index]\napp.orders_total_idx\n",
		excluded: []int{3282},
		skipped:  []string{"index app orders_total_idx: excluded by [exclude-index]"},
	}, {
		name:     "an excluded constraint index takes the constraint and the foreign keys on it",
		filter:   "[exclude-index]\napp.customers_pkey\n",
		excluded: []int{3279, 3288},
		skipped:  []string{"constraint app customers customers_pkey: its index app.customers_pkey is excluded by [exclude-index]"},
	}, {
		name:    "exclude-table-data on a partitioned table reaches its partitions",
		filter:  "[exclude-table-data]\napp.ev\napp.t2\n",
		noData:  []uint32{oidEv, oidEv2024, oidEv2025, oidT2},
		skipped: []string{"partition app.ev_2024: rows not copied, [exclude-table-data]", "table app.t2: rows not copied"},
	}, {
		name:     "a foreign key from a table with rows to one without goes",
		filter:   "[exclude-table-data]\napp.customers\n",
		excluded: []int{3288},
		noData:   []uint32{oidCustomers},
		skipped: []string{"fk constraint app orders orders_cust_fkey: references table app.customers, whose rows are not copied " +
			"([exclude-table-data]), from table app.orders, whose rows are"},
	}, {
		name:   "a foreign key between two tables without rows stays",
		filter: "[exclude-table-data]\napp.customers\napp.orders\n",
		noData: []uint32{oidCustomers, oidOrders},
	}, {
		name:   "a foreign key from a table without rows to one with rows stays",
		filter: "[exclude-table-data]\napp.orders\n",
		noData: []uint32{oidOrders},
	}, {
		name:     "exclude-extension leaves out the extension and its comment only",
		filter:   "[exclude-extension]\npg_trgm\n",
		excluded: []int{2, 3440},
		skipped:  []string{"extension pg_trgm: excluded by [exclude-extension]"},
	}, {
		name:     "names that match nothing are warned about",
		filter:   "[exclude-table]\napp.Customers\n[exclude-index]\napp.nope\n[exclude-schema]\nnope\n[exclude-extension]\nnope\n",
		warnings: 4,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entries := shopEntries()
			if tc.entries != nil {
				entries = tc.entries(entries)
			}
			sel := filter.Select(mustParse(t, tc.filter), entries, shopCatalog())
			if got := excludedIDs(entries, sel); !slices.Equal(got, tc.excluded) {
				t.Errorf("excluded dump ids %v, want %v\nskipped:\n  %s", got, tc.excluded, strings.Join(sel.Skipped, "\n  "))
			}
			if got := oids(sel.Tables); !slices.Equal(got, sorted(tc.tables)) {
				t.Errorf("excluded tables %v, want %v", got, sorted(tc.tables))
			}
			if got := oids(sel.NoData); !slices.Equal(got, sorted(tc.noData)) {
				t.Errorf("tables without data %v, want %v", got, sorted(tc.noData))
			}
			for _, want := range tc.skipped {
				if !slices.ContainsFunc(sel.Skipped, func(s string) bool { return strings.Contains(s, want) }) {
					t.Errorf("no skipped line contains %q:\n  %s", want, strings.Join(sel.Skipped, "\n  "))
				}
			}
			if len(sel.Skipped) != len(tc.excluded)+countRows(tc.noData) {
				t.Errorf("%d skipped lines for %d excluded entries:\n  %s", len(sel.Skipped), len(tc.excluded), strings.Join(sel.Skipped, "\n  "))
			}
			if len(sel.Warnings) != tc.warnings {
				t.Errorf("warnings %q, want %d", sel.Warnings, tc.warnings)
			}
		})
	}
}

// countRows is how many of oids are relations with rows (not the
// partitioned parent), which get a "rows not copied" line.
func countRows(oids []uint32) int {
	n := 0
	for _, o := range oids {
		if o != oidEv {
			n++
		}
	}
	return n
}

func TestSelectEmptyFilterKeepsEverything(t *testing.T) {
	for _, f := range []*filter.Filter{nil, {}} {
		sel := filter.Select(f, shopEntries(), shopCatalog())
		if len(sel.Excluded)+len(sel.Tables)+len(sel.NoData)+len(sel.Skipped) != 0 {
			t.Errorf("Select(%v) left something out: %+v", f, sel)
		}
	}
}

func TestTableExcludedForPublication(t *testing.T) {
	f := mustParse(t, "[exclude-table]\napp.ev\n[exclude-table-data]\napp.t2\n")
	rels := shopCatalog().Relations
	for oid, want := range map[uint32]bool{oidEv: true, oidEv2024: true, oidOrders: false, oidT2: false} {
		if got := f.TableExcluded(rels, oid); got != want {
			t.Errorf("TableExcluded(%d) = %t, want %t", oid, got, want)
		}
	}
	if !f.TableDataExcluded(rels, oidT2) || f.TableDataExcluded(rels, oidOrders) {
		t.Error("TableDataExcluded is wrong for t2 or orders")
	}
}

func oids(m map[uint32]bool) []uint32 {
	var out []uint32
	for o := range m {
		out = append(out, o)
	}
	return sorted(out)
}

func sorted(in []uint32) []uint32 {
	out := slices.Clone(in)
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

// TestSelectNamesWithSpaces: pg_restore prints names unquoted, so the
// schema of an entry is found among the source's schemas, and what is
// skipped is named with quotes where needed.
func TestSelectNamesWithSpaces(t *testing.T) {
	entries := []filter.Entry{
		{DumpID: 10, Desc: "SCHEMA", Tag: "My Schema", Names: "- My Schema postgres", ObjOID: 100},
		{DumpID: 11, Desc: "TABLE", Schema: "My", Tag: "Schema Odd.Name", Names: "My Schema Odd.Name postgres", ObjOID: 101, Deps: []int{10}},
		{DumpID: 12, Desc: "CONSTRAINT", Schema: "My", Tag: "Schema Odd.Name Odd.Name_pkey", Names: "My Schema Odd.Name Odd.Name_pkey postgres", ObjOID: 102, Deps: []int{11}},
		{DumpID: 13, Desc: "FUNCTION", Schema: "My", Tag: "Schema f()", Names: "My Schema f() postgres", ObjOID: 103, Deps: []int{10}},
	}
	cat := filter.Catalog{Relations: []filter.Relation{{OID: 101, Schema: "My Schema", Name: "Odd.Name", Kind: "r"}}}
	sel := filter.Select(mustParse(t, "[exclude-table]\n\"My Schema\".\"Odd.Name\"\n"), entries, cat)
	want := []string{
		`table "My Schema"."Odd.Name": excluded by [exclude-table]`,
		`constraint "My Schema" Odd.Name Odd.Name_pkey: depends on table "My Schema"."Odd.Name", which is left out`,
	}
	if !slices.Equal(sel.Skipped, want) {
		t.Errorf("skipped:\n  %s\nwant:\n  %s", strings.Join(sel.Skipped, "\n  "), strings.Join(want, "\n  "))
	}
	sel = filter.Select(mustParse(t, "[exclude-schema]\n\"My Schema\"\n"), entries, cat)
	if got := excludedIDs(entries, sel); !slices.Equal(got, []int{10, 11, 12, 13}) {
		t.Errorf("exclude-schema \"My Schema\" left out %v, want every entry", got)
	}
}
