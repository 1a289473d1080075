package filter

import "testing"

func TestEqualAndString(t *testing.T) {
	a := &Filter{ExcludeTables: []Name{{"public", "b"}, {"public", "A"}}, ExcludeSchemas: []string{"tmp"}}
	b := &Filter{ExcludeSchemas: []string{"tmp"}, ExcludeTables: []Name{{"public", "A"}, {"public", "b"}}}
	if !a.Equal(b) {
		t.Errorf("%s and %s differ only in order, want equal", a, b)
	}
	if want := `[exclude-schema] tmp [exclude-table] public."A", public.b`; a.String() != want {
		t.Errorf("String() = %s, want %s", a, want)
	}
	var none *Filter
	if !none.Equal(&Filter{}) || none.String() != "none" {
		t.Errorf("nil filter: Equal(empty) = %t, String() = %q", none.Equal(&Filter{}), none.String())
	}
	for _, other := range []*Filter{
		nil,
		{ExcludeSchemas: []string{"tmp"}, ExcludeTables: []Name{{"public", "b"}}},
		{ExcludeSchemas: []string{"tmp"}, ExcludeTableData: []Name{{"public", "A"}, {"public", "b"}}},
	} {
		if a.Equal(other) {
			t.Errorf("%s equals %s", a, other)
		}
	}
}
