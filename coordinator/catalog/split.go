package catalog

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// sampling bounds the work of sampling keys that have no usable statistics.
type sampling struct {
	// above: smaller tables are not sampled; if they are split at all, it
	// is by CTID ranges.
	above int64
	// tables: at most this many tables are sampled, the largest first.
	tables int
	// pages: about how many heap blocks one sample reads.
	pages int64
	// buckets: how many equal-count groups the sample's bounds make.
	buckets int
}

// defaultSampling reads at most 32 * 256 blocks (64 MiB) in all.
var defaultSampling = sampling{above: 64 << 20, tables: 32, pages: 256, buckets: 100}

// splitKeysQuery reads, for every ordinary table: its heap blocks, whether
// the server has TID range scans (PostgreSQL 14), and its split key, a NOT
// NULL int2/int4/int8 column with a valid unique index of its own (the
// primary key first), with that column's histogram and correlation from
// pg_stats and whether they are stale. They are stale when the heap has
// grown or shrunk by more than a fifth since ANALYZE last counted its pages
// (relpages): a bulk load after ANALYZE would put every new key in the
// last, open-ended range. (pg_stat's changes since ANALYZE cannot tell: a
// session that loads and then analyzes counts its own load after the
// ANALYZE.)
const splitKeysQuery = `
SELECT c.oid, p.pages,
       current_setting('server_version_num')::int >= 140000,
       k.attname::text,
       s.histogram_bounds::text::int8[],
       s.correlation::float8,
       p.pages > 1.25 * c.relpages OR p.pages < 0.8 * c.relpages
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT pg_relation_size(c.oid, 'main') / current_setting('block_size')::int8 AS pages) p
LEFT JOIN LATERAL (
	SELECT a.attname FROM pg_index i
	JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
	WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1
	  AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attnotnull AND NOT a.attisdropped
	  AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
	ORDER BY i.indisprimary DESC, i.indexrelid
	LIMIT 1) k ON true
LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = k.attname AND NOT s.inherited
WHERE c.relkind = 'r' AND ` + userSchemas + ` AND ` + notExtensionMember

// readSplitKeys fills in HeapPages and SplitKey of the ordinary tables. A
// key whose statistics are missing or stale is sampled (within
// defaultSampling); without either it gets no bounds, and the plan cuts the
// table by CTID.
func readSplitKeys(ctx context.Context, q Querier, tables []plan.Table) error {
	return defaultSampling.readSplitKeys(ctx, q, tables)
}

func (sm sampling) readSplitKeys(ctx context.Context, q Querier, tables []plan.Table) error {
	byOID := make(map[uint32]*plan.Table, len(tables))
	for i := range tables {
		byOID[tables[i].OID] = &tables[i]
	}
	rows, err := q.Query(ctx, splitKeysQuery)
	if err != nil {
		return fmt.Errorf("read split keys: %w", err)
	}
	var (
		oid         uint32
		pages       int64
		tidRanges   bool
		column      *string
		bounds      []int64
		correlation *float64
		stale       bool
	)
	heapPages := map[uint32]int64{}
	var unsampled []*plan.Table
	_, err = pgx.ForEachRow(rows, []any{&oid, &pages, &tidRanges, &column, &bounds, &correlation, &stale}, func() error {
		t, ok := byOID[oid]
		if !ok {
			return nil
		}
		heapPages[oid] = pages
		if tidRanges {
			t.HeapPages = pages
		}
		if column == nil {
			return nil
		}
		t.SplitKey = &plan.SplitKey{Column: *column}
		if len(bounds) >= 2 && !stale {
			t.SplitKey.Bounds = slices.Clone(bounds)
			if correlation != nil {
				t.SplitKey.Correlation = *correlation
			}
		} else if t.Bytes >= sm.above {
			unsampled = append(unsampled, t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read split keys: %w", err)
	}
	slices.SortStableFunc(unsampled, func(a, b *plan.Table) int { return cmp.Compare(b.Bytes, a.Bytes) })
	for _, t := range unsampled[:min(len(unsampled), sm.tables)] {
		if err := sm.sample(ctx, q, t, heapPages[t.OID]); err != nil {
			return err
		}
	}
	return nil
}

// sample reads the key of about sm.pages random heap blocks (TABLESAMPLE
// SYSTEM, so a 600 GB table costs the same as a 2 GB one) and derives the
// bounds and correlation that ANALYZE would have given.
func (sm sampling) sample(ctx context.Context, q Querier, t *plan.Table, pages int64) error {
	percent := 100.0
	if pages > sm.pages {
		percent = 100 * float64(sm.pages) / float64(pages)
	}
	sql := fmt.Sprintf("SELECT %s::int8 FROM ONLY %s TABLESAMPLE SYSTEM (%s) REPEATABLE (0) ORDER BY ctid",
		ident.Quote(t.SplitKey.Column), ident.Qualified(t.Schema, t.Name), strconv.FormatFloat(percent, 'f', -1, 64))
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("sample %s: %w", t.QualifiedName(), err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("sample %s: %w", t.QualifiedName(), err)
	}
	t.SplitKey.Bounds, t.SplitKey.Correlation = sampleStats(keys, sm.buckets)
	t.SplitKey.Sampled = true
	return nil
}

// sampleStats turns keys in physical order into up to buckets+1 bounds of
// equal-count groups (as pg_stats.histogram_bounds) and the rank correlation
// of key order with physical order (as pg_stats.correlation). Fewer than two
// keys tell nothing.
func sampleStats(keys []int64, buckets int) ([]int64, float64) {
	n := len(keys)
	if n < 2 {
		return nil, 0
	}
	order := make([]int, n) // order[r] is the physical position of the key of rank r
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(keys[a], keys[b]) })
	buckets = min(buckets, n-1)
	bounds := make([]int64, 0, buckets+1)
	for i := 0; i <= buckets; i++ {
		k := keys[order[i*(n-1)/buckets]]
		if len(bounds) == 0 || k > bounds[len(bounds)-1] {
			bounds = append(bounds, k)
		}
	}
	// Spearman's rho over ranks: 1 - 6 * sum(d^2) / (n (n^2 - 1)).
	var sum float64
	for r, pos := range order {
		d := float64(r - pos)
		sum += d * d
	}
	nf := float64(n)
	return bounds, 1 - 6*sum/(nf*(nf*nf-1))
}
