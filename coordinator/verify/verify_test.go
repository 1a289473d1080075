package verify

import (
	"bytes"
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/integration/datagen"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pair is a source and a target cluster loaded with the same data.
type pair struct {
	src, tgt *pgtest.Cluster
}

func startPair(t *testing.T) pair {
	t.Helper()
	return pair{src: pgtest.Start(t, pgtest.Options{}), tgt: pgtest.Start(t, pgtest.Options{})}
}

// both runs sql in dbname on both clusters.
func (p pair) both(t *testing.T, dbname, sql string) {
	t.Helper()
	for _, c := range []*pgtest.Cluster{p.src, p.tgt} {
		if err := c.Exec(t.Context(), dbname, sql); err != nil {
			t.Fatal(err)
		}
	}
}

func (p pair) compare(t *testing.T, dbname string, opts Options) *Report {
	t.Helper()
	r, err := Compare(t.Context(), p.src.URI(dbname), p.tgt.URI(dbname), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// problems names each failed check "kind object", sorted.
func problems(r *Report) []string {
	var out []string
	for _, c := range r.Problems() {
		out = append(out, c.Kind+" "+c.Object)
	}
	slices.Sort(out)
	return out
}

func find(r *Report, kind, object string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Kind == kind && c.Object == object {
			return c, true
		}
	}
	return Check{}, false
}

func printed(r *Report) string {
	var b bytes.Buffer
	r.Print(&b)
	return b.String()
}

// TestCompare loads pagila and datagen's sample into two clusters, checks
// that equal databases compare equal, then makes one difference of each
// kind on the target and checks that the report names exactly those.
func TestCompare(t *testing.T) {
	p := startPair(t)
	for _, c := range []*pgtest.Cluster{p.src, p.tgt} {
		pgtest.LoadPagila(t, c, "pagila")
		if err := c.CreateDatabase(t.Context(), "gen"); err != nil {
			t.Fatal(err)
		}
		if err := datagen.Generate(t.Context(), c.URI("gen"), datagen.Options{BigRows: 3000, LargeObjects: 12}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("equal", func(t *testing.T) {
		for _, db := range []string{"pagila", "gen"} {
			r := p.compare(t, db, Options{Jobs: 3})
			if !r.OK() {
				t.Fatalf("%s: equal databases differ:\n%s", db, printed(r))
			}
			if out := printed(r); !strings.Contains(out, "verification OK") {
				t.Errorf("%s: report does not say OK:\n%s", db, out)
			}
		}
		r := p.compare(t, "gen", Options{})
		// Every kind is checked, and ONLY keeps the inheritance parent's
		// count to its own rows.
		for _, want := range []Check{
			{Kind: "rows", Object: "caravan.events", Source: "3000"},
			{Kind: "rows", Object: "caravan.measurements", Source: "1000"},
			{Kind: "rows", Object: `caravan."Mixed Case.Tbl"`, Source: "1000"},
			{Kind: "table", Object: "caravan.session_cache", Source: "unlogged table"},
			{Kind: "constraint", Object: "caravan.customers.customers_name_short"},
			{Kind: "sequence", Object: "caravan.orders_id_seq"},
			{Kind: "index", Object: "caravan.events_created_at_idx"},
			{Kind: "trigger", Object: "caravan.orders.orders_touch"},
			{Kind: "view", Object: "caravan.customer_totals"},
			{Kind: "matview", Object: "caravan.daily_events", Source: "populated"},
			{Kind: "function", Object: "caravan.touch_updated_at()"},
			{Kind: "comment", Object: "index caravan.events_created_at_idx"},
			{Kind: "type", Object: "caravan.mood"},
			{Kind: "large objects", Object: "count", Source: "12"},
		} {
			got, ok := find(r, want.Kind, want.Object)
			if !ok {
				t.Errorf("no %s check of %s", want.Kind, want.Object)
				continue
			}
			if want.Source != "" && got.Source != want.Source {
				t.Errorf("%s %s: source %q, want %q", want.Kind, want.Object, got.Source, want.Source)
			}
		}
		if c, _ := find(r, "constraint", "caravan.customers.customers_name_short"); !strings.Contains(c.Source, "validated false") {
			t.Errorf("NOT VALID constraint reads %q", c.Source)
		}
	})

	t.Run("differences", func(t *testing.T) {
		mustExec(t, p.tgt, "gen", `
			UPDATE "çarşı"."dükkân" SET ad = 'changed' WHERE id = 42;
			DELETE FROM caravan.measurements_north WHERE id = 100007;
			DROP INDEX caravan.events_created_at_idx;
			ALTER TABLE caravan.orders DROP CONSTRAINT orders_customer_fk;
			ALTER TABLE caravan.orders ADD CONSTRAINT orders_customer_fk
				FOREIGN KEY (customer_id) REFERENCES caravan.customers (id) NOT VALID;
			SELECT setval('caravan.ticket_seq', 4243);
			SELECT lo_unlink(900003);
			ALTER TABLE caravan.session_cache SET LOGGED;
			REFRESH MATERIALIZED VIEW caravan.daily_events WITH NO DATA;
			ALTER TABLE caravan.audit_log ALTER COLUMN actor DROP NOT NULL;
			COMMENT ON TABLE caravan.customers IS 'Somebody else';
			CREATE SCHEMA pgcaravan;
			CREATE TABLE pgcaravan.done (unit bigint);
		`)
		mustExec(t, p.tgt, "pagila", `
			UPDATE public.actor SET first_name = 'CHANGED' WHERE actor_id = 1;
			DROP TRIGGER last_updated ON public.film;
			DROP VIEW public.actor_info;
			CREATE VIEW public.actor_info AS SELECT 1 AS actor_id;
			CREATE TABLE public.extra (id int);
		`)

		r := p.compare(t, "gen", Options{Jobs: 4})
		want := []string{
			`checksum "çarşı"."dükkân"`,
			"checksum caravan.measurements_north",
			"column caravan.audit_log.actor",
			"comment index caravan.events_created_at_idx",
			"comment table caravan.customers",
			"constraint caravan.orders.orders_customer_fk",
			"index caravan.events_created_at_idx",
			"large objects count",
			"large objects data",
			"large objects oid 900003",
			"matview caravan.daily_events",
			"rows caravan.measurements_north",
			"sequence caravan.ticket_seq",
			"table caravan.session_cache",
		}
		if got := problems(r); !slices.Equal(got, want) {
			t.Errorf("problems:\n  got  %q\n  want %q\n%s", got, want, printed(r))
		}
		checkProblem(t, r, "constraint", "caravan.orders.orders_customer_fk", "validated true", "validated false")
		checkProblem(t, r, "sequence", "caravan.ticket_seq", "last_value 4242", "last_value 4243")
		checkProblem(t, r, "index", "caravan.events_created_at_idx", "CREATE INDEX events_created_at_idx", missing)
		checkProblem(t, r, "large objects", "oid 900003", "bytes", missing)
		checkProblem(t, r, "table", "caravan.session_cache", "unlogged table", "table")
		checkProblem(t, r, "rows", "caravan.measurements_north", "2000", "1999")

		out := printed(r)
		for _, re := range []string{
			`verification FAILED: 14 of \d+ checks differ`,
			`caravan\.measurements_north +2000 +1999 +DIFF`,
			`"çarşı"\."dükkân" +500 +500 +DIFF`,
			`PROBLEMS \(14\)`,
			`  sequence caravan\.ticket_seq\n    source: last_value 4242.*\n    target: last_value 4243`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("report does not match %q:\n%s", re, out)
			}
		}

		r = p.compare(t, "pagila", Options{})
		want = []string{
			"checksum public.actor",
			"column public.extra.id",
			"table public.extra",
			"trigger public.film.last_updated",
			"view public.actor_info",
		}
		if got := problems(r); !slices.Equal(got, want) {
			t.Errorf("pagila problems:\n  got  %q\n  want %q\n%s", got, want, printed(r))
		}
		checkProblem(t, r, "table", "public.extra", missing, "table")
	})
}

// TestCompareQuotedNames compares a table whose schema and name need
// quoting, with a column named like the row alias.
func TestCompareQuotedNames(t *testing.T) {
	p := startPair(t)
	for _, c := range []*pgtest.Cluster{p.src, p.tgt} {
		if err := c.CreateDatabase(t.Context(), "weird"); err != nil {
			t.Fatal(err)
		}
	}
	p.both(t, "weird", `
		CREATE SCHEMA "Sch ema";
		CREATE TABLE "Sch ema"."we.ird ""Name""" (id int PRIMARY KEY, "Col ""x""" text, t int, "ünï" text);
		CREATE INDEX "idx ""q"" ü" ON "Sch ema"."we.ird ""Name""" ("Col ""x""");
		CREATE SEQUENCE "Sch ema"."Seq.1";
		SELECT setval('"Sch ema"."Seq.1"', 5);
		COMMENT ON COLUMN "Sch ema"."we.ird ""Name"""."Col ""x""" IS 'quoted';
		INSERT INTO "Sch ema"."we.ird ""Name"""
			SELECT g, 'x"' || g, g % 3, 'ğ' || g FROM generate_series(1, 500) g;
	`)
	const table = `"Sch ema"."we.ird ""Name"""`

	r := p.compare(t, "weird", Options{})
	if !r.OK() {
		t.Fatalf("equal databases differ:\n%s", printed(r))
	}
	for _, want := range [][2]string{
		{"rows", table},
		{"checksum", table},
		{"index", `"Sch ema"."idx ""q"" ü"`},
		{"sequence", `"Sch ema"."Seq.1"`},
		{"column", table + `."Col ""x"""`},
		{"comment", "column " + table + `."Col ""x"""`},
	} {
		if _, ok := find(r, want[0], want[1]); !ok {
			t.Errorf("no %s check of %s", want[0], want[1])
		}
	}

	mustExec(t, p.tgt, "weird", `UPDATE "Sch ema"."we.ird ""Name""" SET t = 99 WHERE id = 10`)
	r = p.compare(t, "weird", Options{})
	if got, want := problems(r), []string{"checksum " + table}; !slices.Equal(got, want) {
		t.Errorf("problems %q, want %q\n%s", got, want, printed(r))
	}
	if out := printed(r); !regexp.MustCompile(regexp.QuoteMeta(table) + ` +500 +500 +DIFF`).MatchString(out) {
		t.Errorf("report does not show the table's checksum as DIFF:\n%s", out)
	}

	// An excluded schema is not compared at all.
	r = p.compare(t, "weird", Options{ExcludeSchemas: []string{"Sch ema"}})
	if !r.OK() {
		t.Errorf("excluded schema was compared:\n%s", printed(r))
	}
	for _, c := range r.Checks {
		if strings.Contains(c.Object, "Sch ema") {
			t.Errorf("excluded schema appears in check %+v", c)
		}
	}
}

// TestCompareUnreachable checks that a side that cannot be read is an
// error naming that side, not a report.
func TestCompareUnreachable(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	_, err := Compare(t.Context(), c.URI("postgres"), c.URI("nosuchdb"), Options{})
	if err == nil || !strings.Contains(err.Error(), "target") {
		t.Fatalf("Compare with a missing target database: err %v, want one naming the target", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Compare(ctx, c.URI("postgres"), c.URI("postgres"), Options{}); err == nil {
		t.Fatal("Compare with a cancelled context succeeded")
	}
}

func mustExec(t *testing.T, c *pgtest.Cluster, dbname, sql string) {
	t.Helper()
	if err := c.Exec(t.Context(), dbname, sql); err != nil {
		t.Fatal(err)
	}
}

func checkProblem(t *testing.T, r *Report, kind, object, source, target string) {
	t.Helper()
	c, ok := find(r, kind, object)
	if !ok {
		t.Errorf("no %s check of %s", kind, object)
		return
	}
	if c.OK {
		t.Errorf("%s %s passed; want a difference", kind, object)
	}
	if !strings.Contains(c.Source, source) || !strings.Contains(c.Target, target) {
		t.Errorf("%s %s: source %q, target %q; want them to hold %q and %q", kind, object, c.Source, c.Target, source, target)
	}
}
