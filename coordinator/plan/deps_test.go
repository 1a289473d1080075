package plan

import (
	"slices"
	"testing"
)

func unitByDesc(t *testing.T, p Plan, kind Kind, desc string) Unit {
	t.Helper()
	for _, u := range p.Units {
		if u.Kind == kind && u.Description == desc {
			return u
		}
	}
	t.Fatalf("no %s unit %q in plan", kind, desc)
	return Unit{}
}

// A domain's NOT VALID check is restored as a post-data CHECK CONSTRAINT
// with no table. COPY checks incoming rows against it, so it must wait for
// every copy, or rows that already break it on the source fail the copy.
func TestDomainConstraintWaitsForEveryCopy(t *testing.T) {
	p := Build(Input{
		Tables: []Table{
			{OID: 10, Schema: "s", Name: "a", RelKind: "r", Columns: []string{"x"}},
			{OID: 11, Schema: "s", Name: "b", RelKind: "r", Columns: []string{"y"}},
		},
		PostData: []Entry{{DumpID: 7, Desc: "CHECK CONSTRAINT", Schema: "s", Tag: "posint posint_check", ConType: "c", ConName: "posint_check"}},
	})
	copyA, copyB := unitByDesc(t, p, KindCopy, "whole table"), p.Units[1]
	con := unitByDesc(t, p, KindConstraint, "posint_check")
	if !slices.Contains(con.DependsOn, copyA.ID) || !slices.Contains(con.DependsOn, copyB.ID) {
		t.Fatalf("domain constraint deps = %v, want both copy units %d and %d", con.DependsOn, copyA.ID, copyB.ID)
	}
}

// pg_dump adds a CHECK to an inheritance parent without ONLY, so it reaches
// the children: it must wait for the children's rows and indexes too.
func TestInheritedCheckWaitsForChildren(t *testing.T) {
	p := Build(Input{
		Tables: []Table{
			{OID: 20, Schema: "s", Name: "parent", RelKind: "r", Columns: []string{"x"}, Bytes: 1},
			{OID: 21, Schema: "s", Name: "child", RelKind: "r", Columns: []string{"x"}, InheritsFrom: []uint32{20}, Bytes: 5},
		},
		PostData: []Entry{
			{DumpID: 1, Desc: "INDEX", Schema: "s", Tag: "child_x", ObjOID: 30, TableOID: 21, IndexOID: 30},
			{DumpID: 2, Desc: "CHECK CONSTRAINT", Schema: "s", Tag: "parent x_pos", TableOID: 20, ConType: "c", ConName: "x_pos"},
		},
	})
	var childCopy Unit
	for _, u := range p.Units {
		if u.Kind == KindCopy && u.TableOID == 21 {
			childCopy = u
		}
	}
	idx := unitByDesc(t, p, KindIndex, "child_x")
	con := unitByDesc(t, p, KindConstraint, "x_pos")
	if !slices.Contains(con.DependsOn, childCopy.ID) || !slices.Contains(con.DependsOn, idx.ID) {
		t.Fatalf("check on parent deps = %v, want the child's copy %d and index %d", con.DependsOn, childCopy.ID, idx.ID)
	}
	if con.Size != 6 {
		t.Errorf("constraint size = %d, want the parent and child bytes (6)", con.Size)
	}
}
