// Package plan turns what the catalog and the schema dump say about the source
// into units of work and the order they must run in. It is pure: it does no
// I/O, imports no I/O package, and gives the same plan for the same input, so
// it is tested with golden files.
//
// The plan follows ARCHITECTURE.md "The copy path": one copy unit per table
// (leaf partitions and inheritance members, FROM ONLY); index units released
// when every copy unit of their table is done; PRIMARY KEY and UNIQUE
// constraints built as plain unique indexes and attached with ADD CONSTRAINT
// ... USING INDEX, so several indexes of one table build at once; foreign keys
// after both of their tables; the rest of post-data last; then materialized
// view refreshes. Sequences and large objects do not wait for anything.
package plan
