package catalog

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// splitSQL has a table for every kind of split key readSplitKeys tells
// apart. Autovacuum is off on each, so which have statistics is up to the
// test.
const splitSQL = `
-- Squares: a skewed key, in physical order.
CREATE TABLE skewed (id bigint PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
INSERT INTO skewed SELECT g::bigint * g, 'v' FROM generate_series(1, 5000) g;
-- The key is the NOT NULL unique int4, not the text primary key or the nullable unique int8.
CREATE TABLE by_unique (code text PRIMARY KEY, n int4 NOT NULL UNIQUE, m int8 UNIQUE) WITH (autovacuum_enabled = off);
INSERT INTO by_unique SELECT 'c' || g, g, g FROM generate_series(1, 500) g;
-- The primary key comes before another unique integer column.
CREATE TABLE small_key (id int2 PRIMARY KEY, other int8 NOT NULL UNIQUE) WITH (autovacuum_enabled = off);
INSERT INTO small_key SELECT g, g FROM generate_series(1, 300) g;
-- No usable key.
CREATE TABLE composite (a int, b int, PRIMARY KEY (a, b)) WITH (autovacuum_enabled = off);
CREATE TABLE partial (id int NOT NULL) WITH (autovacuum_enabled = off);
CREATE UNIQUE INDEX partial_id ON partial (id) WHERE id > 0;
CREATE TABLE expr (id int NOT NULL) WITH (autovacuum_enabled = off);
CREATE UNIQUE INDEX expr_id ON expr ((id + 1));
CREATE TABLE numeric_key (id numeric PRIMARY KEY) WITH (autovacuum_enabled = off);
CREATE TABLE non_unique (id int NOT NULL) WITH (autovacuum_enabled = off);
CREATE INDEX non_unique_id ON non_unique (id);
-- A key in random physical order.
CREATE TABLE shuffled (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = off);
INSERT INTO shuffled SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g ORDER BY md5(g::text);
-- Statistics from 100 rows, then 10000 more: stale.
CREATE TABLE stale (id int PRIMARY KEY) WITH (autovacuum_enabled = off);
INSERT INTO stale SELECT generate_series(1, 100);
ANALYZE stale;
INSERT INTO stale SELECT generate_series(101, 10100);
-- No statistics at all, keys descending in physical order.
CREATE TABLE nostats (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = off);
INSERT INTO nostats SELECT g, repeat('x', 80) FROM generate_series(20000, 1, -1) g;
-- A partition's key is its own index's.
CREATE TABLE parted (id int8 PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000000) WITH (autovacuum_enabled = off);
INSERT INTO parted SELECT generate_series(1, 1000);
ANALYZE skewed, by_unique, small_key, shuffled, parted_1;
`

func TestReadSplitKeys(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	if err := c.CreateDatabase(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "src", splitSQL); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.URI("src"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())

	tables, err := ReadTables(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]plan.Table{}
	for _, tb := range tables {
		byName[tb.Name] = tb
	}
	keyOf := func(name string) *plan.SplitKey {
		t.Helper()
		tb, ok := byName[name]
		if !ok {
			t.Fatalf("%s not read", name)
		}
		return tb.SplitKey
	}

	t.Run("heap pages", func(t *testing.T) {
		// PostgreSQL 14 and later scan TID ranges.
		var pages int64
		if err := tx.QueryRow(ctx, `SELECT pg_relation_size('shuffled') / current_setting('block_size')::int`).Scan(&pages); err != nil {
			t.Fatal(err)
		}
		if got := byName["shuffled"].HeapPages; pages < 2 || got != pages {
			t.Errorf("shuffled HeapPages = %d, want %d", got, pages)
		}
		if got := byName["parted"].HeapPages; got != 0 {
			t.Errorf("partitioned parent HeapPages = %d, want 0", got)
		}
	})

	t.Run("key columns", func(t *testing.T) {
		for name, want := range map[string]string{
			"skewed": "id", "by_unique": "n", "small_key": "id", "shuffled": "id", "stale": "id", "nostats": "id", "parted_1": "id",
			"composite": "", "partial": "", "expr": "", "numeric_key": "", "non_unique": "", "parted": "",
		} {
			k := keyOf(name)
			got := ""
			if k != nil {
				got = k.Column
			}
			if got != want {
				t.Errorf("%s: split key %q, want %q", name, got, want)
			}
		}
	})

	t.Run("statistics", func(t *testing.T) {
		k := keyOf("skewed")
		if len(k.Bounds) != 101 || k.Bounds[0] != 1 || k.Bounds[100] != 5000*5000 || !slices.IsSorted(k.Bounds) || k.Sampled {
			t.Fatalf("skewed bounds %v (sampled %t), want pg_stats' 101 bounds from 1 to 25000000", k.Bounds, k.Sampled)
		}
		// Squares: the median key is about 2500^2, far below the middle
		// of the range.
		if mid := k.Bounds[50]; mid < 5_000_000 || mid > 7_500_000 {
			t.Errorf("skewed median bound %d, want about 6250000", mid)
		}
		if k.Correlation < 0.99 {
			t.Errorf("skewed correlation %f, want 1", k.Correlation)
		}
		if c := keyOf("shuffled").Correlation; math.Abs(c) > 0.2 {
			t.Errorf("shuffled correlation %f, want about 0", c)
		}
		if k := keyOf("parted_1"); len(k.Bounds) < 2 {
			t.Errorf("parted_1 has no bounds: %+v", k)
		}
		// Stale and missing statistics give no bounds, and tables this
		// small are not sampled.
		for _, name := range []string{"stale", "nostats"} {
			if k := keyOf(name); len(k.Bounds) != 0 || k.Sampled {
				t.Errorf("%s: bounds %v sampled %t, want none", name, k.Bounds, k.Sampled)
			}
		}
	})

	t.Run("samples", func(t *testing.T) {
		sm := sampling{above: 0, tables: 1, pages: 32, buckets: 10}
		tables, err := ReadTables(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := sm.readSplitKeys(ctx, tx, tables); err != nil {
			t.Fatal(err)
		}
		byName := map[string]plan.Table{}
		for _, tb := range tables {
			byName[tb.Name] = tb
		}
		// Only the largest table without statistics is sampled.
		k := byName["nostats"].SplitKey
		if !k.Sampled || len(k.Bounds) != 11 || !slices.IsSorted(k.Bounds) || k.Bounds[0] < 1 || k.Bounds[10] > 20000 {
			t.Fatalf("nostats sampled key %+v, want 11 ascending bounds within 1..20000", k)
		}
		if k.Bounds[10]-k.Bounds[0] < 10000 {
			t.Errorf("nostats sample bounds %v span too little of 1..20000", k.Bounds)
		}
		if k.Correlation > -0.99 {
			t.Errorf("nostats correlation %f, want -1 (keys descend in physical order)", k.Correlation)
		}
		if k := byName["stale"].SplitKey; k.Sampled || len(k.Bounds) != 0 {
			t.Errorf("stale was sampled past the limit of one table: %+v", k)
		}
	})
}

func TestSampleStats(t *testing.T) {
	bounds, corr := sampleStats([]int64{5, 1, 4, 2, 3}, 4)
	if !slices.Equal(bounds, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("bounds = %v, want [1 2 3 4 5]", bounds)
	}
	// Rank minus position: -1 -2 -2 1 4, so rho = 1 - 6*26/120 = -0.3.
	if math.Abs(corr+0.3) > 1e-9 {
		t.Errorf("correlation = %f, want -0.3", corr)
	}
	if b, c := sampleStats([]int64{10, 20, 30, 40, 50, 60, 70, 80, 90}, 2); !slices.Equal(b, []int64{10, 50, 90}) || c != 1 {
		t.Errorf("2 buckets of 9 keys = %v %f, want [10 50 90] 1", b, c)
	}
	if b, _ := sampleStats([]int64{7}, 10); b != nil {
		t.Errorf("one key gave bounds %v", b)
	}
}
