// Package datagen fills an empty database with pgcaravan's own sample data:
// a schema that exercises everything a clone must carry (identity and
// generated columns, unlogged, inherited and partitioned tables, NOT VALID
// and deferrable constraints, EXCLUDE constraints, partial and expression
// indexes, views, a populated materialized view, triggers, comments,
// advanced sequences, names that need quoting, a non-ASCII schema and large
// objects) around one big table whose size the caller chooses.
//
// The demo, the integration tests and the benchmarks load it. Its content is
// a function of the row number only, so two runs with the same Options give
// equal data, row for row and large object for large object (OIDs included),
// and the verifier can compare two generated databases.
//
// datagen must not insert row by row from the client (every row is made on
// the server by generate_series), must not use random() or the clock, and
// must not touch a database that already holds its schemas.
package datagen
