package coordinator

import (
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestMatviews: a materialized view is refreshed unless it is not
// populated on the source, its data is left out, or it reads (directly or
// through a view) one that stays empty.
func TestMatviews(t *testing.T) {
	mv := func(oid uint32, name string, populated, noData bool) plan.Table {
		return plan.Table{OID: oid, Schema: "app", Name: name, RelKind: "m", Populated: populated, NoData: noData}
	}
	tables := []plan.Table{
		{OID: 1, Schema: "app", Name: "items", RelKind: "r"},
		mv(10, "counts", true, false),
		mv(11, "excluded", true, true),
		mv(12, "reads_excluded", true, false),
		mv(13, "never_refreshed", false, false),
		mv(14, "through_view", true, false),
		mv(15, "reads_counts", true, false),
	}
	pre := []schema.Entry{
		{DumpID: 1, Desc: "TABLE", ObjOID: 1},
		{DumpID: 2, Desc: "MATERIALIZED VIEW", ObjOID: 10, Deps: []int{1}},
		{DumpID: 3, Desc: "MATERIALIZED VIEW", ObjOID: 11, Deps: []int{1}},
		{DumpID: 4, Desc: "MATERIALIZED VIEW", ObjOID: 12, Deps: []int{3}},
		{DumpID: 5, Desc: "MATERIALIZED VIEW", ObjOID: 13, Deps: []int{1}},
		{DumpID: 6, Desc: "VIEW", ObjOID: 20, Deps: []int{5}},
		{DumpID: 7, Desc: "MATERIALIZED VIEW", ObjOID: 14, Deps: []int{6}},
		{DumpID: 8, Desc: "MATERIALIZED VIEW", ObjOID: 15, Deps: []int{2, 1}},
	}
	refresh, skipped := matviews(pre, tables)
	var names []string
	for _, m := range refresh {
		names = append(names, m.Name)
	}
	if want := []string{"counts", "reads_counts"}; !slices.Equal(names, want) {
		t.Errorf("refreshed %q, want %q", names, want)
	}
	want := []string{
		"materialized view app.reads_excluded: not refreshed, it reads materialized view app.excluded, which stays empty",
		"materialized view app.through_view: not refreshed, it reads materialized view app.never_refreshed, which stays empty",
	}
	if !slices.Equal(skipped, want) {
		t.Errorf("skipped:\n  %s\nwant:\n  %s", strings.Join(skipped, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestAddSettingsUnit: the settings unit comes after every other unit.
func TestAddSettingsUnit(t *testing.T) {
	p := plan.Plan{Units: []plan.Unit{{ID: 1, Kind: plan.KindCopy}, {ID: 2, Kind: plan.KindIndex, DependsOn: []uint64{1}}}}
	addSettingsUnit(&p, nil)
	if len(p.Units) != 2 {
		t.Fatalf("no settings, but a unit was added: %+v", p.Units)
	}
	addSettingsUnit(&p, []string{`ALTER DATABASE "d" SET "work_mem" TO '1MB';`})
	u := p.Units[2]
	if u.ID != 3 || u.Kind != plan.KindPostData || !u.Transactional || !slices.Equal(u.DependsOn, []uint64{1, 2}) ||
		u.SQL != "ALTER DATABASE \"d\" SET \"work_mem\" TO '1MB';\n" || u.Description != "database settings (1)" {
		t.Errorf("settings unit %+v", u)
	}
}
