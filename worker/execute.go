package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/ident"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// result is what a unit did.
type result struct {
	rows, bytes int64
	// alreadyDone: the done-marker was on the target; nothing ran.
	alreadyDone bool
	// verifySource and verifyTarget are what a verify unit found.
	verifySource, verifyTarget *pb.RangeSum
}

// execute runs one unit. Every kind follows the same shape (ARCHITECTURE.md
// "Exactly once"): look for the unit's done-marker; if absent, do the work
// and insert the marker in the same target transaction.
func (w *Worker) execute(ctx context.Context, l *pb.Lease, prog *progress) (result, error) {
	// A verify unit only reads, on both sides: it has no marker.
	if l.GetUnit().GetKind() == pb.UnitKind_UNIT_KIND_VERIFY {
		return w.verifyRange(ctx, l)
	}
	// Sessions are named after the lease, so the coordinator can end them
	// if the lease expires (fencing).
	dst, err := w.dst.Connect(ctx, pguri.UnitApplication(l.GetUnit().GetId(), l.GetToken()))
	if err != nil {
		return result{}, err
	}
	defer dst.Close(context.Background())
	for name, value := range w.cfg.TargetSettings {
		if _, err := dst.Exec(ctx, fmt.Sprintf("SET %s = %s", ident.Quote(name), ident.Literal(value))); err != nil {
			return result{}, fmt.Errorf("target: set %s: %w", name, err)
		}
	}
	// A unit reported done must survive a target crash.
	if _, err := dst.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return result{}, fmt.Errorf("target: %w", err)
	}
	done, err := markerExists(ctx, dst, l)
	if err != nil {
		return result{}, err
	}
	if done {
		return result{alreadyDone: true}, nil
	}
	u := l.GetUnit()
	switch u.GetKind() {
	case pb.UnitKind_UNIT_KIND_COPY:
		return w.copyRows(ctx, dst, l, prog)
	case pb.UnitKind_UNIT_KIND_LARGE_OBJECTS:
		return w.copyLargeObjects(ctx, dst, l, prog)
	case pb.UnitKind_UNIT_KIND_UNSPECIFIED:
		return result{}, fmt.Errorf("unit %d has no kind", u.GetId())
	default:
		return runSQL(ctx, dst, l)
	}
}

func markerExists(ctx context.Context, dst *pgx.Conn, l *pb.Lease) (bool, error) {
	var one int
	err := dst.QueryRow(ctx, `SELECT 1 FROM pgcaravan.unit_done WHERE migration_id = $1 AND unit_id = $2`,
		l.GetMigrationId(), int64(l.GetUnit().GetId())).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("target: look for the done-marker of unit %d: %w", l.GetUnit().GetId(), err)
	}
	return true, nil
}

// execer is a connection or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insertMarker(ctx context.Context, q execer, l *pb.Lease) error {
	_, err := q.Exec(ctx, `INSERT INTO pgcaravan.unit_done (migration_id, unit_id) VALUES ($1, $2)`,
		l.GetMigrationId(), int64(l.GetUnit().GetId()))
	if err != nil {
		return fmt.Errorf("target: insert the done-marker of unit %d: %w", l.GetUnit().GetId(), err)
	}
	return nil
}

// runSQL runs the SQL of an index, constraint, foreign key, post-data,
// sequences, vacuum or refresh unit. The SQL may hold several statements,
// so it goes through the simple query protocol.
func runSQL(ctx context.Context, dst *pgx.Conn, l *pb.Lease) (result, error) {
	u := l.GetUnit()
	if !u.GetTransactional() {
		if err := dst.PgConn().Exec(ctx, u.GetSql()).Close(); err != nil {
			return result{}, fmt.Errorf("target: %s: %w", u.GetDescription(), err)
		}
		return result{}, insertMarker(ctx, dst, l)
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return result{}, fmt.Errorf("target: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := dst.PgConn().Exec(ctx, u.GetSql()).Close(); err != nil {
		return result{}, fmt.Errorf("target: %s: %w", u.GetDescription(), err)
	}
	if err := insertMarker(ctx, tx, l); err != nil {
		return result{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return result{}, fmt.Errorf("target: commit unit %d: %w", u.GetId(), err)
	}
	return result{}, nil
}

// openSnapshot starts a source transaction that sees exactly the
// coordinator's exported snapshot.
func (w *Worker) openSnapshot(ctx context.Context, l *pb.Lease) (*pgx.Conn, error) {
	snapshot := l.GetSnapshot()
	src, err := w.src.Connect(ctx, pguri.UnitApplication(l.GetUnit().GetId(), l.GetToken()))
	if err != nil {
		return nil, err
	}
	if _, err := src.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		src.Close(context.Background())
		return nil, fmt.Errorf("source: begin: %w", err)
	}
	if snapshot != "" {
		if _, err := src.Exec(ctx, "SET TRANSACTION SNAPSHOT "+ident.Literal(snapshot)); err != nil {
			src.Close(context.Background())
			return nil, fmt.Errorf("source: import snapshot %s: %w (the coordinator that exported it may have stopped)", snapshot, err)
		}
	}
	return src, nil
}

// copyRows streams one copy unit: COPY ... TO STDOUT on the source, piped
// byte for byte into COPY ... FROM STDIN on the target, rows never decoded.
// A whole table is truncated and loaded with FREEZE in the unit's
// transaction; a part of a split table (a CTID or key range) is appended to
// the table its sibling parts load at the same time, with no TRUNCATE: its
// done-marker, committed with its rows, is what keeps it from running twice.
func (w *Worker) copyRows(ctx context.Context, dst *pgx.Conn, l *pb.Lease, prog *progress) (result, error) {
	spec := l.GetUnit().GetCopy()
	if spec == nil {
		return result{}, fmt.Errorf("copy unit %d has no copy spec", l.GetUnit().GetId())
	}
	table := ident.Qualified(spec.GetSchema(), spec.GetTable())
	cols := ident.QuoteList(spec.GetColumns())
	format := "text"
	if spec.GetFormat() == pb.CopyFormat_COPY_FORMAT_BINARY {
		format = "binary"
	}
	copyTo := fmt.Sprintf("COPY (SELECT %s FROM ONLY %s%s) TO STDOUT WITH (FORMAT %s)", cols, table, rangeWhere(spec), format)
	target := table
	if len(spec.GetColumns()) > 0 {
		target += " (" + cols + ")"
	}
	freeze := ""
	if spec.GetTruncateFreeze() {
		freeze = ", FREEZE"
	}
	copyFrom := fmt.Sprintf("COPY %s FROM STDIN WITH (FORMAT %s%s)", target, format, freeze)

	// 1. The source session imports the snapshot.
	src, err := w.openSnapshot(ctx, l)
	if err != nil {
		return result{}, err
	}
	defer src.Close(context.Background())

	// 2. One target transaction holds the TRUNCATE, the rows and the marker.
	tx, err := dst.Begin(ctx)
	if err != nil {
		return result{}, fmt.Errorf("target: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	if spec.GetTruncateFreeze() {
		if _, err := tx.Exec(ctx, "TRUNCATE ONLY "+table); err != nil {
			return result{}, fmt.Errorf("target: truncate %s: %w", table, err)
		}
	}

	// 3. Stream.
	count := &countingWriter{prog: prog, binary: format == "binary"}
	rows, err := relay(ctx, src.PgConn(), dst.PgConn(), copyTo, copyFrom, count, relayBuffer)
	if err != nil {
		return result{}, err
	}

	// 4. The marker commits with the rows.
	if err := insertMarker(ctx, tx, l); err != nil {
		return result{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return result{}, fmt.Errorf("target: commit copy of %s: %w", table, err)
	}
	return result{rows: rows, bytes: count.n}, nil
}

// rangeWhere is the WHERE clause of a copy unit's range: CTID blocks (a TID
// range scan from PostgreSQL 14) or an integer key range, whose unbounded
// sides have no condition; empty for a whole table. Key bounds are int8
// literals in quotes, so that even the smallest int8 parses as one.
func rangeWhere(spec *pb.CopySpec) string {
	var conds []string
	if spec.GetStartBlock() != 0 || spec.GetEndBlock() != 0 {
		conds = append(conds, fmt.Sprintf("ctid >= '(%d,0)'::tid", spec.GetStartBlock()))
		if spec.GetEndBlock() != 0 {
			conds = append(conds, fmt.Sprintf("ctid < '(%d,0)'::tid", spec.GetEndBlock()))
		}
	}
	if col := spec.GetKeyColumn(); col != "" {
		if !spec.GetKeyLowerUnbounded() {
			conds = append(conds, fmt.Sprintf("%s >= '%d'::int8", ident.Quote(col), spec.GetKeyLower()))
		}
		if !spec.GetKeyUpperUnbounded() {
			conds = append(conds, fmt.Sprintf("%s < '%d'::int8", ident.Quote(col), spec.GetKeyUpper()))
		}
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// relayBuffer is how much COPY data gathers on the source side before it
// crosses to the target side. The source sends a CopyData message per row,
// and pgconn's CopyFrom sends one message (one write to the socket) per Read
// of what it is given: without a buffer every row would cross the pipe, wake
// the other goroutine and reach the target alone. CopyFrom reads 64 KiB at a
// time, so a buffer of a few of those lets each handoff fill several full
// messages. BenchmarkRelay measures the sizes.
const relayBuffer = 256 << 10

// relay runs copyTo on src and copyFrom on dst, with the bytes of the first
// flowing into the second through count and a buffer of bufSize bytes (none
// when 0), and returns the rows the target took.
func relay(ctx context.Context, src, dst *pgconn.PgConn, copyTo, copyFrom string, count *countingWriter, bufSize int) (int64, error) {
	pr, pw := io.Pipe()
	count.w = pw
	var buf *bufio.Writer
	if bufSize > 0 {
		buf = bufio.NewWriterSize(pw, bufSize)
		count.w = buf
	}
	srcErr := make(chan error, 1)
	go func() {
		_, err := src.CopyTo(ctx, count, copyTo)
		if err == nil && buf != nil {
			err = buf.Flush()
		}
		count.report()
		pw.CloseWithError(err)
		srcErr <- err
	}()
	tag, err := dst.CopyFrom(ctx, pr, copyFrom)
	pr.CloseWithError(errors.New("target copy ended"))
	if serr := <-srcErr; serr != nil {
		return 0, fmt.Errorf("source: %s: %w", copyTo, serr)
	}
	if err != nil {
		return 0, fmt.Errorf("target: %s: %w", copyFrom, err)
	}
	return tag.RowsAffected(), nil
}

// countingWriter counts the bytes and rows that pass, for heartbeats,
// without reading the rows. pgconn's CopyTo writes each CopyData message
// with one Write, and the server sends "always one per row" (the protocol's
// words). In binary format the 19-byte file header rides with the first
// message and the trailer (-1 as a 16-bit field count) comes alone, or
// with the header when there are no rows; no row is 0xffff. The counts
// reach the heartbeat's atomics every reportBytes, not with every row.
type countingWriter struct {
	w        io.Writer
	binary   bool
	prog     *progress
	n        int64 // bytes
	messages int64
	rows     int64
	// reported are the bytes and rows already added to prog.
	reportedBytes, reportedRows int64
}

// reportBytes is how much passes between two updates of the progress.
const reportBytes = 1 << 20

// binaryHeader is the signature, the flags and the (empty) header
// extension's length that start a binary COPY stream.
const binaryHeader = 19

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if !c.binary || !isTrailer(p, c.messages == 0) {
		c.rows++
	}
	c.messages++
	if c.n-c.reportedBytes >= reportBytes {
		c.report()
	}
	return n, err
}

// isTrailer says whether a binary stream's message is its trailer: two
// bytes 0xffff, after the header when it is the first message.
func isTrailer(p []byte, first bool) bool {
	if first {
		if len(p) != binaryHeader+2 {
			return false
		}
		p = p[binaryHeader:]
	}
	return len(p) == 2 && p[0] == 0xff && p[1] == 0xff
}

// report adds what passed since the last report to the progress.
func (c *countingWriter) report() {
	c.prog.bytes.Add(c.n - c.reportedBytes)
	c.prog.rows.Add(c.rows - c.reportedRows)
	c.reportedBytes, c.reportedRows = c.n, c.rows
}

// loChunk is how much of a large object moves per round trip.
const loChunk = 8 << 20

// loHead is how much of every large object comes with the listing: a
// smaller object arrives whole in it, and its creation, owner and grants go
// to the target in batches, so many small objects cost a few round trips,
// not several each.
const loHead = 64 << 10

// loBatchBytes bounds the data one target batch carries.
const loBatchBytes = 8 << 20

// copyLargeObjects copies a range of large objects with their owners and
// grants, in one target transaction with the marker:
//  1. one source query lists the range with each object's first loHead bytes;
//  2. each object is created with that head (lo_from_bytea), given its owner
//     and grants, all queued in batches of up to loBatchBytes;
//  3. the rest of the objects bigger than the head is copied loChunk at a time.
func (w *Worker) copyLargeObjects(ctx context.Context, dst *pgx.Conn, l *pb.Lease, prog *progress) (result, error) {
	r := l.GetUnit().GetLargeObjects()
	src, err := w.openSnapshot(ctx, l)
	if err != nil {
		return result{}, err
	}
	defer src.Close(context.Background())
	tx, err := dst.Begin(ctx)
	if err != nil {
		return result{}, fmt.Errorf("target: begin: %w", err)
	}
	defer tx.Rollback(context.Background())

	// 1. The listing, with every object's head. It is read while the target
	// batches go out, so the source session is free again only after it.
	rows, err := src.Query(ctx, `SELECT oid, pg_get_userbyid(lomowner), coalesce(lomacl::text[], '{}'), lo_get(oid, 0, $3)
		FROM pg_largeobject_metadata WHERE oid BETWEEN $1 AND $2 ORDER BY oid`, r.GetFirstOid(), r.GetLastOid(), loHead+1)
	if err != nil {
		return result{}, fmt.Errorf("source: list large objects %d-%d: %w", r.GetFirstOid(), r.GetLastOid(), err)
	}
	defer rows.Close()
	var (
		res     result
		big     []uint32 // objects longer than their head
		batch   = &pgx.Batch{}
		pending int
	)
	send := func() error {
		if batch.Len() == 0 {
			return nil
		}
		err := tx.SendBatch(ctx, batch).Close()
		batch, pending = &pgx.Batch{}, 0
		if err != nil {
			return fmt.Errorf("target: create large objects in %d-%d: %w (for a missing role: create it, or pass --no-owner / --no-acl)", r.GetFirstOid(), r.GetLastOid(), err)
		}
		return nil
	}
	for rows.Next() {
		var (
			oid   uint32
			owner string
			acl   []string
			head  []byte
		)
		if err := rows.Scan(&oid, &owner, &acl, &head); err != nil {
			return result{}, fmt.Errorf("source: list large objects: %w", err)
		}
		// 2. Create with the head, then owner and grants.
		if len(head) > loHead {
			head = head[:loHead]
			big = append(big, oid)
		}
		batch.Queue("SELECT lo_from_bytea($1, $2)", oid, head)
		if !r.GetNoOwner() {
			batch.Queue(fmt.Sprintf("ALTER LARGE OBJECT %d OWNER TO %s", oid, ident.Quote(owner)))
		}
		if !r.GetNoAcl() && len(acl) > 0 {
			for _, stmt := range largeObjectGrants(oid, owner, acl) {
				batch.Queue(stmt)
			}
		}
		res.rows++
		res.bytes += int64(len(head))
		prog.rows.Add(1)
		prog.bytes.Add(int64(len(head)))
		if pending += len(head); pending >= loBatchBytes {
			if err := send(); err != nil {
				return result{}, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return result{}, fmt.Errorf("source: list large objects %d-%d: %w", r.GetFirstOid(), r.GetLastOid(), err)
	}
	if err := send(); err != nil {
		return result{}, err
	}

	// 3. The rest of the big ones.
	for _, oid := range big {
		for off := int64(loHead); ; off += loChunk {
			var chunk []byte
			if err := src.QueryRow(ctx, "SELECT lo_get($1, $2, $3)", oid, off, loChunk).Scan(&chunk); err != nil {
				return result{}, fmt.Errorf("source: read large object %d: %w", oid, err)
			}
			if len(chunk) > 0 {
				if _, err := tx.Exec(ctx, "SELECT lo_put($1, $2, $3)", oid, off, chunk); err != nil {
					return result{}, fmt.Errorf("target: write large object %d: %w", oid, err)
				}
			}
			res.bytes += int64(len(chunk))
			prog.bytes.Add(int64(len(chunk)))
			if len(chunk) < loChunk {
				break
			}
		}
	}
	if err := insertMarker(ctx, tx, l); err != nil {
		return result{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return result{}, fmt.Errorf("target: commit large objects %d-%d: %w", r.GetFirstOid(), r.GetLastOid(), err)
	}
	return res, nil
}

// largeObjectGrants turns an aclitem[] ("grantee=rw*/grantor") into
// statements that give the target the same privileges: first take away the
// owner's implicit ones, then grant each item. The grantor is not kept: the
// grants are made by the worker's role.
func largeObjectGrants(oid uint32, owner string, acl []string) []string {
	stmts := []string{fmt.Sprintf("REVOKE ALL ON LARGE OBJECT %d FROM %s", oid, ident.Quote(owner))}
	for _, item := range acl {
		grantee, rest, ok := cutACLName(item)
		if !ok {
			continue
		}
		privs, _, _ := strings.Cut(rest, "/")
		to := "PUBLIC"
		if grantee != "" {
			to = ident.Quote(grantee)
		}
		for i := 0; i < len(privs); i++ {
			var priv string
			switch privs[i] {
			case 'r':
				priv = "SELECT"
			case 'w':
				priv = "UPDATE"
			default:
				continue
			}
			stmt := fmt.Sprintf("GRANT %s ON LARGE OBJECT %d TO %s", priv, oid, to)
			if i+1 < len(privs) && privs[i+1] == '*' {
				stmt += " WITH GRANT OPTION"
			}
			stmts = append(stmts, stmt)
		}
	}
	return stmts
}

// cutACLName splits an aclitem's text at the "=" after the grantee. A
// grantee with special characters is double-quoted, with "" for a quote, and
// may itself contain "=".
func cutACLName(item string) (name, rest string, ok bool) {
	if !strings.HasPrefix(item, `"`) {
		return strings.Cut(item, "=")
	}
	var b strings.Builder
	for i := 1; i < len(item); i++ {
		if item[i] != '"' {
			b.WriteByte(item[i])
			continue
		}
		if i+1 < len(item) && item[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		if i+1 < len(item) && item[i+1] == '=' {
			return b.String(), item[i+2:], true
		}
		return "", "", false
	}
	return "", "", false
}
