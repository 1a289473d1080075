package worker_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// splitSourceSQL has tables that a small split size cuts into parts of
// every kind. Autovacuum is off on each, so statistics are what the script
// made them.
const splitSourceSQL = `
-- Cubes: a skewed NOT NULL key, cut at the histogram's quantiles. A few
-- updated rows moved to other pages, not enough to break the key's
-- correlation with the physical order.
CREATE TABLE skewed (id bigint PRIMARY KEY, v text, n numeric) WITH (autovacuum_enabled = off);
INSERT INTO skewed SELECT g::bigint * g * g, md5(g::text), g / 7.0 FROM generate_series(1, 20000) g;
UPDATE skewed SET v = 'moved ' || v WHERE id % 17 = 0;
ANALYZE skewed;

-- Half the rows updated, some twice, some deleted: row versions scattered
-- over the heap with dead ones between them, and a key that no longer
-- follows the physical order, so CTID ranges.
CREATE TABLE scattered (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off, fillfactor = 100);
INSERT INTO scattered SELECT g, repeat('s', 40) FROM generate_series(1, 20000) g;
UPDATE scattered SET v = v || ' updated' WHERE id % 2 = 0;
DELETE FROM scattered WHERE id % 11 = 0;
UPDATE scattered SET v = 'again ' || v WHERE id % 6 = 0;
ANALYZE scattered;

-- A heap of a few pages and megabytes of TOAST, no key.
CREATE TABLE toasty (id int, doc text) WITH (autovacuum_enabled = off);
ALTER TABLE toasty ALTER COLUMN doc SET STORAGE EXTERNAL;
INSERT INTO toasty SELECT g, (SELECT string_agg(md5(g::text || '/' || x), '') FROM generate_series(1, 125) x)
FROM generate_series(1, 1000) g;

-- A leaf partition cut by its key, under a partitioned index.
CREATE TABLE events (id int8 PRIMARY KEY, at date NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE events_all PARTITION OF events FOR VALUES FROM (MINVALUE) TO (MAXVALUE) WITH (autovacuum_enabled = off);
INSERT INTO events SELECT g, '2024-01-01'::date + g % 365 FROM generate_series(1, 30000) g;
ANALYZE events_all;
CREATE INDEX events_at ON events (at);

-- Small: copied whole.
CREATE TABLE small (id int PRIMARY KEY);
INSERT INTO small SELECT generate_series(1, 10);
`

var splitTables = []string{"public.skewed", "public.scattered", "public.toasty", "public.events_all", "public.small"}

// TestCloneSplitTables clones tables cut into CTID and key ranges, in
// binary and in text, and checks that every row arrived exactly once: the
// target's rows equal the source's, for every table.
func TestCloneSplitTables(t *testing.T) {
	ctx := t.Context()
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	if err := src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := src.Exec(ctx, "app", splitSourceSQL); err != nil {
		t.Fatal(err)
	}
	srcURI := src.URI("app")

	for _, format := range []plan.CopyFormat{plan.FormatAuto, plan.FormatText} {
		t.Run(string(format), func(t *testing.T) {
			db := "copy_" + string(format)
			if err := dst.CreateDatabase(ctx, db); err != nil {
				t.Fatal(err)
			}
			dstURI := dst.URI(db)
			rc := startCoordinator(t, srcURI, dstURI, func(cfg *coordinator.Config) {
				cfg.Plan.SplitTablesLargerThan = 256 << 10
				cfg.Plan.SplitMaxParts = 8
				cfg.Plan.CopyFormat = format
			})
			werr := runWorker(t, workerConfig(rc.addr, srcURI, dstURI))
			if cerr := rc.wait(); werr != nil || cerr != nil {
				t.Fatalf("worker: %v; coordinator: %v", werr, cerr)
			}

			for _, table := range splitTables {
				if s, d := contents(t, srcURI, table), contents(t, dstURI, table); !slices.Equal(s, d) {
					t.Errorf("%s: source %v, target %v", table, s, d)
				}
			}

			units := storeUnits(t, rc.dir)
			parts := map[string][]plan.Unit{}
			vacuum := map[string]plan.Unit{}
			for _, u := range units {
				switch u.Kind {
				case plan.KindCopy:
					parts[u.Table] = append(parts[u.Table], u.Unit)
					want := plan.FormatBinary
					if format == plan.FormatText {
						want = plan.FormatText
					}
					if u.Copy.Format != want {
						t.Errorf("%s %q copied as %s, want %s", u.Table, u.Description, u.Copy.Format, want)
					}
				case plan.KindVacuum:
					vacuum[u.Table] = u.Unit
				}
			}
			for table, byKey := range map[string]bool{"public.skewed": true, "public.scattered": false, "public.toasty": false, "public.events_all": true} {
				ps := parts[table]
				if len(ps) < 2 {
					t.Errorf("%s: %d copy units, want it split", table, len(ps))
					continue
				}
				for _, p := range ps {
					if (p.Copy.Key != nil) != byKey || p.Copy.TruncateFreeze {
						t.Errorf("%s %q: key range %v, truncate %t; want key ranges %t, no truncate", table, p.Description, p.Copy.Key, p.Copy.TruncateFreeze, byKey)
					}
				}
				if v := vacuum[table]; !strings.HasPrefix(v.SQL, "VACUUM (ANALYZE)") || v.Transactional {
					t.Errorf("%s: last unit %q, want VACUUM (ANALYZE) outside a transaction", table, v.SQL)
				}
				// VACUUM set the visibility map COPY without FREEZE left empty.
				name := strings.TrimPrefix(table, "public.")
				if got := queryRow(t, dstURI, `SELECT relallvisible::text FROM pg_class WHERE oid = $1::regclass`, name); got[0] == "0" {
					t.Errorf("%s: no page all-visible on the target after VACUUM", table)
				}
			}
			// The skewed key is cut at quantiles: the parts hold about equal
			// row counts, where equal widths of cubes would put almost every
			// row in the first part.
			var counts []int
			for _, p := range parts["public.skewed"] {
				if p.Copy.Key == nil {
					t.FailNow()
				}
				n, _ := strconv.Atoi(queryRow(t, srcURI, `SELECT count(*)::text FROM skewed WHERE `+keyCondition(p.Copy.Key))[0])
				counts = append(counts, n)
			}
			if slices.Min(counts)*3 < slices.Max(counts) {
				t.Errorf("skewed rows per part %v, want about equal", counts)
			}
			if ps := parts["public.small"]; len(ps) != 1 || !ps[0].Copy.TruncateFreeze {
				t.Errorf("small: %d units, want one whole-table TRUNCATE + FREEZE", len(ps))
			}
			if v := vacuum["public.small"]; !strings.HasPrefix(v.SQL, "ANALYZE") {
				t.Errorf("small: last unit %q, want ANALYZE", v.SQL)
			}
		})
	}
}

func keyCondition(k *plan.KeyRange) string {
	var conds []string
	if !k.LowerUnbounded {
		conds = append(conds, k.Column+" >= "+strconv.FormatInt(k.Lower, 10))
	}
	if !k.UpperUnbounded {
		conds = append(conds, k.Column+" < "+strconv.FormatInt(k.Upper, 10))
	}
	return strings.Join(conds, " AND ")
}

// storeUnits reads the units of a finished migration from its store.
func storeUnits(t *testing.T, dir string) []store.Unit {
	t.Helper()
	s, err := store.Open(dir, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	units, err := s.Units()
	if err != nil {
		t.Fatal(err)
	}
	return units
}
