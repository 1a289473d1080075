// Package cdcnode follows a live migration's changes (ARCHITECTURE.md "CDC:
// stream, spool, apply"). From the start of the copy it streams the
// logical replication slot into a durable spool on local disk (package
// stream into package spool); once the coordinator says the backfill is
// complete it replays the spool on the target (package apply) and keeps the
// target in sync until the cutover's endpos. It knows the coordinator only
// through the generated gRPC client (CDCService) and never imports
// coordinator packages.
//
// cdcnode.go has the node's life (configuration, the coordinator's phase,
// the loops); streaming.go the slot into the spool and its recovery after
// a crash; applying.go the spool onto the target and the progress reports;
// relations.go the relation messages kept across sessions; metrics.go the
// Prometheus metrics and probes.
package cdcnode
