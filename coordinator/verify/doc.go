// Package verify compares a source and a target database after a clone and
// reports every difference it finds: the set of tables and their kind and
// persistence, row counts and order-independent content checksums, columns,
// indexes, constraints, sequences, triggers, views, functions, comments and
// large objects.
//
// Each side is read inside one REPEATABLE READ READ ONLY transaction whose
// snapshot is exported to the connections that checksum tables in parallel,
// so every number on one side comes from one point in time (Options.Snapshot
// reads the source under a snapshot the caller exported instead). Sessions
// use fixed output settings (UTC, ISO dates, hex bytea, exact floats) so
// that values print the same on both servers.
//
// Rows are compared range by range. A table with an integer key (as the
// copy's key ranges use) is cut at quantiles of a sample of its source keys
// into ranges of about Options.RangeRows rows; a table without one is one
// range. Each range is counted and hashed in SQL on both sides. A differing
// range is cut again at quantiles of its keys until a part is small enough
// (Options.LeafRows) to read each row's key and hash on both sides and name
// the keys that are changed, missing on the target or extra there. With
// Options.Dir, every range's result is kept in a bbolt file of verify's own
// (state.go), so a rerun skips the ranges already found equal.
//
// Definitions are compared as the servers print them (pg_get_indexdef,
// pg_get_constraintdef, ...), so source and target should run the same
// major version; across versions a definition may print differently and be
// reported.
//
// A plain source table whose target counterpart is partitioned (a clone's
// --after-schema made it so) is compared as a table: its target rows are
// read with its partitions', and the partitions, with their columns,
// indexes, constraints, triggers and comments, are not reported as extra
// (partitioned.go).
//
// With Options.Filter, the source objects a filtered clone leaves out are
// not expected on the target: the filter names tables, schemas, indexes and
// extensions, and what depends on them is found on the source's pg_depend
// (as DROP ... CASCADE would), not with the clone's own rules.
//
// verify must not write to either database, take locks beyond the ACCESS
// SHARE that reading needs, or import any part of the copy path (catalog,
// plan, schema, worker, ...): it is the independent judge of what that path
// produced, and shares nothing with it but identifier quoting and the
// filter file's meaning (coordinator/filter's parser and name matching).
package verify
