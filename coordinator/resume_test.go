package coordinator

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// TestResetRepartitioned checks that a resume empties a table that
// --after-schema made partitioned, partitions included (TRUNCATE ONLY is
// refused on it), and a plain one with ONLY, and forgets their markers.
func TestResetRepartitioned(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t, pgtest.Options{})
	if err := pg.Exec(ctx, "postgres", createMarkerSchema+`;
		CREATE TABLE public.events (id int, at date) PARTITION BY RANGE (at);
		CREATE TABLE public.events_a PARTITION OF public.events FOR VALUES FROM (MINVALUE) TO ('2024-01-01');
		CREATE TABLE public.events_b PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO (MAXVALUE);
		INSERT INTO public.events VALUES (1, '2023-06-01'), (2, '2024-06-01');
		CREATE TABLE public.plain (id int);
		CREATE TABLE public.plain_child () INHERITS (public.plain);
		INSERT INTO public.plain VALUES (1);
		INSERT INTO public.plain_child VALUES (2);
		INSERT INTO pgcaravan.unit_done (migration_id, unit_id) VALUES ('m', 1), ('m', 2), ('m', 3)`); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pg.URI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tables := []store.Table{
		{Table: plan.Table{OID: 1, Schema: "public", Name: "events", RelKind: "r", TargetRelKind: "p"}},
		{Table: plan.Table{OID: 2, Schema: "public", Name: "plain", RelKind: "r"}},
	}
	if err := resetTables(ctx, conn, "m", tables, []int64{1, 2}); err != nil {
		t.Fatalf("reset a repartitioned table: %v", err)
	}
	var events, plain, child, markers int
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM public.events), (SELECT count(*) FROM ONLY public.plain),
		(SELECT count(*) FROM public.plain_child), (SELECT count(*) FROM pgcaravan.unit_done)`).Scan(&events, &plain, &child, &markers)
	if err != nil {
		t.Fatal(err)
	}
	if events != 0 || plain != 0 || child != 1 || markers != 1 {
		t.Errorf("after the reset: %d rows in events (want 0), %d in plain (want 0), %d in its child (want 1, not reset), %d markers (want 1)",
			events, plain, child, markers)
	}
}
