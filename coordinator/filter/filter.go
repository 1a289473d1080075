// Package filter reads pgcopydb-style filter files (and the equivalent
// --table, --exclude-table, --exclude-schema and --exclude-table-data
// flags) and decides which objects of the source a clone leaves out, and
// why: the objects a filter names, and every object of the schema dump that
// depends on one of them (a view on an excluded table, a foreign key to it,
// the sequence it owns, its triggers and indexes).
//
// It is pure: it reads no file and no database. The coordinator gives it
// the file's bytes, the dump's table of contents with its dependencies, and
// catalog facts, and applies the Selection it returns.
package filter

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// Section names, as in pgcopydb's filter files.
const (
	SectionIncludeOnlySchema = "include-only-schema"
	SectionExcludeSchema     = "exclude-schema"
	SectionIncludeOnlyTable  = "include-only-table"
	SectionExcludeTable      = "exclude-table"
	SectionExcludeIndex      = "exclude-index"
	SectionExcludeTableData  = "exclude-table-data"
	SectionExcludeExtension  = "exclude-extension"
)

// Sections are the sections a filter file may have.
var Sections = []string{
	SectionIncludeOnlySchema, SectionExcludeSchema, SectionIncludeOnlyTable, SectionExcludeTable,
	SectionExcludeIndex, SectionExcludeTableData, SectionExcludeExtension,
}

// ErrConflict means a filter mixes inclusion and exclusion sections.
var ErrConflict = errors.New("filter: conflicting sections")

// Name is a schema-qualified object name, exactly as the catalog spells it.
type Name struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
}

// String quotes the name where needed, the way a filter file can spell it.
func (n Name) String() string { return quoteIdent(n.Schema) + "." + quoteIdent(n.Name) }

// quoteIdent quotes an identifier only when it needs quotes to be read back
// as written: anything but lower case letters, digits and underscores.
func quoteIdent(s string) string {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && (r >= '0' && r <= '9' || r == '$')) {
			return ident.Quote(s)
		}
	}
	if s == "" {
		return ident.Quote(s)
	}
	return s
}

// Filter is what a clone leaves out. The zero value leaves out nothing.
type Filter struct {
	// IncludeOnlySchemas, when not empty, excludes every other schema.
	IncludeOnlySchemas []string `json:"include_only_schemas,omitempty"`
	ExcludeSchemas     []string `json:"exclude_schemas,omitempty"`
	// IncludeOnlyTables, when not empty, excludes every other table (a
	// partitioned or inheritance parent brings its children along).
	IncludeOnlyTables []Name `json:"include_only_tables,omitempty"`
	ExcludeTables     []Name `json:"exclude_tables,omitempty"`
	ExcludeIndexes    []Name `json:"exclude_indexes,omitempty"`
	// ExcludeTableData tables are created, with their indexes and
	// constraints, but no rows are copied into them.
	ExcludeTableData []Name `json:"exclude_table_data,omitempty"`
	// ExcludeExtensions are not created on the target; objects that use
	// them are, so the target must have them already.
	ExcludeExtensions []string `json:"exclude_extensions,omitempty"`
}

// Empty says whether the filter leaves nothing out.
func (f *Filter) Empty() bool {
	return f == nil || (len(f.IncludeOnlySchemas) == 0 && len(f.ExcludeSchemas) == 0 && len(f.IncludeOnlyTables) == 0 &&
		len(f.ExcludeTables) == 0 && len(f.ExcludeIndexes) == 0 && len(f.ExcludeTableData) == 0 && len(f.ExcludeExtensions) == 0)
}

// Merge adds other's entries to f, each once.
func (f *Filter) Merge(other *Filter) {
	if other == nil {
		return
	}
	f.IncludeOnlySchemas = appendNew(f.IncludeOnlySchemas, other.IncludeOnlySchemas...)
	f.ExcludeSchemas = appendNew(f.ExcludeSchemas, other.ExcludeSchemas...)
	f.IncludeOnlyTables = appendNew(f.IncludeOnlyTables, other.IncludeOnlyTables...)
	f.ExcludeTables = appendNew(f.ExcludeTables, other.ExcludeTables...)
	f.ExcludeIndexes = appendNew(f.ExcludeIndexes, other.ExcludeIndexes...)
	f.ExcludeTableData = appendNew(f.ExcludeTableData, other.ExcludeTableData...)
	f.ExcludeExtensions = appendNew(f.ExcludeExtensions, other.ExcludeExtensions...)
}

func appendNew[T comparable](list []T, items ...T) []T {
	for _, it := range items {
		if !slices.Contains(list, it) {
			list = append(list, it)
		}
	}
	return list
}

// Validate rejects what pgcopydb rejects: an include-only section
// (include-only-table, include-only-schema) together with an exclusion of
// tables or schemas (exclude-table, exclude-schema), since a table in
// neither list would be ambiguous. exclude-index, exclude-table-data and
// exclude-extension combine with anything.
func (f *Filter) Validate() error {
	if f == nil {
		return nil
	}
	var incl, excl []string
	if n := len(f.IncludeOnlyTables); n > 0 {
		incl = append(incl, fmt.Sprintf("[%s] (%d entries, or --table)", SectionIncludeOnlyTable, n))
	}
	if n := len(f.IncludeOnlySchemas); n > 0 {
		incl = append(incl, fmt.Sprintf("[%s] (%d entries)", SectionIncludeOnlySchema, n))
	}
	if n := len(f.ExcludeTables); n > 0 {
		excl = append(excl, fmt.Sprintf("[%s] (%d entries, or --exclude-table)", SectionExcludeTable, n))
	}
	if n := len(f.ExcludeSchemas); n > 0 {
		excl = append(excl, fmt.Sprintf("[%s] (%d entries, or --exclude-schema)", SectionExcludeSchema, n))
	}
	if len(incl) > 0 && len(excl) > 0 {
		return fmt.Errorf("%w: %s cannot be combined with %s: a table in neither list would be ambiguous; "+
			"use only include-only sections or only exclude sections", ErrConflict, strings.Join(incl, " and "), strings.Join(excl, " and "))
	}
	return nil
}

// Why says which rule excludes a schema, or "" when none does.
func (f *Filter) schemaRule(schema string) string {
	if f == nil {
		return ""
	}
	if slices.Contains(f.ExcludeSchemas, schema) {
		return "[" + SectionExcludeSchema + "]"
	}
	if len(f.IncludeOnlySchemas) > 0 && !slices.Contains(f.IncludeOnlySchemas, schema) {
		return "not in [" + SectionIncludeOnlySchema + "]"
	}
	return ""
}

// tableRule says which rule excludes a table by its own name (not through
// its schema or parent), or "".
func (f *Filter) tableRule(n Name) string {
	if f == nil {
		return ""
	}
	if slices.Contains(f.ExcludeTables, n) {
		return "[" + SectionExcludeTable + "]"
	}
	return ""
}

func (f *Filter) included(n Name) bool {
	return f == nil || len(f.IncludeOnlyTables) == 0 || slices.Contains(f.IncludeOnlyTables, n)
}

// DataExcluded says whether the table's rows are left out.
func (f *Filter) DataExcluded(n Name) bool {
	return f != nil && slices.Contains(f.ExcludeTableData, n)
}

// IndexExcluded says whether the index is not built.
func (f *Filter) IndexExcluded(n Name) bool {
	return f != nil && slices.Contains(f.ExcludeIndexes, n)
}

// ExtensionExcluded says whether the extension is not created.
func (f *Filter) ExtensionExcluded(name string) bool {
	return f != nil && slices.Contains(f.ExcludeExtensions, name)
}
