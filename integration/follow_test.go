package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/integration/datagen"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// liveSchema adds tables the write workload exercises: a TOASTed column, a
// REPLICA IDENTITY FULL table with a json column (no = operator) and
// duplicate rows, a GENERATED ALWAYS identity, a table that gets TRUNCATEd,
// a bulk table for a 100k-row transaction, and unusual types.
const liveSchema = `
CREATE SCHEMA live;
CREATE TABLE live.kv (k int PRIMARY KEY, v text NOT NULL, big text NOT NULL, n numeric);
INSERT INTO live.kv SELECT g, 'v' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 200) i), g * 1.5
  FROM generate_series(1, 2000) g;
CREATE TABLE live.full_ri (a int, j json, t text);
ALTER TABLE live.full_ri REPLICA IDENTITY FULL;
INSERT INTO live.full_ri SELECT g % 50, json_build_object('g', g % 50), 'same' FROM generate_series(1, 500) g;
CREATE TABLE live.ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text, doubled int GENERATED ALWAYS AS (length(note) * 2) STORED);
INSERT INTO live.ident (note) SELECT 'n' || g FROM generate_series(1, 100) g;
CREATE TABLE live.trunc (id int PRIMARY KEY, v text);
INSERT INTO live.trunc SELECT g, 'x' FROM generate_series(1, 1000) g;
CREATE TABLE live.bulk (id bigint PRIMARY KEY, v text);
CREATE TYPE live.color AS ENUM ('red', 'green', 'blue');
CREATE TABLE live.types (id int PRIMARY KEY, i interval, a int[], ts tsvector, c live.color, r numrange, b bytea,
  f float8, big numeric, tz timestamptz, js jsonb, pt point, u uuid, x xml);
`

// workload writes to the source until ctx ends: every kind of change the
// apply must carry. It returns the number of transactions committed.
func workload(ctx context.Context, t *testing.T, uri string, round *atomic.Int64) error {
	conn, err := pgx.Connect(context.Background(), uri)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	exec := func(sql string, args ...any) error {
		_, err := conn.Exec(context.Background(), sql, args...)
		return err
	}
	for i := 1; ctx.Err() == nil; i++ {
		round.Store(int64(i))
		steps := []func() error{
			func() error { return exec(`INSERT INTO live.kv VALUES ($1, 'new', repeat('z', 5000), $1 / 7.0)`, 100000+i) },
			// Leaves the TOASTed column unchanged.
			func() error { return exec(`UPDATE live.kv SET v = v || '+' WHERE k = $1`, i%2000+1) },
			// Changes the primary key.
			func() error { return exec(`UPDATE live.kv SET k = k + 1000000 WHERE k = $1`, (i*7)%2000+1) },
			func() error { return exec(`DELETE FROM live.kv WHERE k = $1`, (i*13)%2000+1) },
			// REPLICA IDENTITY FULL with duplicates: exactly one row each.
			func() error { return exec(`UPDATE live.full_ri SET t = 'upd' || $1 WHERE ctid = (SELECT ctid FROM live.full_ri WHERE a = $2 AND t = 'same' LIMIT 1)`, i, i%50) },
			func() error { return exec(`DELETE FROM live.full_ri WHERE ctid = (SELECT ctid FROM live.full_ri WHERE a = $1 LIMIT 1)`, (i+25)%50) },
			func() error { return exec(`INSERT INTO live.ident (note) VALUES ($1)`, fmt.Sprintf("w%d", i)) },
			func() error { return exec(`UPDATE live.ident SET note = note || 'u' WHERE id = $1`, i%100+1) },
			// Moves a row to another partition.
			func() error {
				return exec(`UPDATE caravan.readings SET taken_on = taken_on + 365 WHERE (id, taken_on) IN (SELECT id, taken_on FROM caravan.readings WHERE taken_on < '2025-01-01' ORDER BY id LIMIT 1 OFFSET $1)`, i%50)
			},
			func() error {
				return exec(`INSERT INTO live.types VALUES ($1, interval '1 day 2 hours' * $1, ARRAY[$1, NULL, 3], to_tsvector('simple', 'a b ' || $1),
					'green', numrange($1, $1 + 10), decode(md5($1::text), 'hex'), 1.0/3 + $1, 12345678901234567890.123456789 * $1,
					'2024-02-29 12:00:00.123456+05:30', jsonb_build_object('k', $1, 'arr', jsonb_build_array(1, 'two', null)),
					point($1, -$1), gen_random_uuid(), xmlparse(content '<a>' || $1 || '</a>'))`, i)
			},
			func() error { return exec(`UPDATE caravan.customers SET name = name || '.' WHERE id = $1`, i%2000+1) },
			func() error { return exec(`UPDATE caravan.audit_log SET action = 'seen' WHERE ctid = (SELECT ctid FROM caravan.audit_log WHERE action <> 'seen' LIMIT 1)`) },
			func() error { return exec(`UPDATE public.rental SET return_date = now() WHERE rental_id = $1`, i%16000+1) },
			func() error { return exec(`INSERT INTO public.actor (first_name, last_name) VALUES ('LIVE', $1)`, fmt.Sprintf("A%d", i)) },
			// A transaction that rolls back leaves nothing.
			func() error {
				tx, err := conn.Begin(context.Background())
				if err != nil {
					return err
				}
				if _, err := tx.Exec(context.Background(), `INSERT INTO live.kv VALUES ($1, 'rolled back', '', 0)`, 900000+i); err != nil {
					return err
				}
				return tx.Rollback(context.Background())
			},
		}
		if i%10 == 0 {
			steps = append(steps, func() error {
				return exec(`TRUNCATE live.trunc; INSERT INTO live.trunc SELECT g, 'round ' || $1 FROM generate_series(1, 100) g`, i)
			})
		}
		if i == 20 {
			// One transaction of 100k rows.
			steps = append(steps, func() error {
				return exec(`INSERT INTO live.bulk SELECT g, md5(g::text) FROM generate_series(1, 100000) g`)
			})
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("workload round %d: %w", i, err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// liveFleet is a --follow migration as processes, with a workload running.
type liveFleet struct {
	*fleet
	cdc      *proc
	cdcDir   string
	stopLoad context.CancelFunc
	loadErr  chan error
	rounds   atomic.Int64
}

func newLiveFleet(t *testing.T, rows int) *liveFleet {
	t.Helper()
	if testing.Short() {
		t.Skip("live migration test: skipped with -short")
	}
	ctx := context.Background()
	f := &fleet{t: t, src: pgtest.Start(t, pgtest.Options{}), dst: pgtest.Start(t, pgtest.Options{}),
		dir: t.TempDir(), addr: freeAddr(t), workers: map[string]*proc{}}
	pgtest.LoadPagila(t, f.src, "app")
	if err := datagen.Generate(ctx, f.src.URI("app"), datagen.Options{BigRows: rows, LargeObjects: 10}); err != nil {
		t.Fatalf("generate: %v", err)
	}
	if err := f.src.Exec(ctx, "app", liveSchema); err != nil {
		t.Fatal(err)
	}
	if err := f.dst.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	f.srcURI, f.dstURI = f.src.URI("app"), f.dst.URI("app")
	lf := &liveFleet{fleet: f, cdcDir: t.TempDir(), loadErr: make(chan error, 1)}
	lf.admin = newFleetAdmin(t, f.addr)
	return lf
}

func (lf *liveFleet) startLoad() {
	ctx, cancel := context.WithCancel(context.Background())
	lf.stopLoad = cancel
	go func() { lf.loadErr <- workload(ctx, lf.t, lf.srcURI, &lf.rounds) }()
}

func (lf *liveFleet) startCDC() *proc {
	lf.cdc = start(lf.t, "cdcnode", "cdcnode", "--coordinator", lf.addr, "--source", lf.srcURI, "--target", lf.dstURI, "--dir", lf.cdcDir)
	return lf.cdc
}

// waitPhase waits for the coordinator's phase.
func (lf *liveFleet) waitPhase(p pb.Phase) {
	lf.waitFor("phase "+p.String(), func() bool { return lf.status().GetPhase() == p })
}

// cutoverAndVerify stops the workload, cuts over, verifies, cleans up.
func (lf *liveFleet) cutoverAndVerify() {
	t := lf.t
	lf.stopLoad()
	if err := <-lf.loadErr; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("workload: %v", err)
	}
	t.Logf("workload ran %d rounds", lf.rounds.Load())
	out, code := run(t, 5*time.Minute, "cutover", "--coordinator", lf.addr)
	if code != 0 || !strings.Contains(out, "cutover complete") {
		t.Fatalf("cutover exited %d:\n%s", code, out)
	}
	t.Logf("cutover:\n%s", out)
	mustVerify(t, lf.srcURI, lf.dstURI)
	out, code = run(t, 2*time.Minute, "cleanup", "--coordinator", lf.addr)
	if code != 0 || !strings.Contains(out, "dropped slot") {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	if code := lf.coord.wait(t, time.Minute); code != 0 {
		t.Fatalf("coordinator exited %d after cleanup", code)
	}
	if code := lf.cdc.wait(t, time.Minute); code != 0 {
		t.Fatalf("cdcnode exited %d after cleanup", code)
	}
	for name, w := range lf.workers {
		if code := w.wait(t, time.Minute); code != 0 {
			t.Fatalf("%s exited %d", name, code)
		}
	}
	conn, err := pgx.Connect(context.Background(), lf.srcURI)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var slots, pubs int
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)`).Scan(&slots, &pubs); err != nil {
		t.Fatal(err)
	}
	if slots != 0 || pubs != 0 {
		t.Errorf("after cleanup the source still has %d slots and %d publications", slots, pubs)
	}
	// Cleanup is idempotent, and works without a coordinator.
	out, code = run(t, time.Minute, "cleanup", "--dir", lf.dir, "--source", lf.srcURI, "--target", lf.dstURI)
	if code != 0 || !strings.Contains(out, "already clean") {
		t.Errorf("second cleanup exited %d:\n%s", code, out)
	}
}

// TestLiveMigration: pagila plus generated data, copied while a workload
// writes, followed, cut over and verified equal, table by table and
// sequence by sequence.
func TestLiveMigration(t *testing.T) {
	lf := newLiveFleet(t, 100_000)
	lf.startCoordinator("--follow", "--replica-identity-full")
	lf.startLoad()
	lf.startCDC()
	lf.startWorker("w1", "--jobs", "2")
	lf.startWorker("w2", "--jobs", "2")
	lf.waitPhase(pb.Phase_PHASE_FOLLOW)
	// Keep writing while following, then check the lag is reported.
	time.Sleep(3 * time.Second)
	s := lf.status()
	if s.GetCdc() == nil || s.GetCdc().GetAppliedLsn() == "0/0" || !s.GetCdc().GetConnected() {
		t.Errorf("status while following: %v", s.GetCdc())
	}
	lf.cutoverAndVerify()
}

