package filter

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Entry is one entry of the schema dump's table of contents, with the
// entries it depends on (pg_restore --list --verbose).
type Entry struct {
	DumpID int
	// Desc is the entry type: TABLE, VIEW, INDEX, FK CONSTRAINT, ...
	Desc string
	// Schema and Tag are pg_restore's best-effort split of Names.
	Schema, Tag string
	// Names is "schema tag owner" as printed; "-" stands for no schema.
	Names  string
	ObjOID uint32
	Deps   []int
}

// Relation is a table, partitioned table, materialized view or foreign
// table of the source.
type Relation struct {
	OID          uint32
	Schema, Name string
	// Kind is pg_class.relkind.
	Kind         string
	ParentOID    uint32
	InheritsFrom []uint32
}

// Index is an index of the source, and the constraint it backs, if any.
type Index struct {
	OID           uint32
	Schema, Name  string
	ConstraintOID uint32
}

// Catalog are the source's facts the selection needs, read under the
// clone's snapshot.
type Catalog struct {
	Relations []Relation
	Indexes   []Index
	// IdentitySequences are the OIDs of sequences behind identity columns;
	// other sequences owned by a table are serial-style (OWNED BY).
	IdentitySequences []uint32
	ForeignKeys       []ForeignKey
}

// ForeignKey is a foreign key constraint: the table it is on and the
// table it references.
type ForeignKey struct {
	OID         uint32
	TableOID    uint32
	RefTableOID uint32
}

// Selection is what a filter leaves out of one source.
type Selection struct {
	// Excluded are the dump entries that are not restored, by dump id.
	Excluded map[int]bool
	// Tables are the relations that are not created, by OID.
	Tables map[uint32]bool
	// NoData are relations created without their rows.
	NoData map[uint32]bool
	// Skipped says what is left out and why, in dump order, then the
	// tables whose rows are not copied.
	Skipped []string
	// Warnings are filter entries that match nothing on the source.
	Warnings []string
}

// TableExcluded says whether the filter alone (without the schema dump's
// dependencies) excludes a relation: by its schema, its name, or because
// it is not in include-only-table. It is what the publication of a
// --follow clone is cut with, before there is a dump.
func (f *Filter) TableExcluded(rels []Relation, oid uint32) bool {
	byOID := relationsByOID(rels)
	r, ok := byOID[oid]
	if !ok {
		return false
	}
	return f.relationRule(byOID, r) != ""
}

// TableDataExcluded says whether the rows of a relation, or of a parent of
// it, are left out.
func (f *Filter) TableDataExcluded(rels []Relation, oid uint32) bool {
	return f.dataRule(relationsByOID(rels), oid)
}

func relationsByOID(rels []Relation) map[uint32]Relation {
	m := make(map[uint32]Relation, len(rels))
	for _, r := range rels {
		m[r.OID] = r
	}
	return m
}

// ancestors are a relation's parents, their parents, ..., each once.
func ancestors(byOID map[uint32]Relation, r Relation) []Relation {
	var out []Relation
	seen := map[uint32]bool{r.OID: true}
	queue := []Relation{r}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		parents := append([]uint32{}, cur.InheritsFrom...)
		if cur.ParentOID != 0 {
			parents = append(parents, cur.ParentOID)
		}
		for _, p := range parents {
			if pr, ok := byOID[p]; ok && !seen[p] {
				seen[p] = true
				out = append(out, pr)
				queue = append(queue, pr)
			}
		}
	}
	return out
}

// relationRule is why the filter excludes r itself, or "".
func (f *Filter) relationRule(byOID map[uint32]Relation, r Relation) string {
	if f == nil {
		return ""
	}
	n := Name{r.Schema, r.Name}
	if rule := f.schemaRule(r.Schema); rule != "" {
		return "schema " + quoteIdent(r.Schema) + " excluded by " + rule
	}
	if rule := f.tableRule(n); rule != "" {
		return "excluded by " + rule
	}
	for _, a := range ancestors(byOID, r) {
		if rule := f.tableRule(Name{a.Schema, a.Name}); rule != "" {
			return "its parent " + Name{a.Schema, a.Name}.String() + " is excluded by " + rule
		}
	}
	if !f.included(n) {
		for _, a := range ancestors(byOID, r) {
			if f.included(Name{a.Schema, a.Name}) {
				return ""
			}
		}
		return "not in [" + SectionIncludeOnlyTable + "]"
	}
	return ""
}

func (f *Filter) dataRule(byOID map[uint32]Relation, oid uint32) bool {
	r, ok := byOID[oid]
	if !ok || f == nil {
		return false
	}
	if f.DataExcluded(Name{r.Schema, r.Name}) {
		return true
	}
	for _, a := range ancestors(byOID, r) {
		if f.DataExcluded(Name{a.Schema, a.Name}) {
			return true
		}
	}
	return false
}

// Select decides what f leaves out of a source whose dump has entries and
// whose catalog has cat:
//
//  1. The entries a filter names: tables, materialized views and foreign
//     tables by their schema or name (a child of an included parent is
//     included); every entry in an excluded schema; indexes by name, and the
//     constraint an excluded index backs; extensions by name.
//  2. Every entry that depends on an excluded one, as pg_dump recorded it:
//     views, foreign keys, triggers, indexes, partitions, defaults, comments
//     and grants. Two exceptions: excluding an extension leaves out only its
//     own entries (objects that use it stay, so the target must have it), and
//     a sequence owned (OWNED BY) by an excluded table is kept, without its
//     OWNED BY, when a kept object still uses it.
//  3. Relations whose rows are not copied: exclude-table-data, and the
//     partitions and children of such a table; and the foreign keys from a
//     table with rows to one without, which could not be validated.
func Select(f *Filter, entries []Entry, cat Catalog) Selection {
	sel := Selection{Excluded: map[int]bool{}, Tables: map[uint32]bool{}, NoData: map[uint32]bool{}}
	if f.Empty() {
		return sel
	}
	byOID := relationsByOID(cat.Relations)
	indexByOID := map[uint32]Index{}
	indexByConstraint := map[uint32]Index{}
	for _, ix := range cat.Indexes {
		indexByOID[ix.OID] = ix
		if ix.ConstraintOID != 0 {
			indexByConstraint[ix.ConstraintOID] = ix
		}
	}
	byID := make(map[int]*Entry, len(entries))
	for i := range entries {
		byID[entries[i].DumpID] = &entries[i]
	}
	schemas := knownSchemas(entries, cat)
	label := func(e *Entry) string { return entryLabel(e, byOID, schemas) }
	reason := map[int]string{}
	// extensionRoot marks excluded extensions: their exclusion reaches only
	// the comments on them.
	extensionRoot := map[int]bool{}

	// 1. What the filter names.
	for _, e := range entries {
		if r := f.seedRule(e, byOID, indexByOID, indexByConstraint, schemas); r != "" {
			reason[e.DumpID] = r
			if e.Desc == "EXTENSION" {
				extensionRoot[e.DumpID] = true
			}
		}
	}

	// 2. What depends on it, to a fixed point; then sequences whose owner
	// went and that nothing kept uses.
	identity := map[uint32]bool{}
	for _, oid := range cat.IdentitySequences {
		identity[oid] = true
	}
	soft := func(e *Entry, dep *Entry) bool {
		return e.Desc == "SEQUENCE" && !identity[e.ObjOID] && isRelationEntry(dep.Desc)
	}
	// dependents[id] are the entries that depend on entry id.
	dependents := map[int][]*Entry{}
	for i := range entries {
		for _, d := range entries[i].Deps {
			dependents[d] = append(dependents[d], &entries[i])
		}
	}
	var queue []int
	for _, e := range entries {
		if _, out := reason[e.DumpID]; out {
			queue = append(queue, e.DumpID)
		}
	}
	exclude := func(e *Entry, why string) {
		reason[e.DumpID] = why
		queue = append(queue, e.DumpID)
	}
	propagate := func() {
		for len(queue) > 0 {
			d := queue[0]
			queue = queue[1:]
			dep := byID[d]
			for _, e := range dependents[d] {
				if _, out := reason[e.DumpID]; out || dep == nil || soft(e, dep) {
					continue
				}
				if extensionRoot[d] && !(e.Desc == "COMMENT" || e.Desc == "ACL") {
					continue
				}
				exclude(e, "depends on "+label(dep)+", which is left out")
			}
		}
	}
	propagate()
	for {
		orphans := 0
		for i := range entries {
			e := &entries[i]
			if _, out := reason[e.DumpID]; out || e.Desc != "SEQUENCE" {
				continue
			}
			owner := ownerOut(e, byID, reason)
			if owner == nil || !soft(e, owner) {
				continue
			}
			if usedByKept(dependents[e.DumpID], reason) {
				// Kept for the objects that use it, without OWNED BY.
				for _, o := range dependents[e.DumpID] {
					if _, out := reason[o.DumpID]; !out && o.Desc == "SEQUENCE OWNED BY" {
						reason[o.DumpID] = "its owner " + label(owner) + " is left out; the sequence stays for the objects that use it"
					}
				}
				continue
			}
			orphans++
			exclude(e, "owned by "+label(owner)+", which is left out")
		}
		if orphans == 0 {
			break
		}
		propagate()
	}

	for _, e := range entries {
		r, out := reason[e.DumpID]
		if !out {
			continue
		}
		sel.Excluded[e.DumpID] = true
		if isRelationEntry(e.Desc) {
			if _, ok := byOID[e.ObjOID]; ok {
				sel.Tables[e.ObjOID] = true
			}
		}
		sel.Skipped = append(sel.Skipped, label(&e)+": "+r)
	}
	// Relations the catalog has but the dump does not list (none should)
	// follow the filter alone.
	listed := map[uint32]bool{}
	for _, e := range entries {
		if isRelationEntry(e.Desc) {
			listed[e.ObjOID] = true
		}
	}
	for _, r := range cat.Relations {
		if !sel.Tables[r.OID] && !listed[r.OID] {
			if rule := f.relationRule(byOID, r); rule != "" {
				sel.Tables[r.OID] = true
				sel.Skipped = append(sel.Skipped, relationLabel(r)+": "+rule)
			}
		}
	}

	// 3. Rows not copied; a foreign key from a table that has rows to one
	// that has none could not be validated, so it is left out too.
	for _, r := range cat.Relations {
		if sel.Tables[r.OID] || !f.dataRule(byOID, r.OID) {
			continue
		}
		sel.NoData[r.OID] = true
		if r.Kind == "r" || r.Kind == "m" {
			sel.Skipped = append(sel.Skipped, relationLabel(r)+": rows not copied, [exclude-table-data]")
		}
	}
	fks := map[uint32]ForeignKey{}
	for _, fk := range cat.ForeignKeys {
		fks[fk.OID] = fk
	}
	for i := range entries {
		e := &entries[i]
		fk, ok := fks[e.ObjOID]
		if e.Desc != "FK CONSTRAINT" || !ok || sel.Excluded[e.DumpID] {
			continue
		}
		if sel.NoData[fk.RefTableOID] && !sel.NoData[fk.TableOID] {
			sel.Excluded[e.DumpID] = true
			sel.Skipped = append(sel.Skipped, label(e)+": references "+relationLabel(byOID[fk.RefTableOID])+
				", whose rows are not copied ([exclude-table-data]), from "+relationLabel(byOID[fk.TableOID])+", whose rows are")
		}
	}
	sel.Warnings = f.unmatched(entries, cat, schemas)
	return sel
}

// seedRule is why the filter names entry e itself, or "".
func (f *Filter) seedRule(e Entry, byOID map[uint32]Relation, indexes, byConstraint map[uint32]Index, schemas []string) string {
	switch e.Desc {
	case "SCHEMA":
		if rule := f.schemaRule(e.Tag); rule != "" {
			return "excluded by " + rule
		}
		return ""
	case "EXTENSION":
		if f.ExtensionExcluded(e.Tag) {
			return "excluded by [" + SectionExcludeExtension + "]"
		}
		return ""
	}
	if s, ok := entrySchema(e, schemas); ok {
		if rule := f.schemaRule(s); rule != "" {
			return "schema " + quoteIdent(s) + " excluded by " + rule
		}
	}
	if isRelationEntry(e.Desc) {
		if r, ok := byOID[e.ObjOID]; ok {
			return f.relationRule(byOID, r)
		}
	}
	switch e.Desc {
	case "INDEX":
		if ix, ok := indexes[e.ObjOID]; ok && f.IndexExcluded(Name{ix.Schema, ix.Name}) {
			return "excluded by [" + SectionExcludeIndex + "]"
		}
	case "CONSTRAINT":
		if ix, ok := byConstraint[e.ObjOID]; ok && f.IndexExcluded(Name{ix.Schema, ix.Name}) {
			return "its index " + Name{ix.Schema, ix.Name}.String() + " is excluded by [" + SectionExcludeIndex + "]"
		}
	}
	return ""
}

func isRelationEntry(desc string) bool {
	return desc == "TABLE" || desc == "MATERIALIZED VIEW" || desc == "FOREIGN TABLE"
}

// ownerOut is the excluded relation entry a sequence depends on, or nil.
func ownerOut(e *Entry, byID map[int]*Entry, reason map[int]string) *Entry {
	for _, d := range e.Deps {
		if dep, ok := byID[d]; ok && isRelationEntry(dep.Desc) {
			if _, out := reason[d]; out {
				return dep
			}
		}
	}
	return nil
}

// usedByKept says whether an entry that is kept is among a sequence's
// dependents, other than its own OWNED BY, comments and grants.
func usedByKept(dependents []*Entry, reason map[int]string) bool {
	for _, o := range dependents {
		if _, out := reason[o.DumpID]; out {
			continue
		}
		switch o.Desc {
		case "SEQUENCE OWNED BY", "COMMENT", "ACL", "SECURITY LABEL":
			continue
		}
		return true
	}
	return false
}

// knownSchemas are the schema names of the source, longest first, to split
// an entry's Names when a schema name has spaces.
func knownSchemas(entries []Entry, cat Catalog) []string {
	set := map[string]bool{"public": true}
	for _, e := range entries {
		if e.Desc == "SCHEMA" {
			set[e.Tag] = true
		}
	}
	for _, r := range cat.Relations {
		set[r.Schema] = true
	}
	for _, ix := range cat.Indexes {
		set[ix.Schema] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// entrySchema is the schema an entry belongs to, if any.
func entrySchema(e Entry, schemas []string) (string, bool) {
	if e.Names == "" {
		return e.Schema, e.Schema != ""
	}
	if strings.HasPrefix(e.Names, "- ") {
		return "", false
	}
	for _, s := range schemas {
		if strings.HasPrefix(e.Names, s+" ") {
			return s, true
		}
	}
	return e.Schema, e.Schema != ""
}

// entryLabel names an entry for a person: catalog names for relations,
// the dump's words for the rest (its type, schema and tag, without the
// owner).
func entryLabel(e *Entry, byOID map[uint32]Relation, schemas []string) string {
	if isRelationEntry(e.Desc) {
		if r, ok := byOID[e.ObjOID]; ok {
			return relationLabel(r)
		}
	}
	name := e.Tag
	if s, ok := entrySchema(*e, schemas); ok && strings.HasPrefix(e.Names, s+" ") {
		name = strings.TrimPrefix(e.Names, s+" ")
		if i := strings.LastIndex(name, " "); i >= 0 {
			name = name[:i]
		}
		name = quoteIdent(s) + " " + name
	} else if e.Schema != "" {
		name = e.Schema + " " + e.Tag
	}
	return strings.ToLower(e.Desc) + " " + name
}

func relationLabel(r Relation) string {
	kind := "table"
	switch r.Kind {
	case "p":
		kind = "partitioned table"
	case "m":
		kind = "materialized view"
	case "f":
		kind = "foreign table"
	}
	if r.ParentOID != 0 {
		kind = "partition"
	}
	return kind + " " + Name{r.Schema, r.Name}.String()
}

// unmatched lists the filter's entries that name nothing on the source:
// names are matched exactly, so a typo or a case difference would
// otherwise go unnoticed.
func (f *Filter) unmatched(entries []Entry, cat Catalog, schemas []string) []string {
	var out []string
	rels := map[Name]bool{}
	for _, r := range cat.Relations {
		rels[Name{r.Schema, r.Name}] = true
	}
	idx := map[Name]bool{}
	for _, ix := range cat.Indexes {
		idx[Name{ix.Schema, ix.Name}] = true
	}
	exts := map[string]bool{}
	for _, e := range entries {
		if e.Desc == "EXTENSION" {
			exts[e.Tag] = true
		}
	}
	for _, l := range []struct {
		section string
		names   []Name
		have    map[Name]bool
		what    string
	}{
		{SectionIncludeOnlyTable, f.IncludeOnlyTables, rels, "table"},
		{SectionExcludeTable, f.ExcludeTables, rels, "table"},
		{SectionExcludeTableData, f.ExcludeTableData, rels, "table"},
		{SectionExcludeIndex, f.ExcludeIndexes, idx, "index"},
	} {
		for _, n := range l.names {
			if !l.have[n] {
				out = append(out, fmt.Sprintf("filters: [%s] %s matches no %s of the source (names match exactly, without case folding)", l.section, n, l.what))
			}
		}
	}
	for _, l := range []struct {
		section string
		names   []string
		have    func(string) bool
		what    string
	}{
		{SectionIncludeOnlySchema, f.IncludeOnlySchemas, func(s string) bool { return slices.Contains(schemas, s) }, "schema"},
		{SectionExcludeSchema, f.ExcludeSchemas, func(s string) bool { return slices.Contains(schemas, s) }, "schema"},
		{SectionExcludeExtension, f.ExcludeExtensions, func(s string) bool { return exts[s] }, "extension"},
	} {
		for _, n := range l.names {
			if !l.have(n) {
				out = append(out, fmt.Sprintf("filters: [%s] %s matches no %s of the source (names match exactly, without case folding)", l.section, quoteIdent(n), l.what))
			}
		}
	}
	return out
}
