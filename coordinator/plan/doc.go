// Package plan turns what the catalog and the schema dump say about the source
// into units of work and the order they must run in. It is pure: it does no
// I/O, imports no I/O package, and gives the same plan for the same input, so
// it is tested with golden files.
//
// The plan follows ARCHITECTURE.md "The copy path": one copy unit per table
// (leaf partitions and inheritance members, FROM ONLY), or one per part of a
// big table; index units released when every copy unit of their table is
// done; PRIMARY KEY and UNIQUE constraints built as plain unique indexes and
// attached with ADD CONSTRAINT ... USING INDEX, so several indexes of one
// table build at once; foreign keys after both of their tables; ANALYZE (or
// VACUUM (ANALYZE) for a split table) once a table's indexes exist; the rest
// of post-data last; then materialized view refreshes. Sequences and large
// objects do not wait for anything.
//
// A table the --after-schema file made partitioned on the target
// (Table.TargetRelKind, set only when the coordinator planned again after
// the file ran) is copied like a split table's parts, with no TRUNCATE and
// no FREEZE, and vacuumed; its PRIMARY KEY and UNIQUE constraints are not
// attached USING INDEX but made from the dump's SQL, whose ALTER TABLE ONLY
// on it becomes ALTER TABLE (Plan.ReachPartitions) so they reach every
// partition. A plan without TargetRelKind is exactly what it was before.
//
// Filters are applied before planning (coordinator/filter): the input has
// no excluded table, entry or sequence, a table whose rows are left out
// has NoData (no copy unit; what is built on it does not wait), and
// Input.Skipped carries the reasons, which the plan reports first.
//
// # Splitting big tables
//
// A table (or leaf partition) whose heap + TOAST bytes exceed the split
// threshold T is cut into n = min(ceil(bytes / T), --split-max-parts) units.
// T is --split-tables-larger-than, or else
//
//	T = clamp(total / (4 * jobs), 2 GiB, 16 GiB)
//
// with total the heap + TOAST bytes of every copied table and jobs the copy
// units run at once (the clone's --table-jobs; --copy-jobs, default 4, for a
// coordinator). The coordinator hands out the largest ready unit first; with
// that greedy order the copy phase ends at most (largest unit) * (1 - 1/jobs)
// after the ideal total / jobs, so a largest unit of total / (4 * jobs) bounds
// the tail to a quarter of the ideal. The floor keeps tables that copy in
// seconds from paying for a split (VACUUM instead of COPY FREEZE, below),
// which measured slower than copying them whole on a small machine; the
// ceiling bounds what a failed unit redoes.
//
// A table is cut on key ranges when it has a single-column NOT NULL integer
// key with a unique index (the primary key first) whose order follows the
// physical order closely enough, at the n-quantiles of the key's pg_stats
// histogram or, without statistics, of a sample: never at equal widths,
// which give skewed keys parts of very different sizes. The first range is
// open at the bottom and the last at the top, so rows outside what the
// statistics saw are still copied. Otherwise it is cut into n CTID block
// ranges of equal block counts (TID range scans, PostgreSQL 14+), the last
// open-ended. Either way n comes from heap + TOAST bytes, not from heap pages
// alone, which would give TOAST-heavy tables too few parts.
//
// "Closely enough": each key range also reads the pages of its rows that
// are out of key order. With a fraction f of rows out of place (updated
// rows moved to the end of the heap, say) the correlation is about 1 - 2f
// and n key ranges read the table 1 + n*f times, so key ranges are used
// while n * (1 - |correlation|) <= 1, half a table read extra at most. A key
// in random order (correlation near 0) would make every part read the whole
// table; CTID ranges read each page once.
//
// The parts of a split table load into the empty table pre-data created,
// concurrently, each in its own target transaction with its done-marker; that
// marker, not a TRUNCATE, is what makes a redelivered part a no-op. Without
// TRUNCATE there is no COPY FREEZE, so the table's last unit is VACUUM
// (ANALYZE), which sets the visibility map; a whole table keeps TRUNCATE +
// COPY FREEZE and needs only ANALYZE. The table's indexes wait for all of its
// parts.
package plan
