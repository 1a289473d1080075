package filter

import (
	"slices"
	"strings"
)

// sections lists f's entries by section, each spelled as a filter file
// would spell it, sorted, in the order of Sections; empty sections are left
// out.
func (f *Filter) sections() [][2]string {
	if f == nil {
		return nil
	}
	names := func(list []Name) []string {
		out := make([]string, len(list))
		for i, n := range list {
			out[i] = n.String()
		}
		return out
	}
	idents := func(list []string) []string {
		out := make([]string, len(list))
		for i, s := range list {
			out[i] = quoteIdent(s)
		}
		return out
	}
	entries := map[string][]string{
		SectionIncludeOnlySchema: idents(f.IncludeOnlySchemas),
		SectionExcludeSchema:     idents(f.ExcludeSchemas),
		SectionIncludeOnlyTable:  names(f.IncludeOnlyTables),
		SectionExcludeTable:      names(f.ExcludeTables),
		SectionExcludeIndex:      names(f.ExcludeIndexes),
		SectionExcludeTableData:  names(f.ExcludeTableData),
		SectionExcludeExtension:  idents(f.ExcludeExtensions),
	}
	var out [][2]string
	for _, s := range Sections {
		list := entries[s]
		if len(list) == 0 {
			continue
		}
		slices.Sort(list)
		out = append(out, [2]string{s, strings.Join(list, ", ")})
	}
	return out
}

// Equal says whether f and other leave out the same objects: the same
// entries in each section, in any order. A nil filter equals an empty one.
func (f *Filter) Equal(other *Filter) bool {
	return slices.Equal(f.sections(), other.sections())
}

// String is the filter on one line, section by section, as in a filter
// file: "[exclude-table] public.a, public.b [exclude-schema] x"; "none"
// when it leaves nothing out.
func (f *Filter) String() string {
	var parts []string
	for _, s := range f.sections() {
		parts = append(parts, "["+s[0]+"] "+s[1])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
