package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// Build plans a clone. Unit IDs start at 1 and follow creation order, so the
// same input always gives the same plan.
func Build(in Input) Plan {
	b := newBuilder(in)
	b.copyUnits()
	b.postDataUnits()
	b.vacuumUnits()
	b.finalUnits()
	b.sequenceUnit()
	b.largeObjectUnits()
	return Plan{Tables: in.Tables, Units: b.units, Skipped: append(append([]string(nil), in.Skipped...), b.skipped...)}
}

type builder struct {
	in       Input
	opts     Options
	tables   map[uint32]Table
	children map[uint32][]uint32
	units    []Unit
	skipped  []string

	copies map[uint32][]uint64 // table -> its copy units
	split  map[uint32]bool     // tables copied in parts
	// built maps a table to the units that build indexes and constraints
	// on it, including partition-index attachments.
	built map[uint32][]uint64
	// creator maps an index OID to the unit after which the index (and the
	// constraint it backs) exists.
	creator map[uint32]uint64
	// ddl are every index, constraint and foreign key unit, which the rest of
	// post-data waits for.
	ddl  []uint64
	rest []int
}

func newBuilder(in Input) *builder {
	b := &builder{
		in:       in,
		opts:     in.Options,
		tables:   make(map[uint32]Table, len(in.Tables)),
		children: make(map[uint32][]uint32),
		copies:   make(map[uint32][]uint64),
		split:    make(map[uint32]bool),
		built:    make(map[uint32][]uint64),
		creator:  make(map[uint32]uint64),
	}
	for _, t := range in.Tables {
		b.tables[t.OID] = t
		if t.ParentOID != 0 {
			b.children[t.ParentOID] = append(b.children[t.ParentOID], t.OID)
		}
		for _, p := range t.InheritsFrom {
			b.children[p] = append(b.children[p], t.OID)
		}
	}
	return b
}

func (b *builder) add(u Unit) uint64 {
	u.ID = uint64(len(b.units) + 1)
	u.DependsOn = dedupe(u.DependsOn)
	if t, ok := b.tables[u.TableOID]; ok && u.Table == "" {
		u.Table = t.QualifiedName()
	}
	b.units = append(b.units, u)
	return u.ID
}

// group is the table and every partition or inheriting table below it,
// each once (multiple inheritance can reach a table twice).
func (b *builder) group(oid uint32) []uint32 {
	seen := map[uint32]bool{}
	var walk func(uint32)
	var out []uint32
	walk = func(o uint32) {
		if seen[o] {
			return
		}
		seen[o] = true
		out = append(out, o)
		for _, c := range b.children[o] {
			walk(c)
		}
	}
	walk(oid)
	return out
}

// groupBytes sizes a unit on a table by everything it touches.
func (b *builder) groupBytes(oid uint32) int64 {
	var n int64
	for _, t := range b.group(oid) {
		n += b.tables[t].Bytes
	}
	return n
}

// allCopies are every copy unit of the plan.
func (b *builder) allCopies() []uint64 {
	var out []uint64
	for _, t := range b.in.Tables {
		out = append(out, b.copies[t.OID]...)
	}
	return out
}

// leafCopies are the copy units that fill a table: its own, or its
// partitions' for a partitioned table.
func (b *builder) leafCopies(oid uint32) []uint64 {
	var out []uint64
	for _, t := range b.group(oid) {
		out = append(out, b.copies[t]...)
	}
	return out
}

func (b *builder) groupBuilt(oid uint32) []uint64 {
	var out []uint64
	for _, t := range b.group(oid) {
		out = append(out, b.built[t]...)
	}
	return out
}

// 1. Copy units: one per table with rows of its own, or one per part of a
// table larger than the split threshold. A whole table is TRUNCATEd and
// loaded with COPY FREEZE in its unit's transaction; the parts of a split
// table load concurrently into the empty table pre-data created, with no
// TRUNCATE (it would take back parts already committed) and so no FREEZE.
// A repartitioned table is loaded like a part even when whole: PostgreSQL
// allows neither on a partitioned table, and the target is empty after
// pre-data; the done-marker committed with the rows keeps it exactly-once.
func (b *builder) copyUnits() {
	threshold := SplitThreshold(b.in.Tables, b.opts)
	for _, t := range b.in.Tables {
		switch {
		case t.HasData() && t.NoData:
			// exclude-table-data: the table and what is built on it are
			// made, its rows are not copied (Input.Skipped says so).
		case t.HasData():
			format := b.format(t)
			parts := split(t, threshold, b.opts.SplitMaxParts)
			if parts == nil {
				id := b.add(Unit{
					Kind:          KindCopy,
					TableOID:      t.OID,
					Description:   "whole table",
					Copy:          &Copy{Schema: t.Schema, Table: t.Name, Columns: t.Columns, Format: format, TruncateFreeze: !t.Repartitioned()},
					Transactional: true,
					NeedsSnapshot: true,
					Size:          t.Bytes,
				})
				b.copies[t.OID] = append(b.copies[t.OID], id)
				continue
			}
			b.split[t.OID] = true
			for _, p := range parts {
				id := b.add(Unit{
					Kind:        KindCopy,
					TableOID:    t.OID,
					Description: p.desc,
					Copy: &Copy{Schema: t.Schema, Table: t.Name, Columns: t.Columns, Format: format,
						StartBlock: p.start, EndBlock: p.end, Key: p.key},
					Transactional: true,
					NeedsSnapshot: true,
					Size:          p.size,
				})
				b.copies[t.OID] = append(b.copies[t.OID], id)
			}
		case t.RelKind == "f":
			b.skipped = append(b.skipped, fmt.Sprintf("%s: foreign table, its data stays on the foreign server", t.QualifiedName()))
		}
	}
}

// format is the table's COPY format under --copy-format: binary needs
// binary send and receive functions for every column type, and (for auto)
// the same major version on both sides.
func (b *builder) format(t Table) CopyFormat {
	switch b.opts.CopyFormat {
	case FormatText:
		return FormatText
	case FormatBinary:
		if t.BinarySafe {
			return FormatBinary
		}
	default:
		if b.opts.BinaryCopy && t.BinarySafe {
			return FormatBinary
		}
	}
	return FormatText
}

// 2. Post-data entries become index, constraint and foreign key units; the
// rest is restored by one unit at the end.
func (b *builder) postDataUnits() {
	type pending struct {
		unit  int // index into b.units
		entry Entry
	}
	var constraints, attaches, fks []pending
	for _, e := range b.in.PostData {
		size := b.groupBytes(e.TableOID)
		switch e.Desc {
		case "INDEX":
			id := b.add(Unit{Kind: KindIndex, TableOID: e.TableOID, Description: e.Tag,
				DumpIDs: []int{e.DumpID}, Transactional: true, DependsOn: b.leafCopies(e.TableOID), Size: e.IndexShape.BuildCost(size)})
			b.built[e.TableOID] = append(b.built[e.TableOID], id)
			b.creator[e.IndexOID] = id
			b.ddl = append(b.ddl, id)
		case "CONSTRAINT", "CHECK CONSTRAINT":
			if attachable(e, b.tables[e.TableOID]) {
				// Build the index as a unit of its own, so it runs beside
				// the table's other index builds, then attach it.
				idx := b.add(Unit{Kind: KindIndex, TableOID: e.TableOID, Description: e.ConName,
					SQL: e.IndexDef + ";", Transactional: true, DependsOn: b.leafCopies(e.TableOID), Size: e.IndexShape.BuildCost(size)})
				b.built[e.TableOID] = append(b.built[e.TableOID], idx)
				b.ddl = append(b.ddl, idx)
				id := b.add(Unit{Kind: KindConstraint, TableOID: e.TableOID, Description: e.ConName,
					SQL: usingIndexSQL(e, b.tables[e.TableOID]), Transactional: true, Size: size})
				constraints = append(constraints, pending{int(id - 1), e})
				continue
			}
			id := b.add(Unit{Kind: KindConstraint, TableOID: e.TableOID, Description: constraintName(e),
				DumpIDs: []int{e.DumpID}, Transactional: true, Size: size})
			constraints = append(constraints, pending{int(id - 1), e})
		case "INDEX ATTACH":
			id := b.add(Unit{Kind: KindConstraint, TableOID: e.TableOID, Description: "attach " + e.Tag,
				DumpIDs: []int{e.DumpID}, Transactional: true, Size: size})
			attaches = append(attaches, pending{int(id - 1), e})
		case "FK CONSTRAINT":
			id := b.add(Unit{Kind: KindForeignKey, TableOID: e.TableOID, Description: constraintName(e),
				DumpIDs: []int{e.DumpID}, Transactional: true, Size: size + b.groupBytes(e.RefTableOID)})
			fks = append(fks, pending{int(id - 1), e})
		default:
			b.rest = append(b.rest, e.DumpID)
		}
	}
	// Constraints wait for every index of their table: ALTER TABLE takes a
	// lock that would stall those builds, and USING INDEX needs its index.
	for _, p := range constraints {
		u := &b.units[p.unit]
		if p.entry.TableOID == 0 {
			// A domain constraint: COPY checks every row against it, and a
			// NOT VALID one must not meet rows that already break it.
			u.DependsOn = b.allCopies()
		}
		u.DependsOn = dedupe(append(append(u.DependsOn, b.leafCopies(p.entry.TableOID)...), b.groupBuilt(p.entry.TableOID)...))
		b.built[p.entry.TableOID] = append(b.built[p.entry.TableOID], u.ID)
		if p.entry.IndexOID != 0 {
			b.creator[p.entry.IndexOID] = u.ID
		}
		b.ddl = append(b.ddl, u.ID)
	}
	// An attachment needs both the parent's and the child's index (and their
	// constraints) to exist.
	for _, p := range attaches {
		u := &b.units[p.unit]
		for _, oid := range []uint32{p.entry.IndexOID, p.entry.ParentIndexOID} {
			if c, ok := b.creator[oid]; ok {
				u.DependsOn = append(u.DependsOn, c)
			} else {
				u.DependsOn = append(u.DependsOn, b.groupBuilt(p.entry.TableOID)...)
			}
		}
		u.DependsOn = dedupe(u.DependsOn)
		b.built[p.entry.TableOID] = append(b.built[p.entry.TableOID], u.ID)
		b.ddl = append(b.ddl, u.ID)
	}
	// A foreign key waits for both of its tables: rows, indexes, constraints.
	for _, p := range fks {
		u := &b.units[p.unit]
		for _, oid := range []uint32{p.entry.TableOID, p.entry.RefTableOID} {
			if oid == 0 {
				continue
			}
			u.DependsOn = append(u.DependsOn, b.leafCopies(oid)...)
			u.DependsOn = append(u.DependsOn, b.groupBuilt(oid)...)
		}
		u.DependsOn = dedupe(u.DependsOn)
		b.ddl = append(b.ddl, u.ID)
	}
}

// attachable says whether a constraint can be built as a plain unique index
// and attached with USING INDEX: PRIMARY KEY and UNIQUE on an ordinary table
// that is ordinary on the target too (USING INDEX is refused on a
// partitioned table).
func attachable(e Entry, t Table) bool {
	return (e.ConType == "p" || e.ConType == "u") && t.RelKind == "r" && !t.Repartitioned() &&
		e.IndexDef != "" && e.ConName != ""
}

func usingIndexSQL(e Entry, t Table) string {
	kind := "UNIQUE"
	if e.ConType == "p" {
		kind = "PRIMARY KEY"
	}
	sql := fmt.Sprintf("ALTER TABLE ONLY %s ADD CONSTRAINT %s %s USING INDEX %s",
		ident.Qualified(t.Schema, t.Name), ident.Quote(e.ConName), kind, ident.Quote(e.ConName))
	if e.Deferrable {
		sql += " DEFERRABLE"
		if e.Deferred {
			sql += " INITIALLY DEFERRED"
		}
	}
	return sql + ";"
}

func constraintName(e Entry) string {
	if e.ConName != "" {
		return e.ConName
	}
	// The tag of a constraint entry is "table constraint".
	if _, name, ok := strings.Cut(e.Tag, " "); ok {
		return name
	}
	return e.Tag
}

// 3. Each copied table is analyzed once its indexes exist. After COPY
// FREEZE the rows are frozen and the visibility map is set, so ANALYZE is
// all a whole table needs. A split or repartitioned table was loaded
// without FREEZE (VACUUM of a partitioned table vacuums its partitions): VACUUM
// sets its visibility map (index-only scans, and no later vacuum rewriting
// every page for hint bits) along with the statistics. VACUUM cannot run in
// a transaction block, so that unit is not transactional; running it twice
// is harmless.
func (b *builder) vacuumUnits() {
	for _, t := range b.in.Tables {
		if !t.HasData() {
			continue
		}
		deps := append(append([]uint64{}, b.copies[t.OID]...), b.built[t.OID]...)
		u := Unit{Kind: KindVacuum, TableOID: t.OID, Description: "analyze",
			SQL: "ANALYZE " + ident.Qualified(t.Schema, t.Name) + ";", Transactional: true,
			DependsOn: deps, Size: t.Bytes}
		if b.split[t.OID] || t.Repartitioned() {
			u.Description, u.Transactional = "vacuum analyze", false
			u.SQL = "VACUUM (ANALYZE) " + ident.Qualified(t.Schema, t.Name) + ";"
		}
		b.add(u)
	}
}

// 4. The rest of post-data (triggers, rules, policies, comments, ...) runs
// once every index, constraint and foreign key exists; then materialized
// views are refreshed, in dump order.
func (b *builder) finalUnits() {
	all := append(b.allCopies(), b.ddl...)
	var post uint64
	if len(b.rest) > 0 {
		post = b.add(Unit{Kind: KindPostData, Description: fmt.Sprintf("%d post-data entries", len(b.rest)),
			DumpIDs: b.rest, Transactional: true, DependsOn: all})
	}
	if len(b.in.Matviews) == 0 {
		return
	}
	var sql strings.Builder
	for _, m := range b.in.Matviews {
		fmt.Fprintf(&sql, "REFRESH MATERIALIZED VIEW %s;\n", ident.Qualified(m.Schema, m.Name))
	}
	deps := all
	if post != 0 {
		deps = []uint64{post}
	}
	b.add(Unit{Kind: KindRefresh, Description: fmt.Sprintf("%d materialized views", len(b.in.Matviews)),
		SQL: sql.String(), Transactional: true, DependsOn: deps})
}

// 5. Sequences are set from the values read in the snapshot.
func (b *builder) sequenceUnit() {
	if len(b.in.Sequences) == 0 {
		return
	}
	var sql strings.Builder
	for _, s := range b.in.Sequences {
		fmt.Fprintf(&sql, "SELECT pg_catalog.setval(%s, %d, %t);\n",
			ident.Literal(ident.Qualified(s.Schema, s.Name)), s.LastValue, s.IsCalled)
	}
	b.add(Unit{Kind: KindSequences, Description: fmt.Sprintf("%d sequences", len(b.in.Sequences)),
		SQL: sql.String(), Transactional: true})
}

// 6. Large objects are copied in OID ranges.
func (b *builder) largeObjectUnits() {
	per := b.opts.LargeObjectsPerUnit
	if per <= 0 {
		per = 1000
	}
	oids := b.in.LargeObjects
	for start := 0; start < len(oids); start += per {
		end := min(start+per, len(oids))
		r := &LargeObjects{FirstOID: oids[start], LastOID: oids[end-1], Count: end - start,
			NoOwner: b.opts.NoOwner, NoACL: b.opts.NoACL}
		b.add(Unit{Kind: KindLargeObjects, Description: fmt.Sprintf("large objects %d-%d", r.FirstOID, r.LastOID),
			LargeObjects: r, Transactional: true, NeedsSnapshot: true, Size: int64(r.Count)})
	}
}

func dedupe(ids []uint64) []uint64 {
	if len(ids) == 0 {
		return nil
	}
	sorted := append([]uint64(nil), ids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	out := sorted[:1]
	for _, id := range sorted[1:] {
		if id != out[len(out)-1] {
			out = append(out, id)
		}
	}
	return out
}
