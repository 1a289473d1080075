// Package pgtest starts throwaway PostgreSQL clusters for tests and for the demo, with the
// machine's own initdb and pg_ctl.
//
// A cluster lives in a fresh directory under the system temp directory, listens on a free
// loopback TCP port (no Unix socket), has wal_level = logical and trusts the postgres role
// without a password, and is stopped and deleted by Close. Nothing depends on fixed ports or
// paths, so any number of clusters can run at once, in one test binary or in many:
//
//	c := pgtest.Start(t, pgtest.Options{})
//	pgtest.LoadPagila(t, c, "source")
//	conn, err := pgx.Connect(ctx, c.URI("source"))
//
// PostgreSQL refuses to run as root. When the tests run as root (as in CI), initdb, pg_ctl
// and the server run as the postgres OS user, and the cluster directory belongs to it.
//
// Clusters left behind by a test binary that died before its cleanups ran (Ctrl-C, a test
// timeout) are stopped and deleted by the next New on the same machine.
//
// Dataset and LoadPagila find the sample databases in ../shared/datasets, seen from the
// repository root, and skip the test when they are missing (fail it under CI=true).
//
// What belongs here: starting, stopping and feeding test clusters. What does not: any
// pgcaravan logic. This package imports no component (coordinator, worker, cdcnode) and no
// proto, so that every package can use it in its tests; and it never stands in for
// PostgreSQL with a mock.
package pgtest
