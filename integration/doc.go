// Package integration holds the end-to-end tests: the built binary as
// separate coordinator and worker processes against real PostgreSQL
// clusters, checked by the verifier; and the repository's architecture
// rules. It has no code of its own outside tests.
package integration
