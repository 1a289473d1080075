package datagen

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/coordinator/verify"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func connectTest(t *testing.T, uri string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestGenerate(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"gen", "again"} {
		if err := c.CreateDatabase(t.Context(), db); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{BigRows: 10_000}
	if err := Generate(t.Context(), c.URI("gen"), opts); err != nil {
		t.Fatal(err)
	}
	conn := connectTest(t, c.URI("gen"))

	t.Run("rows", func(t *testing.T) {
		// Keys are FROM clauses: ONLY counts a table's own rows.
		for from, want := range map[string]int64{
			"ONLY caravan.events":             10_000,
			"ONLY caravan.customers":          2000,
			"ONLY caravan.orders":             20_000,
			"ONLY caravan.order_lines":        60_000,
			"ONLY caravan.session_cache":      5000,
			"ONLY caravan.measurements":       1000,
			"caravan.measurements":            6000, // the parent and both children
			"ONLY caravan.measurements_north": 2000,
			"ONLY caravan.measurements_south": 3000,
			"ONLY caravan.readings":           0, // a partitioned parent holds nothing itself
			"caravan.readings":                20_000,
			"ONLY caravan.readings_2023":      5109,
			"ONLY caravan.readings_2024":      5124,
			"ONLY caravan.readings_2025":      5022,
			"ONLY caravan.readings_default":   4745,
			"ONLY caravan.reservations":       2000,
			"ONLY caravan.audit_log":          10_000,
			`ONLY caravan."Mixed Case.Tbl"`:   1000,
			"ONLY caravan.notes":              300,
			"ONLY caravan.documents":          50,
			`ONLY "çarşı"."dükkân"`:           500,
			"ONLY caravan.daily_events":       3, // 10,000 seconds fit in one day: a row per kind
			"caravan.customer_totals":         2000,
		} {
			var got int64
			if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM "+from).Scan(&got); err != nil {
				t.Errorf("%s: %v", from, err)
			} else if got != want {
				t.Errorf("SELECT count(*) FROM %s: %d, want %d", from, got, want)
			}
		}
	})

	t.Run("objects", func(t *testing.T) {
		for _, q := range []struct{ what, sql string }{
			{"NOT VALID check kept with rows that violate it",
				`SELECT NOT convalidated AND (SELECT count(*) FROM caravan.customers WHERE length(name) > 20) > 0
				 FROM pg_constraint WHERE conname = 'customers_name_short'`},
			{"deferrable initially deferred FK",
				`SELECT condeferrable AND condeferred FROM pg_constraint WHERE conname = 'order_lines_order_fk'`},
			{"plain FK", `SELECT contype = 'f' AND NOT condeferrable FROM pg_constraint WHERE conname = 'orders_customer_fk'`},
			{"UNIQUE constraint", `SELECT contype = 'u' FROM pg_constraint WHERE conname = 'customers_email_key'`},
			{"EXCLUDE constraint next to a PK",
				`SELECT count(*) = 2 FROM pg_constraint WHERE conrelid = 'caravan.reservations'::regclass AND contype IN ('x', 'p')`},
			{"CHECK on a domain", `SELECT count(*) = 1 FROM pg_constraint WHERE contypid = 'caravan.positive_qty'::regtype`},
			{"unlogged table", `SELECT relpersistence = 'u' FROM pg_class WHERE oid = 'caravan.session_cache'::regclass`},
			{"populated materialized view with an index",
				`SELECT relispopulated AND relhasindex FROM pg_class WHERE oid = 'caravan.daily_events'::regclass`},
			{"stored generated column",
				`SELECT bool_and(total = quantity * unit_price) FROM caravan.orders`},
			{"identity ALWAYS and BY DEFAULT",
				`SELECT string_agg(attidentity::text, '' ORDER BY attrelid::regclass::text) = 'da' FROM pg_attribute
				 WHERE attrelid IN ('caravan.customers'::regclass, 'caravan.orders'::regclass) AND attidentity <> ''`},
			{"identity sequence advanced", `SELECT last_value = 20000 FROM caravan.orders_id_seq`},
			{"standalone sequences advanced",
				`SELECT (SELECT last_value = 4242 AND is_called FROM caravan.ticket_seq)
				    AND (SELECT last_value = 77 AND NOT is_called FROM caravan.invoice_seq)`},
			{"partial and expression indexes",
				`SELECT count(*) = 2 FROM pg_index WHERE indexrelid IN
				 ('caravan.orders_open_idx'::regclass, 'caravan.customers_lower_email_idx'::regclass)
				 AND (indpred IS NOT NULL OR indexprs IS NOT NULL)`},
			{"two secondary indexes on the big table",
				`SELECT count(*) = 3 FROM pg_index WHERE indrelid = 'caravan.events'::regclass`},
			{"PK and secondary index on the partitioned parent",
				`SELECT count(*) = 2 FROM pg_index WHERE indrelid = 'caravan.readings'::regclass`},
			{"default partition",
				`SELECT pg_get_expr(relpartbound, oid) = 'DEFAULT' FROM pg_class WHERE oid = 'caravan.readings_default'::regclass`},
			{"trigger", `SELECT count(*) = 1 FROM pg_trigger WHERE tgrelid = 'caravan.orders'::regclass AND NOT tgisinternal`},
			{"comments on a table, a column and an index",
				`SELECT obj_description('caravan.events'::regclass, 'pg_class') IS NOT NULL
				    AND col_description('caravan.events'::regclass, 5) IS NOT NULL
				    AND obj_description('caravan.events_created_at_idx'::regclass, 'pg_class') IS NOT NULL`},
			{"quoted column", `SELECT count("we""ird") = 900 FROM caravan."Mixed Case.Tbl"`},
			{"big table row sizes",
				`SELECT min(octet_length(body)) >= 200 AND min(octet_length(payload)) >= 96 FROM caravan.events`},
			{"large objects, some empty and some over 1 MB",
				`SELECT count(*) = 50 AND count(*) FILTER (WHERE s = 0) > 0 AND count(*) FILTER (WHERE s > 1048576) > 0
				 FROM (SELECT octet_length(lo_get(oid)) AS s FROM pg_largeobject_metadata) l`},
			{"documents point at the large objects",
				`SELECT bool_and(EXISTS (SELECT 1 FROM pg_largeobject_metadata m WHERE m.oid = d.content)) FROM caravan.documents d`},
		} {
			var ok bool
			if err := conn.QueryRow(t.Context(), q.sql).Scan(&ok); err != nil {
				t.Errorf("%s: %v", q.what, err)
			} else if !ok {
				t.Errorf("%s: not so", q.what)
			}
		}
	})

	t.Run("refuses a database that has it", func(t *testing.T) {
		err := Generate(t.Context(), c.URI("gen"), opts)
		if err == nil || !strings.Contains(err.Error(), "empty database") {
			t.Fatalf("second Generate: err %v, want a refusal", err)
		}
	})

	t.Run("deterministic", func(t *testing.T) {
		if err := Generate(t.Context(), c.URI("again"), opts); err != nil {
			t.Fatal(err)
		}
		r, err := verify.Compare(t.Context(), c.URI("gen"), c.URI("again"), verify.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() {
			var b strings.Builder
			r.Print(&b)
			t.Fatalf("two runs differ:\n%s", b.String())
		}
	})
}
