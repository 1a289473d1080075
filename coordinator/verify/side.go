package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/checksum"
	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// connect opens a session with checksum.SessionParams. Errors name the side, not
// the connection string, which may hold a password (pgx redacts it from
// its own messages).
func connect(ctx context.Context, sideName, uri string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return nil, fmt.Errorf("verify: %s connection string is not valid: %w", sideName, err)
	}
	for k, v := range checksum.SessionParams {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("verify: connect to %s: %w", sideName, err)
	}
	return conn, nil
}

// beginSnapshot starts the read-only REPEATABLE READ transaction every
// query of a side runs in.
func beginSnapshot(ctx context.Context, conn *pgx.Conn) (pgx.Tx, error) {
	return conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
}

// side is one database being compared: a session holding the snapshot, and
// what was read from its catalog under that snapshot.
type side struct {
	name     string // "source" or "target", for errors
	uri      string
	conn     *pgx.Conn
	tx       pgx.Tx
	snapshot string // exported (or given) snapshot id, imported by checksum sessions

	tables       map[string]table             // by display name
	facts        map[string]map[string]string // kind -> object -> value
	largeObjects []largeObject                // by oid
	// owners are, for the facts of columns, indexes, constraints,
	// triggers and comments, the oid of the relation each belongs to
	// (kind -> object -> oid), to leave out those of partitions
	// (matchPartitioned).
	owners map[string]map[string]uint32
}

// table is a relation of kind r, p, m or f.
type table struct {
	oid          uint32
	parentOIDs   []uint32 // pg_inherits parents, in inhseqno order
	partition    bool
	schema, name string
	kind         string // relkind
	persistence  string // relpersistence
	populated    bool
	parents      []string
	partBound    string
	partKey      string
	replIdent    string
	size         int64
	// tree is a target partitioned table standing for a plain source
	// table (a clone whose --after-schema made it partitioned): it is
	// described as a table and its rows are read with its partitions'.
	tree bool
}

// from is what a query reads the table's own rows from: ONLY the table, or
// the table with its partitions for a tree.
func (t table) from() string {
	if t.tree {
		return ident.Qualified(t.schema, t.name)
	}
	return "ONLY " + ident.Qualified(t.schema, t.name)
}

// hasRows reports whether the table stores rows itself (partitioned and
// foreign tables do not).
func (t table) hasRows() bool { return t.kind == "r" || t.kind == "m" }

// describe is what the "table" check compares: kind, persistence, replica
// identity and place in an inheritance or partition tree.
func (t table) describe() string {
	var b strings.Builder
	if t.persistence == "u" {
		b.WriteString("unlogged ")
	}
	kind, partKey := t.kind, t.partKey
	if t.tree {
		kind, partKey = "r", ""
	}
	switch kind {
	case "r":
		b.WriteString("table")
	case "p":
		b.WriteString("partitioned table")
	case "m":
		b.WriteString("materialized view")
	case "f":
		b.WriteString("foreign table")
	default:
		b.WriteString("relkind " + kind)
	}
	if partKey != "" {
		b.WriteString(" PARTITION BY " + partKey)
	}
	if t.partBound != "" {
		fmt.Fprintf(&b, ", partition of %s %s", strings.Join(t.parents, ", "), t.partBound)
	} else if len(t.parents) > 0 {
		fmt.Fprintf(&b, ", inherits %s", strings.Join(t.parents, ", "))
	}
	switch t.replIdent {
	case "n":
		b.WriteString(", replica identity nothing")
	case "f":
		b.WriteString(", replica identity full")
	case "i":
		b.WriteString(", replica identity index")
	}
	return b.String()
}

// largeObject is one large object's oid, size and md5.
type largeObject struct {
	oid  uint32
	size int64
	md5  string
}

func (lo largeObject) String() string { return fmt.Sprintf("%d bytes, md5 %s", lo.size, lo.md5) }

// loDigest is one digest over every object's oid, size and md5, in oid order.
func loDigest(los []largeObject) string {
	h := sha256.New()
	for _, lo := range los {
		fmt.Fprintf(h, "%d %d %s\n", lo.oid, lo.size, lo.md5)
	}
	return "sha256 " + hex.EncodeToString(h.Sum(nil))[:16]
}

// open connects, starts the side's snapshot transaction and exports it;
// with s.snapshot already set (Options.Snapshot), it imports that one
// instead, and the checksum sessions import it too.
func (s *side) open(ctx context.Context) error {
	conn, err := connect(ctx, s.name, s.uri)
	if err != nil {
		return err
	}
	s.conn = conn
	tx, err := beginSnapshot(ctx, conn)
	if err != nil {
		return fmt.Errorf("verify: begin %s snapshot: %w", s.name, err)
	}
	s.tx = tx
	if s.snapshot != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+ident.Literal(s.snapshot)); err != nil {
			return fmt.Errorf("verify: import snapshot %q on the %s (is the session that exported it still open?): %w", s.snapshot, s.name, err)
		}
		return nil
	}
	if err := tx.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&s.snapshot); err != nil {
		return fmt.Errorf("verify: export %s snapshot: %w", s.name, err)
	}
	return nil
}

// close ends the side's transaction and session.
func (s *side) close() { closeConn(s.conn, s.tx) }

// closeConn ends tx and closes conn; either may be nil. Nothing was
// written, so how the transaction ends does not matter; a short timeout
// keeps a dead server from holding up the caller.
func closeConn(conn *pgx.Conn, tx pgx.Tx) {
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if tx != nil {
		_ = tx.Rollback(ctx)
	}
	_ = conn.Close(ctx)
}

// tableFacts is the "table" check's input: every table's description.
func (s *side) tableFacts() map[string]string {
	m := make(map[string]string, len(s.tables))
	for n, t := range s.tables {
		m[n] = t.describe()
	}
	return m
}
