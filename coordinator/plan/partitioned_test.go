package plan_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

// repartitionedInput is public.events, a plain table on the source that
// --after-schema made partitioned on the target, with a primary key, an
// index, a NOT VALID check, a foreign key to customers and one from notes.
func repartitionedInput(target string) plan.Input {
	return plan.Input{
		Tables: []plan.Table{
			{OID: 1, Schema: "public", Name: "customers", RelKind: "r", Columns: []string{"id"}, Bytes: 1 << 20},
			{OID: 2, Schema: "public", Name: "events", RelKind: "r", TargetRelKind: target, Columns: []string{"id", "created_at"}, Bytes: 8 << 20},
			{OID: 3, Schema: "public", Name: "notes", RelKind: "r", Columns: []string{"id", "event_id", "created_at"}, Bytes: 1 << 20},
		},
		PostData: []plan.Entry{
			{DumpID: 10, Desc: "CONSTRAINT", Tag: "customers customers_pkey", TableOID: 1, IndexOID: 100, ConType: "p", ConName: "customers_pkey",
				IndexDef: "CREATE UNIQUE INDEX customers_pkey ON public.customers USING btree (id)"},
			{DumpID: 11, Desc: "CONSTRAINT", Tag: "events events_pkey", TableOID: 2, IndexOID: 101, ConType: "p", ConName: "events_pkey",
				IndexDef: "CREATE UNIQUE INDEX events_pkey ON public.events USING btree (id, created_at)"},
			{DumpID: 12, Desc: "CHECK CONSTRAINT", Tag: "events events_id_check", TableOID: 2, ConType: "c", ConName: "events_id_check"},
			{DumpID: 13, Desc: "INDEX", Tag: "events_kind_idx", TableOID: 2, IndexOID: 102},
			{DumpID: 14, Desc: "FK CONSTRAINT", Tag: "events events_customer_fk", TableOID: 2, RefTableOID: 1, ConType: "f", ConName: "events_customer_fk"},
			{DumpID: 15, Desc: "FK CONSTRAINT", Tag: "notes notes_event_fk", TableOID: 3, RefTableOID: 2, ConType: "f", ConName: "notes_event_fk"},
		},
	}
}

// dumpSQL is what pg_restore prints for repartitionedInput's entries.
var dumpSQL = map[int]string{
	10: "ALTER TABLE ONLY public.customers\n    ADD CONSTRAINT customers_pkey PRIMARY KEY (id);\n",
	11: "ALTER TABLE ONLY public.events\n    ADD CONSTRAINT events_pkey PRIMARY KEY (id, created_at);\n",
	12: "ALTER TABLE ONLY public.events\n    ADD CONSTRAINT events_id_check CHECK (id > 0) NOT VALID;\n",
	13: "CREATE INDEX events_kind_idx ON public.events USING btree (kind);\n",
	14: "ALTER TABLE ONLY public.events\n    ADD CONSTRAINT events_customer_fk FOREIGN KEY (customer_id) REFERENCES public.customers(id);\n",
	15: "ALTER TABLE ONLY public.notes\n    ADD CONSTRAINT notes_event_fk FOREIGN KEY (event_id, created_at) REFERENCES public.events(id, created_at);\n",
}

// fill gives the units their dump SQL, as the coordinator's fillSQL does.
func fill(p *plan.Plan) {
	for i, u := range p.Units {
		for _, id := range u.DumpIDs {
			p.Units[i].SQL += dumpSQL[id]
		}
	}
}

// TestRepartitioned checks the plan of a table that is plain on the source
// and partitioned on the target: no TRUNCATE or FREEZE, no USING INDEX, no
// ALTER TABLE ONLY on it; its other tables, and the FK of another table
// that references it, planned as before.
func TestRepartitioned(t *testing.T) {
	p := plan.Build(repartitionedInput("p"))
	fill(&p)
	p.ReachPartitions()
	t.Logf("plan:\n%s", render(p))
	var sawPK, sawCheck, sawFK bool
	for _, u := range p.Units {
		switch {
		case u.Kind == plan.KindCopy && u.Table == "public.events":
			if u.Copy.TruncateFreeze {
				t.Errorf("unit %d (%s) truncates and freezes a partitioned target table", u.ID, u.Description)
			}
		case u.Kind == plan.KindCopy:
			if !u.Copy.TruncateFreeze {
				t.Errorf("unit %d copies plain table %s without TRUNCATE + FREEZE", u.ID, u.Table)
			}
		}
		if u.Table == "public.events" {
			if strings.Contains(u.SQL, "USING INDEX") {
				t.Errorf("unit %d (%s) attaches an index on a partitioned table: %s", u.ID, u.Description, u.SQL)
			}
			if strings.Contains(u.SQL, "ONLY") {
				t.Errorf("unit %d (%s) uses ONLY on a partitioned table: %s", u.ID, u.Description, u.SQL)
			}
		}
		switch u.Description {
		case "events_pkey":
			sawPK = u.Kind == plan.KindConstraint &&
				u.SQL == "ALTER TABLE public.events\n    ADD CONSTRAINT events_pkey PRIMARY KEY (id, created_at);\n"
		case "events_id_check":
			sawCheck = strings.HasPrefix(u.SQL, "ALTER TABLE public.events\n")
		case "events_customer_fk":
			sawFK = strings.HasPrefix(u.SQL, "ALTER TABLE public.events\n")
		case "customers_pkey":
			if u.Kind == plan.KindConstraint && !strings.Contains(u.SQL, "USING INDEX") {
				t.Errorf("customers' primary key is not attached: %s", u.SQL)
			}
		case "notes_event_fk":
			if u.SQL != dumpSQL[15] {
				t.Errorf("the FK of notes referencing events is %q, want the dump's %q", u.SQL, dumpSQL[15])
			}
		case "vacuum analyze":
			if u.Table != "public.events" {
				t.Errorf("unit %d vacuums %s, loaded with FREEZE", u.ID, u.Table)
			}
		case "analyze":
			if u.Table == "public.events" {
				t.Errorf("unit %d only analyzes events, loaded without FREEZE", u.ID)
			}
		}
	}
	if !sawPK || !sawCheck || !sawFK {
		t.Errorf("events' primary key %t, check %t, foreign key %t: want each as one unit of dump SQL without ONLY", sawPK, sawCheck, sawFK)
	}
	if findCycle(p.Units) != nil {
		t.Error("cycle")
	}
}

// TestRepartitionedUnchanged checks that a table whose target is like the
// source plans exactly as without TargetRelKind, and that ReachPartitions
// leaves such a plan alone.
func TestRepartitionedUnchanged(t *testing.T) {
	want := plan.Build(repartitionedInput(""))
	fill(&want)
	got := plan.Build(repartitionedInput("r"))
	fill(&got)
	got.ReachPartitions()
	if !reflect.DeepEqual(got.Units, want.Units) {
		t.Errorf("plan with target relkind r differs:\n%s\nwant:\n%s", render(got), render(want))
	}
}

// TestReachPartitionsSpellings checks quoted names, and that a table whose
// name starts with the repartitioned one's is not rewritten.
func TestReachPartitionsSpellings(t *testing.T) {
	p := plan.Plan{
		Tables: []plan.Table{
			{OID: 1, Schema: "App", Name: "ev ents", RelKind: "r", TargetRelKind: "p"},
			{OID: 2, Schema: "public", Name: "t", RelKind: "r", TargetRelKind: "p"},
		},
		Units: []plan.Unit{
			{ID: 1, SQL: "ALTER TABLE ONLY \"App\".\"ev ents\"\n    ADD CONSTRAINT c CHECK (true);\n"},
			{ID: 2, SQL: "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT c CHECK (true);\nALTER TABLE ONLY public.t2\n    ADD CONSTRAINT d CHECK (true);\n"},
		},
	}
	p.ReachPartitions()
	if want := "ALTER TABLE \"App\".\"ev ents\"\n    ADD CONSTRAINT c CHECK (true);\n"; p.Units[0].SQL != want {
		t.Errorf("quoted: %q, want %q", p.Units[0].SQL, want)
	}
	if want := "ALTER TABLE public.t\n    ADD CONSTRAINT c CHECK (true);\nALTER TABLE ONLY public.t2\n    ADD CONSTRAINT d CHECK (true);\n"; p.Units[1].SQL != want {
		t.Errorf("prefix: %q, want %q", p.Units[1].SQL, want)
	}
}
