package plan_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// OIDs of the shop schema, named so the tests read like the schema.
const (
	oidBookings      = 16460
	oidCustomers     = 16400
	oidEvents        = 16420 // partitioned
	oidEvents2024    = 16421
	oidEvents2025    = 16422
	oidItems         = 16430 // inheritance parent
	oidItemsArchive  = 16431 // inherits items
	oidOrderTotals   = 16450 // materialized view
	oidOrders        = 16410
	oidRemoteRates   = 16440 // foreign table
	oidBookingsPkey  = 16461
	oidBookingsRef   = 16462
	oidBookingsExcl  = 16466
	oidCustomersPkey = 16401
	oidCustomersMail = 16402
	oidEvents24Pkey  = 16423
	oidEvents25Pkey  = 16424
	oidEventsPkey    = 16425
	oidEventsAtIdx   = 16426
	oidEvents24AtIdx = 16427
	oidEvents25AtIdx = 16428
	oidItemsPkey     = 16432
	oidArchiveSkuIdx = 16433
	oidOrderTotIdx   = 16451
	oidOrdersPkey    = 16413
	oidOrdersCustIdx = 16411
	oidOrdersAtIdx   = 16412
)

// shopInput is a small but complete schema, with post-data entries in the
// order pg_dump lists them (CONSTRAINT before INDEX before INDEX ATTACH
// before TRIGGER before FK CONSTRAINT; a COMMENT right after its object) and
// annotated the way catalog.Annotate does it.
func shopInput() plan.Input {
	const mb = 1 << 20
	tables := []plan.Table{
		{OID: oidBookings, Schema: "shop", Name: "bookings", RelKind: "r", Columns: []string{"id", "room", "during", "ref", "amount"}, BinarySafe: true, EstRows: 5000, Bytes: 1 * mb},
		{OID: oidCustomers, Schema: "shop", Name: "customers", RelKind: "r", Columns: []string{"id", "name", "email"}, BinarySafe: true, EstRows: 100000, Bytes: 8 * mb},
		{OID: oidEvents, Schema: "shop", Name: "events", RelKind: "p", Columns: []string{"id", "at", "customer_id", "payload"}, BinarySafe: true},
		{OID: oidEvents2024, Schema: "shop", Name: "events_2024", RelKind: "r", ParentOID: oidEvents, Columns: []string{"id", "at", "customer_id", "payload"}, BinarySafe: true, EstRows: 900000, Bytes: 96 * mb},
		{OID: oidEvents2025, Schema: "shop", Name: "events_2025", RelKind: "r", ParentOID: oidEvents, Columns: []string{"id", "at", "customer_id", "payload"}, BinarySafe: true, EstRows: 400000, Bytes: 40 * mb},
		{OID: oidItems, Schema: "shop", Name: "items", RelKind: "r", Columns: []string{"id", "sku"}, BinarySafe: true, EstRows: 2000, Bytes: 2 * mb},
		// A custom type without binary I/O: text COPY even with BinaryCopy.
		{OID: oidItemsArchive, Schema: "shop", Name: "items_archive", RelKind: "r", Columns: []string{"id", "sku", "archived_reason"}, BinarySafe: false, EstRows: 3000, Bytes: 3 * mb},
		{OID: oidOrderTotals, Schema: "shop", Name: "order_totals", RelKind: "m", Columns: []string{"customer_id", "total"}, BinarySafe: true, Bytes: 512 * 1024, Populated: true},
		{OID: oidOrders, Schema: "shop", Name: "orders", RelKind: "r", Columns: []string{"id", "customer_id", "total", "placed_at"}, BinarySafe: true, EstRows: 700000, Bytes: 64 * mb},
		{OID: oidRemoteRates, Schema: "shop", Name: "remote_rates", RelKind: "f", Columns: []string{"currency", "rate"}, BinarySafe: true},
	}
	post := []plan.Entry{
		// CONSTRAINT and CHECK CONSTRAINT (PRIO_CONSTRAINT), by name.
		{DumpID: 301, Desc: "CONSTRAINT", Schema: "shop", Tag: "bookings bookings_no_overlap", ObjOID: 17001, TableOID: oidBookings,
			IndexOID: oidBookingsExcl, ConType: "x", ConName: "bookings_no_overlap"},
		{DumpID: 302, Desc: "CONSTRAINT", Schema: "shop", Tag: "bookings bookings_pkey", ObjOID: 17002, TableOID: oidBookings,
			IndexOID: oidBookingsPkey, ConType: "p", ConName: "bookings_pkey",
			IndexDef: "CREATE UNIQUE INDEX bookings_pkey ON shop.bookings USING btree (id)"},
		{DumpID: 303, Desc: "CHECK CONSTRAINT", Schema: "shop", Tag: "bookings bookings_amount_check", ObjOID: 17003, TableOID: oidBookings,
			ConType: "c", ConName: "bookings_amount_check"},
		{DumpID: 304, Desc: "CONSTRAINT", Schema: "shop", Tag: "bookings bookings_ref_key", ObjOID: 17004, TableOID: oidBookings,
			IndexOID: oidBookingsRef, ConType: "u", ConName: "bookings_ref_key", Deferrable: true, Deferred: true,
			IndexDef: "CREATE UNIQUE INDEX bookings_ref_key ON shop.bookings USING btree (ref)"},
		{DumpID: 305, Desc: "CONSTRAINT", Schema: "shop", Tag: "customers customers_email_key", ObjOID: 17005, TableOID: oidCustomers,
			IndexOID: oidCustomersMail, ConType: "u", ConName: "customers_email_key", Deferrable: true,
			IndexDef: "CREATE UNIQUE INDEX customers_email_key ON shop.customers USING btree (email)"},
		{DumpID: 306, Desc: "COMMENT", Schema: "shop", Tag: "CONSTRAINT customers_email_key ON shop.customers", ObjOID: 17005},
		{DumpID: 307, Desc: "CONSTRAINT", Schema: "shop", Tag: "customers customers_pkey", ObjOID: 17006, TableOID: oidCustomers,
			IndexOID: oidCustomersPkey, ConType: "p", ConName: "customers_pkey",
			IndexDef: "CREATE UNIQUE INDEX customers_pkey ON shop.customers USING btree (id)"},
		{DumpID: 308, Desc: "CONSTRAINT", Schema: "shop", Tag: "events_2024 events_2024_pkey", ObjOID: 17007, TableOID: oidEvents2024,
			IndexOID: oidEvents24Pkey, ConType: "p", ConName: "events_2024_pkey",
			IndexDef: "CREATE UNIQUE INDEX events_2024_pkey ON shop.events_2024 USING btree (id, at)"},
		{DumpID: 309, Desc: "CONSTRAINT", Schema: "shop", Tag: "events_2025 events_2025_pkey", ObjOID: 17008, TableOID: oidEvents2025,
			IndexOID: oidEvents25Pkey, ConType: "p", ConName: "events_2025_pkey",
			IndexDef: "CREATE UNIQUE INDEX events_2025_pkey ON shop.events_2025 USING btree (id, at)"},
		// The partitioned parent's key: ADD CONSTRAINT cannot use USING
		// INDEX on a partitioned table, so it is restored from the dump.
		{DumpID: 310, Desc: "CONSTRAINT", Schema: "shop", Tag: "events events_pkey", ObjOID: 17009, TableOID: oidEvents,
			IndexOID: oidEventsPkey, ConType: "p", ConName: "events_pkey",
			IndexDef: "CREATE UNIQUE INDEX events_pkey ON ONLY shop.events USING btree (id, at)"},
		{DumpID: 311, Desc: "CONSTRAINT", Schema: "shop", Tag: "items items_pkey", ObjOID: 17010, TableOID: oidItems,
			IndexOID: oidItemsPkey, ConType: "p", ConName: "items_pkey",
			IndexDef: "CREATE UNIQUE INDEX items_pkey ON shop.items USING btree (id)"},
		{DumpID: 312, Desc: "CONSTRAINT", Schema: "shop", Tag: "orders orders_pkey", ObjOID: 17011, TableOID: oidOrders,
			IndexOID: oidOrdersPkey, ConType: "p", ConName: "orders_pkey",
			IndexDef: "CREATE UNIQUE INDEX orders_pkey ON shop.orders USING btree (id)"},
		// INDEX (PRIO_INDEX).
		{DumpID: 320, Desc: "INDEX", Schema: "shop", Tag: "events_at_idx", ObjOID: oidEventsAtIdx, TableOID: oidEvents, IndexOID: oidEventsAtIdx},
		{DumpID: 321, Desc: "INDEX", Schema: "shop", Tag: "events_2024_at_idx", ObjOID: oidEvents24AtIdx, TableOID: oidEvents2024, IndexOID: oidEvents24AtIdx},
		{DumpID: 322, Desc: "INDEX", Schema: "shop", Tag: "events_2025_at_idx", ObjOID: oidEvents25AtIdx, TableOID: oidEvents2025, IndexOID: oidEvents25AtIdx},
		{DumpID: 323, Desc: "INDEX", Schema: "shop", Tag: "items_archive_sku_idx", ObjOID: oidArchiveSkuIdx, TableOID: oidItemsArchive, IndexOID: oidArchiveSkuIdx},
		{DumpID: 324, Desc: "INDEX", Schema: "shop", Tag: "order_totals_customer_idx", ObjOID: oidOrderTotIdx, TableOID: oidOrderTotals, IndexOID: oidOrderTotIdx},
		{DumpID: 325, Desc: "INDEX", Schema: "shop", Tag: "orders_customer_id_idx", ObjOID: oidOrdersCustIdx, TableOID: oidOrders, IndexOID: oidOrdersCustIdx},
		{DumpID: 326, Desc: "INDEX", Schema: "shop", Tag: "orders_placed_at_idx", ObjOID: oidOrdersAtIdx, TableOID: oidOrders, IndexOID: oidOrdersAtIdx},
		// INDEX ATTACH (PRIO_INDEX_ATTACH): TableOID is the parent index's table.
		{DumpID: 330, Desc: "INDEX ATTACH", Schema: "shop", Tag: "events_2024_at_idx", ObjOID: 17020, TableOID: oidEvents,
			IndexOID: oidEvents24AtIdx, ParentIndexOID: oidEventsAtIdx},
		{DumpID: 331, Desc: "INDEX ATTACH", Schema: "shop", Tag: "events_2024_pkey", ObjOID: 17021, TableOID: oidEvents,
			IndexOID: oidEvents24Pkey, ParentIndexOID: oidEventsPkey},
		{DumpID: 332, Desc: "INDEX ATTACH", Schema: "shop", Tag: "events_2025_at_idx", ObjOID: 17022, TableOID: oidEvents,
			IndexOID: oidEvents25AtIdx, ParentIndexOID: oidEventsAtIdx},
		{DumpID: 333, Desc: "INDEX ATTACH", Schema: "shop", Tag: "events_2025_pkey", ObjOID: 17023, TableOID: oidEvents,
			IndexOID: oidEvents25Pkey, ParentIndexOID: oidEventsPkey},
		// TRIGGER (PRIO_TRIGGER) and its comment.
		{DumpID: 340, Desc: "TRIGGER", Schema: "shop", Tag: "orders orders_audit", ObjOID: 17030, TableOID: oidOrders},
		{DumpID: 341, Desc: "COMMENT", Schema: "shop", Tag: "TRIGGER orders_audit ON shop.orders", ObjOID: 17030},
		// FK CONSTRAINT (PRIO_FK_CONSTRAINT): one from the partitioned table.
		{DumpID: 350, Desc: "FK CONSTRAINT", Schema: "shop", Tag: "events events_customer_id_fkey", ObjOID: 17040, TableOID: oidEvents,
			RefTableOID: oidCustomers, ConType: "f", ConName: "events_customer_id_fkey"},
		{DumpID: 351, Desc: "FK CONSTRAINT", Schema: "shop", Tag: "orders orders_customer_id_fkey", ObjOID: 17041, TableOID: oidOrders,
			RefTableOID: oidCustomers, ConType: "f", ConName: "orders_customer_id_fkey"},
		{DumpID: 360, Desc: "POLICY", Schema: "shop", Tag: "orders orders_owner", ObjOID: 17050, TableOID: oidOrders},
	}
	los := make([]uint32, 2500)
	for i := range los {
		los[i] = uint32(40000 + 3*i)
	}
	return plan.Input{
		Tables:   tables,
		PostData: post,
		Sequences: []plan.Sequence{
			{Schema: "shop", Name: "customers_id_seq", LastValue: 100042, IsCalled: true},
			{Schema: "shop", Name: "orders_id_seq", LastValue: 1, IsCalled: false},
		},
		LargeObjects: los,
		Matviews:     []plan.Table{tables[7]},
		Options:      plan.Options{BinaryCopy: true, LargeObjectsPerUnit: 1000, NoOwner: true},
	}
}

// weirdInput has names that must be quoted: quotes, spaces, upper case,
// non-ASCII, dots and apostrophes. It has no post-data entry left for the
// post-data unit, so the refresh waits for the copies and DDL directly.
func weirdInput() plan.Input {
	tables := []plan.Table{
		{OID: 20001, Schema: "Sch ema", Name: `we"ird`, RelKind: "r", Columns: []string{`co"l`, "Größe", "a b"}, BinarySafe: true, Bytes: 4096},
		{OID: 20002, Schema: "Sch ema", Name: "Ünïcødé.tbl", RelKind: "r", Columns: []string{"id", "we'ird_ref"}, BinarySafe: true, Bytes: 8192},
		{OID: 20003, Schema: "ütf", Name: "MV", RelKind: "m", Columns: []string{"n"}, Populated: true},
	}
	post := []plan.Entry{
		{DumpID: 10, Desc: "CONSTRAINT", Schema: "Sch ema", Tag: `we"ird we"ird_pkey`, ObjOID: 20101, TableOID: 20001,
			IndexOID: 20011, ConType: "p", ConName: `we"ird_pkey`,
			IndexDef: `CREATE UNIQUE INDEX "we""ird_pkey" ON "Sch ema"."we""ird" USING btree ("co""l")`},
		{DumpID: 11, Desc: "CONSTRAINT", Schema: "Sch ema", Tag: "Ünïcødé.tbl Uniq ü", ObjOID: 20102, TableOID: 20002,
			IndexOID: 20012, ConType: "u", ConName: "Uniq ü", Deferrable: true,
			IndexDef: `CREATE UNIQUE INDEX "Uniq ü" ON "Sch ema"."Ünïcødé.tbl" USING btree ("we'ird_ref")`},
		{DumpID: 12, Desc: "FK CONSTRAINT", Schema: "Sch ema", Tag: "Ünïcødé.tbl fk→weird", ObjOID: 20103, TableOID: 20002,
			RefTableOID: 20001, ConType: "f", ConName: "fk→weird"},
	}
	return plan.Input{
		Tables:   tables,
		PostData: post,
		Sequences: []plan.Sequence{
			{Schema: "Sch ema", Name: `it's "seq"`, LastValue: 7, IsCalled: true},
		},
		LargeObjects: []uint32{5, 6, 9},
		Matviews:     []plan.Table{tables[2]},
		// LargeObjectsPerUnit 0 falls back to 1000.
		Options: plan.Options{NoACL: true},
	}
}

var goldenCases = []struct {
	name string
	in   func() plan.Input
}{
	{"shop", shopInput},
	{"weird_names", weirdInput},
	{"empty", func() plan.Input { return plan.Input{} }},
	{"split", splitInput},
	{"split_derived", splitDerivedInput},
	{"filtered", filteredInput},
}

// filteredInput is the shop schema as the coordinator hands it over after
// a filter: events_2024 excluded (the table, its key, its index and their
// attachments are gone), orders created without rows
// ([exclude-table-data]), the order_totals refresh dropped with it, and the
// reasons passed through to Skipped before the planner's own.
func filteredInput() plan.Input {
	in := shopInput()
	in.Tables = slices.DeleteFunc(in.Tables, func(t plan.Table) bool { return t.OID == oidEvents2024 })
	for i := range in.Tables {
		if in.Tables[i].OID == oidOrders {
			in.Tables[i].NoData = true
		}
	}
	in.PostData = slices.DeleteFunc(in.PostData, func(e plan.Entry) bool {
		return e.TableOID == oidEvents2024 || e.IndexOID == oidEvents24AtIdx || e.IndexOID == oidEvents24Pkey
	})
	in.Matviews = nil
	in.Skipped = []string{
		"partition shop.events_2024: excluded by [exclude-table]",
		"index shop events_2024_at_idx: depends on partition shop.events_2024, which is left out",
		"table shop.orders: rows not copied, [exclude-table-data]",
	}
	return in
}

// render prints a plan as stable text, one line per unit.
func render(p plan.Plan) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %d tables, %d units\n", len(p.Tables), len(p.Units))
	for _, u := range p.Units {
		table := u.Table
		if table == "" {
			table = "-"
		}
		deps := make([]string, len(u.DependsOn))
		for i, d := range u.DependsOn {
			deps[i] = fmt.Sprint(d)
		}
		fmt.Fprintf(&sb, "%3d %-13s %-20s deps=[%s]", u.ID, u.Kind, table, strings.Join(deps, " "))
		if u.Transactional {
			sb.WriteString(" tx")
		}
		if u.NeedsSnapshot {
			sb.WriteString(" snapshot")
		}
		fmt.Fprintf(&sb, " size=%d %q", u.Size, u.Description)
		if c := u.Copy; c != nil {
			fmt.Fprintf(&sb, " copy=%s.%s format=%s truncate_freeze=%t blocks=%d-%d cols=%q",
				c.Schema, c.Table, c.Format, c.TruncateFreeze, c.StartBlock, c.EndBlock, c.Columns)
			if k := c.Key; k != nil {
				lower, upper := "-inf", "+inf"
				if !k.LowerUnbounded {
					lower = fmt.Sprint(k.Lower)
				}
				if !k.UpperUnbounded {
					upper = fmt.Sprint(k.Upper)
				}
				fmt.Fprintf(&sb, " key=%s[%s,%s)", k.Column, lower, upper)
			}
		}
		if lo := u.LargeObjects; lo != nil {
			fmt.Fprintf(&sb, " oids=%d..%d count=%d no_owner=%t no_acl=%t", lo.FirstOID, lo.LastOID, lo.Count, lo.NoOwner, lo.NoACL)
		}
		if len(u.DumpIDs) > 0 {
			fmt.Fprintf(&sb, " dump_ids=%v", u.DumpIDs)
		}
		if u.SQL != "" {
			fmt.Fprintf(&sb, " sql: %s", strings.ReplaceAll(strings.TrimSuffix(u.SQL, "\n"), "\n", `\n`))
		}
		sb.WriteString("\n")
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(&sb, "skipped: %s\n", s)
	}
	return sb.String()
}

func TestBuildGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got := render(plan.Build(tc.in()))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./coordinator/plan -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (run with -update and review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// TestBuildProperties checks what must hold for any plan. Unit IDs are not a
// topological order (pg_dump lists a table's CONSTRAINT entries before its
// INDEX entries, and a constraint waits for every index of its table), so
// the graph is checked for cycles instead.
func TestBuildProperties(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in()
			p := plan.Build(in)
			byID := map[uint64]plan.Unit{}
			for i, u := range p.Units {
				if u.ID != uint64(i+1) {
					t.Errorf("unit %d has ID %d, want IDs 1..n in order", i, u.ID)
				}
				byID[u.ID] = u
			}
			for _, u := range p.Units {
				for i, d := range u.DependsOn {
					if _, ok := byID[d]; !ok {
						t.Errorf("unit %d depends on unknown unit %d", u.ID, d)
					}
					if d == u.ID {
						t.Errorf("unit %d depends on itself", u.ID)
					}
					if i > 0 && u.DependsOn[i-1] >= d {
						t.Errorf("unit %d: deps %v not strictly ascending (duplicate or unsorted)", u.ID, u.DependsOn)
					}
				}
				switch u.Kind {
				case plan.KindCopy, plan.KindSequences, plan.KindLargeObjects:
					if len(u.DependsOn) != 0 {
						t.Errorf("%s unit %d has deps %v, want none", u.Kind, u.ID, u.DependsOn)
					}
				}
				if (u.Kind == plan.KindCopy) != (u.Copy != nil) {
					t.Errorf("unit %d kind %s: Copy=%v", u.ID, u.Kind, u.Copy)
				}
				if (u.Kind == plan.KindLargeObjects) != (u.LargeObjects != nil) {
					t.Errorf("unit %d kind %s: LargeObjects=%v", u.ID, u.Kind, u.LargeObjects)
				}
				if u.Kind != plan.KindCopy && u.Kind != plan.KindLargeObjects && u.SQL == "" && len(u.DumpIDs) == 0 {
					t.Errorf("unit %d kind %s has neither SQL nor dump IDs", u.ID, u.Kind)
				}
				// VACUUM cannot run in a transaction block; everything else
				// commits with its done-marker.
				if vacuum := strings.HasPrefix(u.SQL, "VACUUM "); u.Transactional == vacuum {
					t.Errorf("unit %d kind %s %q: transactional = %t", u.ID, u.Kind, u.SQL, u.Transactional)
				}
			}
			if cycle := findCycle(p.Units); cycle != nil {
				t.Errorf("dependency cycle: %v", cycle)
			}

			// Every post-data entry is used by at most one unit, and every
			// entry not turned into SQL of its own by exactly one.
			uses := map[int]int{}
			for _, u := range p.Units {
				for _, id := range u.DumpIDs {
					uses[id]++
				}
			}
			known := map[int]bool{}
			for _, e := range in.PostData {
				known[e.DumpID] = true
				usingIndex := (e.ConType == "p" || e.ConType == "u") && e.IndexDef != "" && relKind(in, e.TableOID) == "r"
				switch {
				case usingIndex && uses[e.DumpID] != 0:
					t.Errorf("entry %d (%s %s) is built with USING INDEX but also restored from the dump", e.DumpID, e.Desc, e.Tag)
				case !usingIndex && uses[e.DumpID] != 1:
					t.Errorf("entry %d (%s %s) is restored by %d units, want 1", e.DumpID, e.Desc, e.Tag, uses[e.DumpID])
				}
			}
			for id := range uses {
				if !known[id] {
					t.Errorf("a unit restores dump entry %d, which is not in the input", id)
				}
			}
		})
	}
}

func relKind(in plan.Input, oid uint32) string {
	for _, t := range in.Tables {
		if t.OID == oid {
			return t.RelKind
		}
	}
	return ""
}

// findCycle returns the units of a dependency cycle, or nil.
func findCycle(units []plan.Unit) []uint64 {
	deps := map[uint64][]uint64{}
	for _, u := range units {
		deps[u.ID] = u.DependsOn
	}
	const (
		unseen = iota
		onStack
		finished
	)
	state := map[uint64]int{}
	var stack []uint64
	var visit func(id uint64) []uint64
	visit = func(id uint64) []uint64 {
		state[id] = onStack
		stack = append(stack, id)
		for _, d := range deps[id] {
			switch state[d] {
			case onStack:
				i := slices.Index(stack, d)
				return append(append([]uint64(nil), stack[i:]...), d)
			case unseen:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[id] = finished
		return nil
	}
	for _, u := range units {
		if state[u.ID] == unseen {
			if c := visit(u.ID); c != nil {
				return c
			}
		}
	}
	return nil
}

func TestFindCycle(t *testing.T) {
	acyclic := []plan.Unit{{ID: 1}, {ID: 2, DependsOn: []uint64{3}}, {ID: 3, DependsOn: []uint64{1}}}
	if c := findCycle(acyclic); c != nil {
		t.Errorf("findCycle(acyclic) = %v", c)
	}
	cyclic := []plan.Unit{{ID: 1, DependsOn: []uint64{3}}, {ID: 2, DependsOn: []uint64{1}}, {ID: 3, DependsOn: []uint64{2}}}
	if c := findCycle(cyclic); c == nil {
		t.Error("findCycle(cyclic) = nil, want a cycle")
	}
}

func TestBuildDeterministicAndPure(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in()
			pristine := tc.in()
			a, b := plan.Build(in), plan.Build(in)
			if !reflect.DeepEqual(a, b) {
				t.Error("two Builds of one input differ")
			}
			if !reflect.DeepEqual(in, pristine) {
				t.Error("Build changed its input")
			}
		})
	}
}

// shopPlan indexes the shop plan by kind and description for the
// dependency tests below.
type shopPlan struct {
	plan.Plan
	t *testing.T
}

func (p shopPlan) unit(kind plan.Kind, table, desc string) plan.Unit {
	p.t.Helper()
	var found []plan.Unit
	for _, u := range p.Units {
		if u.Kind == kind && u.Table == table && (desc == "" || u.Description == desc) {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		p.t.Fatalf("%d %s units on %s %q, want 1", len(found), kind, table, desc)
	}
	return found[0]
}

func (p shopPlan) ids(units ...plan.Unit) []uint64 {
	var out []uint64
	for _, u := range units {
		out = append(out, u.ID)
	}
	slices.Sort(out)
	return out
}

func (p shopPlan) ofKind(kind plan.Kind) []plan.Unit {
	var out []plan.Unit
	for _, u := range p.Units {
		if u.Kind == kind {
			out = append(out, u)
		}
	}
	return out
}

func (p shopPlan) wantDeps(u plan.Unit, want ...plan.Unit) {
	p.t.Helper()
	if got, w := u.DependsOn, p.ids(want...); !slices.Equal(got, w) {
		p.t.Errorf("unit %d (%s %s %q) depends on %v, want %v", u.ID, u.Kind, u.Table, u.Description, got, w)
	}
}

// TestShopDependencies spells out, by name, the order ARCHITECTURE.md "The
// copy path" asks for, so a change to the golden file that breaks it fails
// here too.
func TestShopDependencies(t *testing.T) {
	p := shopPlan{plan.Build(shopInput()), t}
	copyOf := func(table string) plan.Unit { return p.unit(plan.KindCopy, table, "whole table") }
	idx := func(table, name string) plan.Unit { return p.unit(plan.KindIndex, table, name) }
	con := func(table, name string) plan.Unit { return p.unit(plan.KindConstraint, table, name) }

	bookings, customers := copyOf("shop.bookings"), copyOf("shop.customers")
	ev24, ev25 := copyOf("shop.events_2024"), copyOf("shop.events_2025")
	items, archive, orders := copyOf("shop.items"), copyOf("shop.items_archive"), copyOf("shop.orders")

	t.Run("copies", func(t *testing.T) {
		// Only tables with rows of their own are copied: not the
		// partitioned parent, the matview or the foreign table.
		var got []string
		for _, u := range p.ofKind(plan.KindCopy) {
			got = append(got, u.Table)
			if u.Copy.Schema != "shop" || "shop."+u.Copy.Table != u.Table {
				t.Errorf("copy unit %d copies %s.%s, want %s", u.ID, u.Copy.Schema, u.Copy.Table, u.Table)
			}
			if !u.NeedsSnapshot || !u.Copy.TruncateFreeze {
				t.Errorf("copy unit %d: NeedsSnapshot=%t TruncateFreeze=%t, want both", u.ID, u.NeedsSnapshot, u.Copy.TruncateFreeze)
			}
		}
		want := []string{"shop.bookings", "shop.customers", "shop.events_2024", "shop.events_2025", "shop.items", "shop.items_archive", "shop.orders"}
		if !slices.Equal(got, want) {
			t.Errorf("copied tables %q, want %q", got, want)
		}
		if f := archive.Copy.Format; f != plan.FormatText {
			t.Errorf("items_archive (not binary safe) copy format %s, want text", f)
		}
		if f := orders.Copy.Format; f != plan.FormatBinary {
			t.Errorf("orders copy format %s, want binary", f)
		}
		if want := []string{"shop.remote_rates: foreign table, its data stays on the foreign server"}; !slices.Equal(p.Skipped, want) {
			t.Errorf("skipped %q, want %q", p.Skipped, want)
		}
	})

	t.Run("indexes wait for their table's copies", func(t *testing.T) {
		p.wantDeps(idx("shop.orders", "orders_customer_id_idx"), orders)
		p.wantDeps(idx("shop.orders", "orders_placed_at_idx"), orders)
		p.wantDeps(idx("shop.orders", "orders_pkey"), orders)
		p.wantDeps(idx("shop.customers", "customers_pkey"), customers)
		p.wantDeps(idx("shop.customers", "customers_email_key"), customers)
		p.wantDeps(idx("shop.items_archive", "items_archive_sku_idx"), archive)
		// An inheritance parent's index waits for its own rows only (FROM
		// ONLY): the child is a table of its own.
		p.wantDeps(idx("shop.items", "items_pkey"), items)
		p.wantDeps(idx("shop.events_2024", "events_2024_at_idx"), ev24)
		p.wantDeps(idx("shop.events_2024", "events_2024_pkey"), ev24)
		// A partitioned table's index waits for every leaf partition.
		p.wantDeps(idx("shop.events", "events_at_idx"), ev24, ev25)
		// A matview's index has no copy to wait for: the view is empty
		// until the refresh, which comes after it.
		p.wantDeps(idx("shop.order_totals", "order_totals_customer_idx"))
		for _, u := range p.ofKind(plan.KindIndex) {
			if u.NeedsSnapshot {
				t.Errorf("index unit %d needs the snapshot", u.ID)
			}
		}
	})

	t.Run("primary and unique keys are built as indexes and attached USING INDEX", func(t *testing.T) {
		for _, tc := range []struct {
			table, name, indexSQL, conSQL string
		}{
			{"shop.orders", "orders_pkey",
				"CREATE UNIQUE INDEX orders_pkey ON shop.orders USING btree (id);",
				`ALTER TABLE ONLY "shop"."orders" ADD CONSTRAINT "orders_pkey" PRIMARY KEY USING INDEX "orders_pkey";`},
			{"shop.customers", "customers_email_key",
				"CREATE UNIQUE INDEX customers_email_key ON shop.customers USING btree (email);",
				`ALTER TABLE ONLY "shop"."customers" ADD CONSTRAINT "customers_email_key" UNIQUE USING INDEX "customers_email_key" DEFERRABLE;`},
			{"shop.bookings", "bookings_ref_key",
				"CREATE UNIQUE INDEX bookings_ref_key ON shop.bookings USING btree (ref);",
				`ALTER TABLE ONLY "shop"."bookings" ADD CONSTRAINT "bookings_ref_key" UNIQUE USING INDEX "bookings_ref_key" DEFERRABLE INITIALLY DEFERRED;`},
			{"shop.events_2025", "events_2025_pkey",
				"CREATE UNIQUE INDEX events_2025_pkey ON shop.events_2025 USING btree (id, at);",
				`ALTER TABLE ONLY "shop"."events_2025" ADD CONSTRAINT "events_2025_pkey" PRIMARY KEY USING INDEX "events_2025_pkey";`},
		} {
			i, c := idx(tc.table, tc.name), con(tc.table, tc.name)
			if i.SQL != tc.indexSQL || len(i.DumpIDs) != 0 {
				t.Errorf("index unit %s: SQL %q dump IDs %v, want %q and none", tc.name, i.SQL, i.DumpIDs, tc.indexSQL)
			}
			if c.SQL != tc.conSQL || len(c.DumpIDs) != 0 {
				t.Errorf("constraint unit %s: SQL %q dump IDs %v, want %q and none", tc.name, c.SQL, c.DumpIDs, tc.conSQL)
			}
		}
	})

	t.Run("constraints wait for every index of their table", func(t *testing.T) {
		oIdx := []plan.Unit{orders, idx("shop.orders", "orders_pkey"), idx("shop.orders", "orders_customer_id_idx"), idx("shop.orders", "orders_placed_at_idx")}
		p.wantDeps(con("shop.orders", "orders_pkey"), oIdx...)

		cPkeyIdx, cMailIdx := idx("shop.customers", "customers_pkey"), idx("shop.customers", "customers_email_key")
		cMail := con("shop.customers", "customers_email_key")
		p.wantDeps(cMail, customers, cPkeyIdx, cMailIdx)
		// A later constraint of the same table also waits for the earlier
		// one: both take ACCESS EXCLUSIVE on the table.
		p.wantDeps(con("shop.customers", "customers_pkey"), customers, cPkeyIdx, cMailIdx, cMail)

		// bookings: EXCLUDE (not attachable: restored from the dump), PK,
		// CHECK NOT VALID, deferrable UNIQUE, in that order.
		excl := con("shop.bookings", "bookings_no_overlap")
		if excl.SQL != "" || !slices.Equal(excl.DumpIDs, []int{301}) {
			t.Errorf("EXCLUDE constraint unit: SQL %q dump IDs %v, want the dump entry 301", excl.SQL, excl.DumpIDs)
		}
		bPkeyIdx, bRefIdx := idx("shop.bookings", "bookings_pkey"), idx("shop.bookings", "bookings_ref_key")
		p.wantDeps(excl, bookings, bPkeyIdx, bRefIdx)
		bPkey := con("shop.bookings", "bookings_pkey")
		p.wantDeps(bPkey, bookings, bPkeyIdx, bRefIdx, excl)
		check := con("shop.bookings", "bookings_amount_check")
		if !slices.Equal(check.DumpIDs, []int{303}) {
			t.Errorf("CHECK constraint unit dump IDs %v, want [303]", check.DumpIDs)
		}
		p.wantDeps(check, bookings, bPkeyIdx, bRefIdx, excl, bPkey)
		p.wantDeps(con("shop.bookings", "bookings_ref_key"), bookings, bPkeyIdx, bRefIdx, excl, bPkey, check)
		if n := len(p.ofKind(plan.KindIndex)); n != 15 {
			t.Errorf("%d index units, want 15 (7 INDEX entries + 8 USING INDEX keys)", n)
		}
	})

	t.Run("partitioned key and attachments", func(t *testing.T) {
		e24Idx, e25Idx := idx("shop.events_2024", "events_2024_pkey"), idx("shop.events_2025", "events_2025_pkey")
		e24AtIdx, e25AtIdx := idx("shop.events_2024", "events_2024_at_idx"), idx("shop.events_2025", "events_2025_at_idx")
		e24Con, e25Con := con("shop.events_2024", "events_2024_pkey"), con("shop.events_2025", "events_2025_pkey")
		p.wantDeps(e24Con, ev24, e24Idx, e24AtIdx)
		p.wantDeps(e25Con, ev25, e25Idx, e25AtIdx)

		// The parent's key cannot use USING INDEX: it comes from the dump
		// and waits for every leaf and every index of the partition tree
		// built so far (the leaves' keys were listed before it).
		parent := con("shop.events", "events_pkey")
		if parent.SQL != "" || !slices.Equal(parent.DumpIDs, []int{310}) {
			t.Errorf("partitioned key unit: SQL %q dump IDs %v, want the dump entry 310", parent.SQL, parent.DumpIDs)
		}
		parentAtIdx := idx("shop.events", "events_at_idx")
		p.wantDeps(parent, ev24, ev25, parentAtIdx, e24Idx, e24AtIdx, e24Con, e25Idx, e25AtIdx, e25Con)

		// An attachment waits for the unit after which the child index
		// exists and the one after which the parent index exists.
		p.wantDeps(con("shop.events", "attach events_2024_at_idx"), e24AtIdx, parentAtIdx)
		p.wantDeps(con("shop.events", "attach events_2025_at_idx"), e25AtIdx, parentAtIdx)
		p.wantDeps(con("shop.events", "attach events_2024_pkey"), e24Con, parent)
		p.wantDeps(con("shop.events", "attach events_2025_pkey"), e25Con, parent)
		for _, name := range []string{"events_2024_at_idx", "events_2024_pkey", "events_2025_at_idx", "events_2025_pkey"} {
			a := con("shop.events", "attach "+name)
			if len(a.DumpIDs) != 1 || a.SQL != "" {
				t.Errorf("attach %s: SQL %q dump IDs %v, want one dump entry", name, a.SQL, a.DumpIDs)
			}
		}
	})

	t.Run("foreign keys wait for both tables", func(t *testing.T) {
		cBuilt := []plan.Unit{customers, idx("shop.customers", "customers_pkey"), idx("shop.customers", "customers_email_key"),
			con("shop.customers", "customers_pkey"), con("shop.customers", "customers_email_key")}
		ordersFK := p.unit(plan.KindForeignKey, "shop.orders", "orders_customer_id_fkey")
		p.wantDeps(ordersFK, append(slices.Clone(cBuilt), orders, idx("shop.orders", "orders_pkey"),
			idx("shop.orders", "orders_customer_id_idx"), idx("shop.orders", "orders_placed_at_idx"),
			con("shop.orders", "orders_pkey"))...)
		if want := int64(64<<20 + 8<<20); ordersFK.Size != want {
			t.Errorf("orders FK size %d, want both tables' bytes %d", ordersFK.Size, want)
		}

		// From a partitioned table: every leaf, every index, key and
		// attachment of the tree.
		evFK := p.unit(plan.KindForeignKey, "shop.events", "events_customer_id_fkey")
		var evBuilt []plan.Unit
		for _, u := range p.Units {
			if (u.Kind == plan.KindIndex || u.Kind == plan.KindConstraint) && strings.HasPrefix(u.Table, "shop.events") {
				evBuilt = append(evBuilt, u)
			}
		}
		if len(evBuilt) != 12 {
			t.Fatalf("%d index/constraint units on the events tree, want 12", len(evBuilt))
		}
		p.wantDeps(evFK, append(append(slices.Clone(cBuilt), ev24, ev25), evBuilt...)...)
	})

	t.Run("analyze after the table's indexes and constraints", func(t *testing.T) {
		var tables []string
		for _, u := range p.ofKind(plan.KindVacuum) {
			tables = append(tables, u.Table)
			var want []plan.Unit
			for _, o := range p.Units {
				if o.Table == u.Table && (o.Kind == plan.KindCopy || o.Kind == plan.KindIndex || o.Kind == plan.KindConstraint) {
					want = append(want, o)
				}
			}
			p.wantDeps(u, want...)
			if wantSQL := `ANALYZE "shop".` + `"` + strings.TrimPrefix(u.Table, "shop.") + `";`; u.SQL != wantSQL {
				t.Errorf("vacuum unit %d SQL %q, want %q", u.ID, u.SQL, wantSQL)
			}
		}
		want := []string{"shop.bookings", "shop.customers", "shop.events_2024", "shop.events_2025", "shop.items", "shop.items_archive", "shop.orders"}
		if !slices.Equal(tables, want) {
			t.Errorf("analyzed tables %q, want %q", tables, want)
		}
	})

	t.Run("post-data after every DDL unit, refresh after post-data", func(t *testing.T) {
		posts := p.ofKind(plan.KindPostData)
		if len(posts) != 1 {
			t.Fatalf("%d post-data units, want 1", len(posts))
		}
		post := posts[0]
		if want := []int{306, 340, 341, 360}; !slices.Equal(post.DumpIDs, want) {
			t.Errorf("post-data dump IDs %v, want %v (comments, trigger, policy)", post.DumpIDs, want)
		}
		var want []plan.Unit
		for _, u := range p.Units {
			switch u.Kind {
			case plan.KindCopy, plan.KindIndex, plan.KindConstraint, plan.KindForeignKey:
				want = append(want, u)
			}
		}
		p.wantDeps(post, want...)

		refresh := p.ofKind(plan.KindRefresh)
		if len(refresh) != 1 {
			t.Fatalf("%d refresh units, want 1", len(refresh))
		}
		p.wantDeps(refresh[0], post)
		if want := "REFRESH MATERIALIZED VIEW \"shop\".\"order_totals\";\n"; refresh[0].SQL != want {
			t.Errorf("refresh SQL %q, want %q", refresh[0].SQL, want)
		}
	})

	t.Run("sequences and large objects", func(t *testing.T) {
		seq := p.ofKind(plan.KindSequences)
		if len(seq) != 1 {
			t.Fatalf("%d sequence units, want 1", len(seq))
		}
		want := "SELECT pg_catalog.setval('\"shop\".\"customers_id_seq\"', 100042, true);\n" +
			"SELECT pg_catalog.setval('\"shop\".\"orders_id_seq\"', 1, false);\n"
		if seq[0].SQL != want || len(seq[0].DependsOn) != 0 {
			t.Errorf("sequences unit: SQL %q deps %v, want %q and none", seq[0].SQL, seq[0].DependsOn, want)
		}
		var got []plan.LargeObjects
		for _, u := range p.ofKind(plan.KindLargeObjects) {
			got = append(got, *u.LargeObjects)
			if !u.NeedsSnapshot || u.Size != int64(u.LargeObjects.Count) {
				t.Errorf("large object unit %d: NeedsSnapshot=%t size=%d", u.ID, u.NeedsSnapshot, u.Size)
			}
		}
		wantLO := []plan.LargeObjects{
			{FirstOID: 40000, LastOID: 40000 + 3*999, Count: 1000, NoOwner: true},
			{FirstOID: 40000 + 3*1000, LastOID: 40000 + 3*1999, Count: 1000, NoOwner: true},
			{FirstOID: 40000 + 3*2000, LastOID: 40000 + 3*2499, Count: 500, NoOwner: true},
		}
		if !slices.Equal(got, wantLO) {
			t.Errorf("large object units %+v, want %+v", got, wantLO)
		}
	})
}

func TestQuotedIdentifiers(t *testing.T) {
	p := plan.Build(weirdInput())
	sqls := map[string]bool{}
	for _, u := range p.Units {
		if u.SQL != "" {
			sqls[u.SQL] = true
		}
	}
	for _, want := range []string{
		`CREATE UNIQUE INDEX "we""ird_pkey" ON "Sch ema"."we""ird" USING btree ("co""l");`,
		`ALTER TABLE ONLY "Sch ema"."we""ird" ADD CONSTRAINT "we""ird_pkey" PRIMARY KEY USING INDEX "we""ird_pkey";`,
		`ALTER TABLE ONLY "Sch ema"."Ünïcødé.tbl" ADD CONSTRAINT "Uniq ü" UNIQUE USING INDEX "Uniq ü" DEFERRABLE;`,
		`ANALYZE "Sch ema"."we""ird";`,
		`ANALYZE "Sch ema"."Ünïcødé.tbl";`,
		"REFRESH MATERIALIZED VIEW \"ütf\".\"MV\";\n",
		// The regclass literal: identifiers quoted, then the apostrophe doubled.
		"SELECT pg_catalog.setval('\"Sch ema\".\"it''s \"\"seq\"\"\"', 7, true);\n",
	} {
		if !sqls[want] {
			t.Errorf("no unit has SQL %s", want)
		}
	}
	for _, u := range p.Units {
		if u.Kind == plan.KindCopy && u.Table == `Sch ema.we"ird` {
			// Columns stay raw: the worker quotes them.
			if !slices.Equal(u.Copy.Columns, []string{`co"l`, "Größe", "a b"}) || u.Copy.Schema != "Sch ema" || u.Copy.Table != `we"ird` {
				t.Errorf("copy unit %+v", *u.Copy)
			}
		}
	}
	fk := plan.Unit{}
	for _, u := range p.Units {
		if u.Kind == plan.KindForeignKey {
			fk = u
		}
	}
	if fk.Description != "fk→weird" || fk.Table != "Sch ema.Ünïcødé.tbl" {
		t.Errorf("foreign key unit %q on %q", fk.Description, fk.Table)
	}
}

func TestCopyFormat(t *testing.T) {
	for _, tc := range []struct {
		option                 plan.CopyFormat
		binaryCopy, binarySafe bool
		want                   plan.CopyFormat
	}{
		{"", false, false, plan.FormatText},
		{"", false, true, plan.FormatText},
		{"", true, false, plan.FormatText},
		{"", true, true, plan.FormatBinary},
		{plan.FormatAuto, true, true, plan.FormatBinary},
		{plan.FormatAuto, false, true, plan.FormatText},
		// --copy-format binary skips the version check, not the types'.
		{plan.FormatBinary, false, true, plan.FormatBinary},
		{plan.FormatBinary, true, false, plan.FormatText},
		{plan.FormatText, true, true, plan.FormatText},
	} {
		in := plan.Input{
			Tables:  []plan.Table{{OID: 1, Schema: "s", Name: "t", RelKind: "r", Columns: []string{"a"}, BinarySafe: tc.binarySafe, Bytes: 10}},
			Options: plan.Options{BinaryCopy: tc.binaryCopy, CopyFormat: tc.option},
		}
		p := plan.Build(in)
		if len(p.Units) != 2 || p.Units[0].Kind != plan.KindCopy || p.Units[1].Kind != plan.KindVacuum {
			t.Fatalf("one table: units %+v, want a copy and a vacuum", p.Units)
		}
		if got := p.Units[0].Copy.Format; got != tc.want {
			t.Errorf("--copy-format %q BinaryCopy=%t BinarySafe=%t: format %s, want %s", tc.option, tc.binaryCopy, tc.binarySafe, got, tc.want)
		}
		if !slices.Equal(p.Units[1].DependsOn, []uint64{1}) {
			t.Errorf("vacuum deps %v, want [1]", p.Units[1].DependsOn)
		}
	}
}

func TestLargeObjectUnits(t *testing.T) {
	oids := func(n int) []uint32 {
		out := make([]uint32, n)
		for i := range out {
			out[i] = uint32(1000 + i)
		}
		return out
	}
	for _, tc := range []struct {
		n, per int
		counts []int
	}{
		{0, 1000, nil},
		{1, 1000, []int{1}},
		{1000, 1000, []int{1000}},
		{1001, 1000, []int{1000, 1}},
		{2500, 1000, []int{1000, 1000, 500}},
		{2500, 0, []int{1000, 1000, 500}},  // 0: the default, 1000
		{2500, -5, []int{1000, 1000, 500}}, // negative: the default too
		{5, 2, []int{2, 2, 1}},
		{3, 1, []int{1, 1, 1}},
	} {
		in := plan.Input{LargeObjects: oids(tc.n), Options: plan.Options{LargeObjectsPerUnit: tc.per, NoOwner: true, NoACL: true}}
		p := plan.Build(in)
		var counts []int
		next := 0
		for _, u := range p.Units {
			if u.Kind != plan.KindLargeObjects {
				t.Fatalf("n=%d per=%d: unit of kind %s", tc.n, tc.per, u.Kind)
			}
			lo := u.LargeObjects
			counts = append(counts, lo.Count)
			if lo.FirstOID != in.LargeObjects[next] || lo.LastOID != in.LargeObjects[next+lo.Count-1] {
				t.Errorf("n=%d per=%d: unit %d covers %d-%d, want %d-%d", tc.n, tc.per, u.ID, lo.FirstOID, lo.LastOID,
					in.LargeObjects[next], in.LargeObjects[next+lo.Count-1])
			}
			if !lo.NoOwner || !lo.NoACL {
				t.Errorf("n=%d per=%d: unit %d lost NoOwner/NoACL", tc.n, tc.per, u.ID)
			}
			if want := fmt.Sprintf("large objects %d-%d", lo.FirstOID, lo.LastOID); u.Description != want {
				t.Errorf("description %q, want %q", u.Description, want)
			}
			next += lo.Count
		}
		if !slices.Equal(counts, tc.counts) {
			t.Errorf("n=%d per=%d: unit sizes %v, want %v", tc.n, tc.per, counts, tc.counts)
		}
	}
}

// TestAttachFallback covers an INDEX ATTACH whose child index no unit
// creates (the catalog did not see it): it then waits for everything built
// on the partition tree.
func TestAttachFallback(t *testing.T) {
	in := plan.Input{
		Tables: []plan.Table{
			{OID: 1, Schema: "s", Name: "p", RelKind: "p"},
			{OID: 2, Schema: "s", Name: "p1", RelKind: "r", ParentOID: 1, Bytes: 1},
		},
		PostData: []plan.Entry{
			{DumpID: 1, Desc: "INDEX", Tag: "p_x_idx", TableOID: 1, IndexOID: 100},
			{DumpID: 2, Desc: "INDEX", Tag: "p1_x_idx", TableOID: 2, IndexOID: 101},
			{DumpID: 3, Desc: "INDEX ATTACH", Tag: "p1_x_idx", TableOID: 1, IndexOID: 999, ParentIndexOID: 100},
		},
	}
	p := plan.Build(in)
	// 1 copy p1; 2 index p; 3 index p1; 4 attach; 5 analyze p1.
	if len(p.Units) != 5 {
		t.Fatalf("%d units, want 5:\n%s", len(p.Units), render(p))
	}
	attach := p.Units[3]
	if attach.Description != "attach p1_x_idx" || !slices.Equal(attach.DependsOn, []uint64{2, 3}) {
		t.Errorf("attach unit %q deps %v, want \"attach p1_x_idx\" [2 3]", attach.Description, attach.DependsOn)
	}
	if findCycle(p.Units) != nil {
		t.Error("cycle")
	}
}

// TestMultiLevelPartitions checks that a sub-partitioned table's indexes
// wait for the leaves two levels down.
func TestMultiLevelPartitions(t *testing.T) {
	in := plan.Input{
		Tables: []plan.Table{
			{OID: 1, Schema: "s", Name: "root", RelKind: "p"},
			{OID: 2, Schema: "s", Name: "mid", RelKind: "p", ParentOID: 1},
			{OID: 3, Schema: "s", Name: "leaf_a", RelKind: "r", ParentOID: 2},
			{OID: 4, Schema: "s", Name: "leaf_b", RelKind: "r", ParentOID: 1},
		},
		PostData: []plan.Entry{
			{DumpID: 1, Desc: "INDEX", Tag: "root_idx", TableOID: 1, IndexOID: 10},
			{DumpID: 2, Desc: "INDEX", Tag: "mid_idx", TableOID: 2, IndexOID: 11},
		},
	}
	p := plan.Build(in)
	if len(p.Units) < 4 {
		t.Fatalf("units:\n%s", render(p))
	}
	// 1 copy leaf_a, 2 copy leaf_b, 3 root_idx, 4 mid_idx.
	if !slices.Equal(p.Units[2].DependsOn, []uint64{1, 2}) {
		t.Errorf("root index deps %v, want [1 2]", p.Units[2].DependsOn)
	}
	if !slices.Equal(p.Units[3].DependsOn, []uint64{1}) {
		t.Errorf("mid index deps %v, want [1]", p.Units[3].DependsOn)
	}
}

// TestIndexBuildCost checks that a table's costliest index build is ranked
// first: the broker leases the largest ready unit, so an expression or GIN
// index starts beside the cheap ones instead of after them.
func TestIndexBuildCost(t *testing.T) {
	in := plan.Input{
		Tables: []plan.Table{{OID: 1, Schema: "s", Name: "t", RelKind: "r", Bytes: 1 << 30}},
		PostData: []plan.Entry{
			{DumpID: 1, Desc: "INDEX", Tag: "t_at_idx", TableOID: 1, IndexOID: 10, IndexShape: plan.IndexShape{Method: "btree", Keys: 1}},
			{DumpID: 2, Desc: "INDEX", Tag: "t_kind_idx", TableOID: 1, IndexOID: 11, IndexShape: plan.IndexShape{Method: "btree", Keys: 2, Expressions: true}},
			{DumpID: 3, Desc: "INDEX", Tag: "t_doc_idx", TableOID: 1, IndexOID: 12, IndexShape: plan.IndexShape{Method: "gin", Keys: 1}},
			{DumpID: 4, Desc: "INDEX", Tag: "t_pair_idx", TableOID: 1, IndexOID: 13, IndexShape: plan.IndexShape{Method: "btree", Keys: 2}},
			{DumpID: 5, Desc: "INDEX", Tag: "t_range_idx", TableOID: 1, IndexOID: 14, IndexShape: plan.IndexShape{Method: "brin", Keys: 1}},
			{DumpID: 6, Desc: "INDEX", Tag: "t_old_plan_idx", TableOID: 1, IndexOID: 15},
		},
	}
	size := map[string]int64{}
	for _, u := range plan.Build(in).Units {
		if u.Kind == plan.KindIndex {
			size[u.Description] = u.Size
		}
	}
	order := []string{"t_doc_idx", "t_kind_idx", "t_pair_idx", "t_at_idx", "t_range_idx"}
	for i := 1; i < len(order); i++ {
		if size[order[i-1]] <= size[order[i]] {
			t.Errorf("%s ranks %d, not above %s's %d", order[i-1], size[order[i-1]], order[i], size[order[i]])
		}
	}
	// A plan stored before shapes were recorded ranks by table size, as before.
	if size["t_old_plan_idx"] != 1<<30 || size["t_at_idx"] != 1<<30 {
		t.Errorf("unknown shape ranks %d and a one-column btree %d, want the table's %d bytes", size["t_old_plan_idx"], size["t_at_idx"], 1<<30)
	}
}
