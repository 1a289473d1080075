package catalog

import (
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

// pg_restore prints "schema tag owner" unquoted: an INDEX ATTACH in schema
// "Sch ema" for index "pa rt 1_id_idx" must still be found.
func TestLookupByNamesWithSpaces(t *testing.T) {
	byName := map[string]uint32{"Sch ema\x00pa rt 1_id_idx": 42}
	e := &plan.Entry{Desc: "INDEX ATTACH", Schema: "Sch", Tag: "ema pa rt 1_id_idx", Names: "Sch ema pa rt 1_id_idx postgres"}
	oid, ok := lookupByNames(byName, e)
	if !ok || oid != 42 || e.Schema != "Sch ema" || e.Tag != "pa rt 1_id_idx" {
		t.Fatalf("lookup = %d %v, entry %q/%q", oid, ok, e.Schema, e.Tag)
	}
	if _, ok := lookupByNames(byName, &plan.Entry{Names: "other idx postgres"}); ok {
		t.Fatal("found an index that does not exist")
	}
}
