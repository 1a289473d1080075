// Package checksum counts and checksums the rows of a table, or of a range
// of its integer key, in SQL: what verify compares between a source and a
// target. The coordinator's verify and the worker's verify units use it, so
// a range hashed on a worker gives the same numbers as one hashed by the
// coordinator. It only reads; it knows nothing of what the numbers are
// compared with.
package checksum

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// SessionParams make both servers print values the same way, whatever
// their configuration, and keep long read-only sessions from being
// cancelled or silently filtered by row security. Every session whose
// checksums are compared must be opened with them.
var SessionParams = map[string]string{
	"application_name":                    "pgcaravan verify",
	"search_path":                         "pg_catalog",
	"TimeZone":                            "UTC",
	"DateStyle":                           "ISO, YMD",
	"IntervalStyle":                       "postgres",
	"extra_float_digits":                  "3",
	"bytea_output":                        "hex",
	"lc_monetary":                         "C",
	"row_security":                        "off",
	"statement_timeout":                   "0",
	"lock_timeout":                        "0",
	"idle_in_transaction_session_timeout": "0",
}

// sumQuery counts rows and adds up a 64-bit hash of each row's text: a sum
// does not depend on row order, numeric does not overflow, and the sums of
// a table's ranges add up to the table's. t.* is the whole row even when
// the table has a column named t. ONLY keeps an inheritance parent from
// counting its children's rows, which are compared as tables of their own
// (RangeTree reads a partitioned table that stands for a plain one whole).
// %s is the table, with ONLY, then the range's condition.
const sumQuery = `SELECT count(*), coalesce(sum(('x' || substr(md5(t.*::text), 1, 16))::bit(64)::bigint::numeric), 0)::text
FROM %s t%s`

// Sum is a table's or a range's row count and checksum on one side.
type Sum struct {
	Rows int64  `json:"rows"`
	Sum  string `json:"sum"`
}

// Where is the condition that selects key >= from (unless nil) and key < to
// (unless nil) from a table aliased t, "" for the whole table.
func Where(key string, from, to *int64) string {
	if key == "" {
		return ""
	}
	var conds []string
	if from != nil {
		conds = append(conds, fmt.Sprintf("t.%s >= %d", ident.Quote(key), *from))
	}
	if to != nil {
		conds = append(conds, fmt.Sprintf("t.%s < %d", ident.Quote(key), *to))
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// Begin starts the REPEATABLE READ READ ONLY transaction checksums are read
// in, importing snapshot (an exported snapshot whose session is still open)
// unless it is empty.
func Begin(ctx context.Context, conn *pgx.Conn, snapshot string) (pgx.Tx, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	if snapshot != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+ident.Literal(snapshot)); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("import snapshot %q (is the session that exported it still open?): %w", snapshot, err)
		}
	}
	return tx, nil
}

// Range counts and checksums the rows of schema.table that match where (see
// Where) in tx. Range bounds are literals, so the simple protocol plans each
// range for its bounds and no statement is cached per range.
func Range(ctx context.Context, tx pgx.Tx, schema, table, where string) (Sum, error) {
	return sum(ctx, tx, "ONLY "+ident.Qualified(schema, table), where)
}

// RangeTree is Range over schema.table and every partition below it: for
// a partitioned table that holds the rows of a plain table of the other
// side (a clone whose --after-schema made it partitioned).
func RangeTree(ctx context.Context, tx pgx.Tx, schema, table, where string) (Sum, error) {
	return sum(ctx, tx, ident.Qualified(schema, table), where)
}

func sum(ctx context.Context, tx pgx.Tx, from, where string) (Sum, error) {
	var s Sum
	err := tx.QueryRow(ctx, fmt.Sprintf(sumQuery, from, where), pgx.QueryExecModeSimpleProtocol).
		Scan(&s.Rows, &s.Sum)
	return s, err
}
