package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/checksum"
	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// A table with an integer key is compared range by range, cut the way the
// copy cuts key ranges: at quantiles of the key, not at equal widths, so a
// skewed key still gives ranges of about the same number of rows. CTID
// ranges, the copy's other way of cutting, cannot be used here: the same
// row sits in different blocks on the two sides.

// samplePages bounds the source blocks read to cut one table: a table this
// small has all its keys read, a bigger one a TABLESAMPLE SYSTEM of about
// this many blocks.
const samplePages = 1024

// KeyRange is a range of a table's key, [From, To); a nil end is open.
type KeyRange struct {
	From, To *int64
}

func (r KeyRange) String() string {
	from, to := "-inf", "+inf"
	if r.From != nil {
		from = strconv.FormatInt(*r.From, 10)
	}
	if r.To != nil {
		to = strconv.FormatInt(*r.To, 10)
	}
	return "[" + from + ", " + to + ")"
}

// where is the condition that selects the range from a table aliased t,
// "" for the whole key.
func (r KeyRange) where(key string) string {
	return checksum.Where(key, r.From, r.To)
}

// contains reports whether k is in the range.
func (r KeyRange) contains(k int64) bool {
	return (r.From == nil || k >= *r.From) && (r.To == nil || k < *r.To)
}

// split cuts r at the cuts that fall strictly inside it. It returns nil
// when none does.
func (r KeyRange) split(cuts []int64) []KeyRange {
	var in []int64
	for _, c := range cuts {
		if r.contains(c) && (r.From == nil || c > *r.From) {
			in = append(in, c)
		}
	}
	slices.Sort(in)
	in = slices.Compact(in)
	if len(in) == 0 {
		return nil
	}
	return rangesOf(r.From, in, r.To)
}

// rangesOf returns [from, cuts[0]), [cuts[0], cuts[1]), ... [cuts[n-1], to).
func rangesOf(from *int64, cuts []int64, to *int64) []KeyRange {
	out := make([]KeyRange, 0, len(cuts)+1)
	lo := from
	for i := range cuts {
		c := cuts[i]
		out = append(out, KeyRange{From: lo, To: &c})
		lo = &c
	}
	return append(out, KeyRange{From: lo, To: to})
}

// ranges returns the ranges of a plan: one unbounded range without bounds.
func (p tablePlan) ranges() []KeyRange {
	return rangesOf(nil, p.Bounds, nil)
}

// cut returns the bounds of n ranges of about equal counts of the sorted
// keys, or nil when n < 2.
func cut(keys []int64, n int) []int64 {
	if n < 2 || len(keys) < 2 {
		return nil
	}
	var bounds []int64
	for i := 1; i < n; i++ {
		k := keys[i*len(keys)/n]
		if (len(bounds) == 0 && k > keys[0]) || (len(bounds) > 0 && k > bounds[len(bounds)-1]) {
			bounds = append(bounds, k)
		}
	}
	return bounds
}

// keyQuery finds a table's split key as the copy does: a NOT NULL int2,
// int4 or int8 column with a valid unique index of its own, no predicate
// and no expression, the primary key first.
const keyQuery = `SELECT a.attname::text FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1
  AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attnotnull AND NOT a.attisdropped
  AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
ORDER BY i.indisprimary DESC, i.indexrelid
LIMIT 1`

// targetKeyQuery checks that the target has the source's key column, as a
// NOT NULL integer: the ranges then cover every target row. Its index does
// not matter (a missing one is the index check's business).
const targetKeyQuery = `SELECT a.attnotnull AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
FROM pg_attribute a WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped`

// planTable finds the key of a table (st on the source, tt on the target)
// and cuts it into ranges of about rangeRows source rows. A table without
// a key on both sides is compared whole.
func planTable(ctx context.Context, ss, ts *session, st, tt table, rangeRows int64) (tablePlan, error) {
	var key string
	err := ss.tx.QueryRow(ctx, keyQuery, st.oid).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		return tablePlan{}, nil
	}
	if err != nil {
		return tablePlan{}, fmt.Errorf("read source key: %w", err)
	}
	var ok bool
	err = ts.tx.QueryRow(ctx, targetKeyQuery, tt.oid, key).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !ok) {
		return tablePlan{}, nil
	}
	if err != nil {
		return tablePlan{}, fmt.Errorf("read target key: %w", err)
	}
	keys, rows, err := ss.sampleKeys(ctx, st, key)
	if err != nil {
		return tablePlan{}, err
	}
	n := int((rows + rangeRows - 1) / rangeRows)
	return tablePlan{Key: key, Bounds: cut(keys, n)}, nil
}

// sampleKeys reads the keys of a table, or of a sample of about
// samplePages of its blocks, sorted, and estimates its rows.
func (s *session) sampleKeys(ctx context.Context, t table, key string) ([]int64, int64, error) {
	var pages int64
	if err := s.tx.QueryRow(ctx, `SELECT pg_relation_size($1::oid, 'main') / current_setting('block_size')::int8`, t.oid).Scan(&pages); err != nil {
		return nil, 0, fmt.Errorf("read size: %w", err)
	}
	sample, scale := "", 1.0
	if pages > samplePages {
		percent := 100 * float64(samplePages) / float64(pages)
		sample = " TABLESAMPLE SYSTEM (" + strconv.FormatFloat(percent, 'f', -1, 64) + ") REPEATABLE (0)"
		scale = 100 / percent
	}
	rows, err := s.tx.Query(ctx, fmt.Sprintf("SELECT t.%s::int8 FROM %s t%s",
		ident.Quote(key), t.from(), sample))
	if err != nil {
		return nil, 0, fmt.Errorf("sample keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, 0, fmt.Errorf("sample keys: %w", err)
	}
	slices.Sort(keys)
	return keys, int64(float64(len(keys)) * scale), nil
}
