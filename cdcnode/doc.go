// Package cdcnode will consume the logical replication slot, spool changes
// to disk and replay them on the target (ARCHITECTURE.md "CDC: stream,
// spool, apply"). It is not built yet: `pgcaravan clone --follow` and the
// `cdcnode` command do not exist in this version, and the README says so.
// Like the worker, it must know the coordinator only through the generated
// gRPC client.
package cdcnode
