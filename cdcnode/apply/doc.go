// Package apply replays spooled pgoutput transactions on the target
// (ARCHITECTURE.md "CDC: stream, spool, apply"): in source commit order,
// many source transactions per target transaction, every statement a
// prepared statement sent in pipelined batches with the values exactly as
// pgoutput gave them (text, never decoded), runs of inserts as multi-row
// INSERTs. Each target transaction advances a replication origin, so a
// restart skips everything already applied. It never reads the source and
// never talks to the coordinator.
package apply
