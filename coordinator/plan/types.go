package plan

// Kind says what a worker does with a unit.
type Kind string

const (
	KindCopy         Kind = "copy"
	KindIndex        Kind = "index"
	KindConstraint   Kind = "constraint"
	KindForeignKey   Kind = "foreign_key"
	KindPostData     Kind = "post_data"
	KindSequences    Kind = "sequences"
	KindVacuum       Kind = "vacuum"
	KindLargeObjects Kind = "large_objects"
	KindRefresh      Kind = "refresh"
)

// CopyFormat is the COPY format of one table.
type CopyFormat string

const (
	FormatText   CopyFormat = "text"
	FormatBinary CopyFormat = "binary"
	// FormatAuto is only an option (--copy-format auto): binary where it is
	// safe, text otherwise. A unit's format is never auto.
	FormatAuto CopyFormat = "auto"
)

// Table is a relation of the source, as the catalog read it under the snapshot.
type Table struct {
	OID    uint32 `json:"oid"`
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// RelKind is pg_class.relkind: r (table), p (partitioned), m (matview), f (foreign).
	RelKind string `json:"relkind"`
	// TargetRelKind is the target's relkind when --after-schema made it
	// differ from RelKind: "p" for a plain table it made partitioned (see
	// Repartitioned). Empty means the target's table is like the source's.
	TargetRelKind string `json:"target_relkind,omitempty"`
	// ParentOID is the partitioned table this one is a partition of, or 0.
	ParentOID uint32 `json:"parent_oid,omitempty"`
	// InheritsFrom are the tables this one inherits from (not as a
	// partition). DDL on a parent without ONLY reaches its children, so
	// such DDL waits for the children's rows too.
	InheritsFrom []uint32 `json:"inherits_from,omitempty"`
	// Columns are the columns COPY carries: every column except dropped and
	// generated ones, in attnum order.
	Columns []string `json:"columns"`
	// BinarySafe is true when every copied column's type has binary send and
	// receive functions.
	BinarySafe bool  `json:"binary_safe"`
	EstRows    int64 `json:"est_rows"`
	// Bytes is heap + TOAST size.
	Bytes int64 `json:"bytes"`
	// HeapPages is the heap's length in blocks, what CTID ranges cut; 0
	// when the source cannot scan TID ranges (before PostgreSQL 14), which
	// leaves key ranges as the only way to split the table.
	HeapPages int64 `json:"heap_pages,omitempty"`
	// SplitKey is a single-column integer key the table can be cut on, or
	// nil.
	SplitKey *SplitKey `json:"split_key,omitempty"`
	// Populated is pg_class.relispopulated, for materialized views.
	Populated bool `json:"populated,omitempty"`
	// NoData tables are created, with their indexes and constraints, but
	// get no copy unit (a filter's exclude-table-data); a materialized view
	// is not refreshed.
	NoData bool `json:"no_data,omitempty"`
}

// SplitKey is a NOT NULL int2/int4/int8 column with a unique index of its
// own (the primary key, or a unique index), what key ranges are cut on.
type SplitKey struct {
	Column string `json:"column"`
	// Bounds are ascending values that cut the rows into groups of about
	// equal counts (pg_stats.histogram_bounds, or quantiles of a sample);
	// fewer than two means the key's distribution is unknown.
	Bounds []int64 `json:"bounds,omitempty"`
	// Correlation is between the key's order and the rows' physical order,
	// from -1 to 1 (pg_stats.correlation, or computed on the sample).
	Correlation float64 `json:"correlation"`
	// Sampled says Bounds come from a sample, not from pg_stats.
	Sampled bool `json:"sampled,omitempty"`
}

// QualifiedName is schema.name, unquoted, for display.
func (t Table) QualifiedName() string { return t.Schema + "." + t.Name }

// HasData says whether the table has rows of its own for a copy unit.
func (t Table) HasData() bool { return t.RelKind == "r" }

// Repartitioned says whether the table is plain on the source and
// partitioned on the target (--after-schema made it so). PostgreSQL refuses
// TRUNCATE ONLY, COPY FREEZE and ALTER TABLE ONLY ... ADD CONSTRAINT on a
// partitioned table, so its rows are copied like a split table's parts
// (no TRUNCATE, no FREEZE) and its constraints are added to the whole tree.
func (t Table) Repartitioned() bool { return t.RelKind == "r" && t.TargetRelKind == "p" }

// Entry is one post-data entry of the schema dump's table of contents,
// annotated with catalog facts.
type Entry struct {
	// DumpID is the entry's id in the dump; the schema package restores
	// entries by it.
	DumpID int `json:"dump_id"`
	// Desc is the entry type as pg_restore -l prints it: INDEX, CONSTRAINT,
	// FK CONSTRAINT, CHECK CONSTRAINT, INDEX ATTACH, TRIGGER, COMMENT, ...
	Desc   string `json:"desc"`
	Schema string `json:"schema"`
	Tag    string `json:"tag"`
	// Names is "schema tag owner" as pg_restore printed it; Schema and Tag
	// are its best-effort split, wrong when a name has a space.
	Names  string `json:"names,omitempty"`
	ObjOID uint32 `json:"obj_oid"`
	// TableOID is the table the object belongs to (for INDEX ATTACH: the
	// table of the parent index); 0 when unknown or not table-bound.
	TableOID uint32 `json:"table_oid,omitempty"`
	// RefTableOID is the referenced table of a foreign key.
	RefTableOID uint32 `json:"ref_table_oid,omitempty"`
	// IndexOID is the index an INDEX entry creates, the index behind a
	// constraint, or the child index of an INDEX ATTACH.
	IndexOID uint32 `json:"index_oid,omitempty"`
	// ParentIndexOID is the parent index of an INDEX ATTACH.
	ParentIndexOID uint32 `json:"parent_index_oid,omitempty"`
	// ConType is pg_constraint.contype for constraint entries.
	ConType string `json:"contype,omitempty"`
	// ConName is the constraint name for constraint entries.
	ConName string `json:"conname,omitempty"`
	// IndexDef is pg_get_indexdef of the index behind a PRIMARY KEY or
	// UNIQUE constraint.
	IndexDef   string `json:"indexdef,omitempty"`
	Deferrable bool   `json:"deferrable,omitempty"`
	Deferred   bool   `json:"deferred,omitempty"`
	// IndexShape describes the index an INDEX entry creates or a PRIMARY
	// KEY or UNIQUE constraint is backed by, to rank its build's cost.
	IndexShape IndexShape `json:"index_shape,omitzero"`
}

// IndexShape is what makes one index build slower than another on the
// same table.
type IndexShape struct {
	// Method is the access method: btree, hash, gist, gin, spgist, brin.
	Method string `json:"method,omitempty"`
	// Keys is the number of key columns (pg_index.indnkeyatts).
	Keys int `json:"keys,omitempty"`
	// Expressions is true when a key is an expression, evaluated for
	// every row during the build.
	Expressions bool `json:"expressions,omitempty"`
}

// BuildCost estimates the work of building an index of this shape on
// tableBytes of data, in the units of Unit.Size (bytes scanned, weighted).
// Every build scans the whole table; an expression is evaluated per row,
// more key columns mean wider tuples to sort, and GIN and GiST builds do
// far more work per row than a btree sort. Only the order matters: the
// broker starts the costliest ready build first, so the longest build of a
// table does not start last and run alone.
func (s IndexShape) BuildCost(tableBytes int64) int64 {
	weight := 4 // quarters
	if s.Keys > 1 {
		weight += s.Keys - 1
	}
	if s.Expressions {
		weight += 4
	}
	switch s.Method {
	case "gin", "gist", "spgist":
		weight *= 3
	case "brin":
		weight = 2
	}
	return tableBytes / 4 * int64(weight)
}

// Sequence is a sequence and the value it had in the snapshot.
type Sequence struct {
	OID       uint32 `json:"oid,omitempty"`
	Schema    string `json:"schema"`
	Name      string `json:"name"`
	LastValue int64  `json:"last_value"`
	IsCalled  bool   `json:"is_called"`
}

// Input is everything the planner needs.
type Input struct {
	Tables []Table
	// PostData are the post-data entries in dump order.
	PostData  []Entry
	Sequences []Sequence
	// LargeObjects are the OIDs of every large object, ascending.
	LargeObjects []uint32
	// Matviews are the populated materialized views to refresh, in dump
	// order (which respects their dependencies).
	Matviews []Table
	Options  Options
	// Skipped are what the coordinator left out before planning (filters),
	// with reasons; the plan reports them first.
	Skipped []string
}

// Options shape the plan.
type Options struct {
	// BinaryCopy allows binary COPY for tables whose types allow it; the
	// coordinator sets it when both servers have the same major version.
	BinaryCopy bool `json:"binary_copy"`
	// CopyFormat is --copy-format: auto (or empty) is binary where
	// BinaryCopy and the table's types allow it; binary skips the version
	// check (the table's types must still have binary I/O); text is text.
	CopyFormat CopyFormat `json:"copy_format,omitempty"`
	// SplitTablesLargerThan is --split-tables-larger-than in bytes: a table
	// with more heap + TOAST bytes is cut into units of about that size. 0
	// derives it from the total size and CopyJobs (see SplitThreshold);
	// negative never splits.
	SplitTablesLargerThan int64 `json:"split_tables_larger_than,omitempty"`
	// SplitMaxParts caps the units of one table (--split-max-parts); 0 is
	// DefaultSplitMaxParts.
	SplitMaxParts int `json:"split_max_parts,omitempty"`
	// CopyJobs is how many copy units the fleet runs at once, for the
	// derived split size; 0 is DefaultCopyJobs.
	CopyJobs int `json:"copy_jobs,omitempty"`
	// LargeObjectsPerUnit caps how many large objects one unit copies.
	LargeObjectsPerUnit int  `json:"large_objects_per_unit"`
	NoOwner             bool `json:"no_owner"`
	NoACL               bool `json:"no_acl"`
}

// DefaultOptions are the options the CLI starts from.
func DefaultOptions() Options {
	return Options{LargeObjectsPerUnit: 1000, CopyFormat: FormatAuto, SplitMaxParts: DefaultSplitMaxParts}
}

// Copy describes a copy unit.
type Copy struct {
	Schema         string     `json:"schema"`
	Table          string     `json:"table"`
	Columns        []string   `json:"columns"`
	Format         CopyFormat `json:"format"`
	TruncateFreeze bool       `json:"truncate_freeze"`
	// StartBlock and EndBlock bound a CTID range; both 0 means the whole
	// table, EndBlock 0 alone means open-ended.
	StartBlock uint32 `json:"start_block,omitempty"`
	EndBlock   uint32 `json:"end_block,omitempty"`
	// Key, when set, bounds the unit to a range of an integer key instead.
	Key *KeyRange `json:"key,omitempty"`
}

// KeyRange is the rows whose Column is in [Lower, Upper). An unbounded side
// has no condition, so the first range takes every value below the first
// cut and the last every value above the last one, whatever the statistics
// said.
type KeyRange struct {
	Column         string `json:"column"`
	Lower          int64  `json:"lower,omitempty"`
	Upper          int64  `json:"upper,omitempty"`
	LowerUnbounded bool   `json:"lower_unbounded,omitempty"`
	UpperUnbounded bool   `json:"upper_unbounded,omitempty"`
}

// LargeObjects describes a large-object unit: an inclusive OID range.
type LargeObjects struct {
	FirstOID uint32 `json:"first_oid"`
	LastOID  uint32 `json:"last_oid"`
	Count    int    `json:"count"`
	NoOwner  bool   `json:"no_owner"`
	NoACL    bool   `json:"no_acl"`
}

// Unit is one piece of work.
type Unit struct {
	ID   uint64 `json:"id"`
	Kind Kind   `json:"kind"`
	// TableOID is the table the unit belongs to, or 0.
	TableOID uint32 `json:"table_oid,omitempty"`
	// Table is schema.name of TableOID, for display.
	Table       string `json:"table,omitempty"`
	Description string `json:"description"`
	// Copy is set for KindCopy.
	Copy *Copy `json:"copy,omitempty"`
	// LargeObjects is set for KindLargeObjects.
	LargeObjects *LargeObjects `json:"large_objects,omitempty"`
	// SQL is what the SQL kinds run on the target.
	SQL string `json:"sql,omitempty"`
	// DumpIDs are the post-data entries whose SQL the coordinator restores
	// from the dump into SQL (see schema.EntrySQL), appended after SQL.
	DumpIDs []int `json:"dump_ids,omitempty"`
	// Transactional units run SQL and the done-marker in one transaction.
	Transactional bool `json:"transactional"`
	// NeedsSnapshot units read the source under the exported snapshot.
	NeedsSnapshot bool     `json:"needs_snapshot,omitempty"`
	DependsOn     []uint64 `json:"depends_on,omitempty"`
	// Size orders ready units: larger first.
	Size int64 `json:"size"`
}

// Plan is the result of planning.
type Plan struct {
	// Tables are the source relations the plan copies or builds on, by OID.
	Tables []Table `json:"tables"`
	Units  []Unit  `json:"units"`
	// Skipped says what the plan leaves out and why.
	Skipped []string `json:"skipped,omitempty"`
}
