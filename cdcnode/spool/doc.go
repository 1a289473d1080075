// Package spool keeps the raw pgoutput messages that the cdcnode receives
// from the logical replication slot in durable segment files on local disk,
// so that the target can be caught up long after the source sent them, and
// after any number of cdcnode restarts (ARCHITECTURE.md "CDC: stream, spool,
// apply").
//
// The stream goroutine is the one writer: it calls Append for every XLogData
// payload, Sync in groups, and reports only Durable as flushed to the source,
// so the source frees WAL exactly when the spool holds it. The apply
// goroutine reads the spool back through a Reader. A Reader never returns a
// record that is not yet durable, so nothing the target applied can be lost
// by a crash of the cdcnode.
//
// # On disk
//
//	DIR/
//	  LOCK                    flock(2)ed by the open Spool: one Spool per DIR
//	  0000000001A2B3C8.seg    a segment: its name is its first record's LSN,
//	  0000000005F00A10.seg    16 upper-case hex digits; names sort in LSN order
//	  0000000009C13DE0.seg    the last segment: the one being written
//
// A segment has no file header: it is records, back to back, each framed as
//
//	offset 0        4                12         16
//	       +--------+----------------+----------+---------------------+
//	       | length | LSN            | CRC      | payload             |
//	       | uint32 | uint64         | uint32   | length bytes        |
//	       +--------+----------------+----------+---------------------+
//
// All integers are big-endian, as in the replication protocol. length is the
// payload's length (so a record takes 16+length bytes). LSN is the WALStart
// of the XLogData message that carried the payload, raised by the caller to
// one past the previous record's where the source sent a lower one (the
// first change of a transaction that began before the previous one
// committed). CRC is CRC-32C
// (Castagnoli) of the 8 LSN bytes followed by the payload. The payload is the
// pgoutput message exactly as received; this package never looks inside it.
//
// LSNs never go down, within a segment or from one segment to the next, but
// consecutive records may share one (a Relation message and the change that
// follows it, say). A segment is rolled over once it reaches
// Options.SegmentSize, but only at a record whose LSN is greater than the
// segment's first LSN, so that no two segments can have the same name: a
// segment can therefore exceed SegmentSize by its last record, or by many
// records that share one LSN. A record is never split across segments.
//
// # Durability
//
// Append fills a small buffer; Sync writes it, fsyncs the current segment,
// and fsyncs DIR when a segment was created since the last Sync. A segment is
// flushed and fsynced before the next one is created, so every segment but
// the last is complete on disk. Open therefore treats damage in the last
// segment as the torn tail of a crash (everything from the first record that
// is not intact is cut off: by the contract above none of it was ever
// reported durable), and damage in any other segment as corruption that it
// reports, naming the file and the offset, and does not repair.
//
// Open reads every segment through once, checking every CRC: restart time
// grows with the spool (a sequential read of it), in exchange for finding a
// damaged segment before apply reaches it. Readers check every CRC again.
//
// A failed fsync makes the Spool unusable (every later call returns the same
// error): after a failed fsync the kernel may have dropped the dirty pages,
// so nothing written since the last good Sync can be trusted. Close it, Open
// it again (which rereads and checks the tail) and restart the stream from
// Durable.
//
// A full disk is not fatal: Append and Sync return a *DiskFullError, nothing
// half-written stays on disk or becomes visible to readers, and the same call
// can be retried once space is free.
//
// # What this package must not do
//
// It does not connect to PostgreSQL, decode pgoutput, speak gRPC, log, or
// start goroutines. It knows LSNs only as uint64 (the caller converts to and
// from pglogrepl.LSN). Deciding when to Sync, what to Truncate after a
// restart, and how far to Remove is the caller's job: the spool only keeps
// records in order and durable.
package spool
