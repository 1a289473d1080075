package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
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
// apply must carry. round counts the rounds begun. Without pagila the steps
// on pagila's tables are left out. Every parameter is cast: a parameter
// used in two contexts must resolve to one type.
func workload(ctx context.Context, uri string, pagila bool, round *atomic.Int64) error {
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
			func() error {
				return exec(`INSERT INTO live.kv VALUES ($1::int, 'new', repeat('z', 5000), $1::int / 7.0)`, 100000+i)
			},
			// Leaves the TOASTed column unchanged.
			func() error { return exec(`UPDATE live.kv SET v = v || '+' WHERE k = $1::int`, i%2000+1) },
			// Changes the primary key.
			func() error { return exec(`UPDATE live.kv SET k = k + 1000000 WHERE k = $1::int`, (i*7)%2000+1) },
			func() error { return exec(`DELETE FROM live.kv WHERE k = $1::int`, (i*13)%2000+1) },
			// REPLICA IDENTITY FULL with duplicates: exactly one row each.
			func() error {
				return exec(`UPDATE live.full_ri SET t = 'upd' || $1::int WHERE ctid = (SELECT ctid FROM live.full_ri WHERE a = $2::int AND t = 'same' LIMIT 1)`, i, i%50)
			},
			func() error {
				return exec(`DELETE FROM live.full_ri WHERE ctid = (SELECT ctid FROM live.full_ri WHERE a = $1::int LIMIT 1)`, (i+25)%50)
			},
			func() error { return exec(`INSERT INTO live.ident (note) VALUES ($1::text)`, fmt.Sprintf("w%d", i)) },
			func() error { return exec(`UPDATE live.ident SET note = note || 'u' WHERE id = $1::int`, i%100+1) },
			// Moves a row to another partition.
			func() error {
				return exec(`UPDATE caravan.readings SET taken_on = taken_on + 365 WHERE (id, taken_on) IN (SELECT id, taken_on FROM caravan.readings WHERE taken_on < '2025-01-01' ORDER BY id LIMIT 1 OFFSET $1::int)`, i%50)
			},
			func() error {
				return exec(`INSERT INTO live.types VALUES ($1::int, interval '1 day 2 hours' * $1::int, ARRAY[$1::int, NULL, 3], to_tsvector('simple', 'a b ' || $1::int),
					'green', numrange($1::int, $1::int + 10), decode(md5($1::int::text), 'hex'), 1.0/3 + $1::int, 12345678901234567890.123456789 * $1::int,
					'2024-02-29 12:00:00.123456+05:30', jsonb_build_object('k', $1::int, 'arr', jsonb_build_array(1, 'two', null)),
					point($1::int, -$1::int), gen_random_uuid(), xmlparse(content '<a>' || $1::int || '</a>'))`, i)
			},
			// Changes to a row of unusual types, found by its key.
			func() error {
				return exec(`UPDATE live.types SET f = f * 3, js = js || '{"u": true}', pt = point(0, 0), x = xmlparse(content '<b/>') WHERE id = $1::int`, i/2+1)
			},
			func() error {
				return exec(`UPDATE caravan.customers SET name = name || '.' WHERE id = $1::int AND length(name) < 20`, i%2000+1)
			},
			// No primary key: REPLICA IDENTITY FULL (--replica-identity-full).
			func() error {
				return exec(`UPDATE caravan.audit_log SET action = 'seen' WHERE ctid = (SELECT ctid FROM caravan.audit_log WHERE action <> 'seen' LIMIT 1)`)
			},
			// A transaction that rolls back leaves nothing.
			func() error {
				tx, err := conn.Begin(context.Background())
				if err != nil {
					return err
				}
				if _, err := tx.Exec(context.Background(), `INSERT INTO live.kv VALUES ($1::int, 'rolled back', '', 0)`, 900000+i); err != nil {
					return err
				}
				return tx.Rollback(context.Background())
			},
		}
		if pagila {
			steps = append(steps,
				func() error {
					return exec(`UPDATE public.rental SET return_date = now() WHERE rental_id = $1::int`, i%16000+1)
				},
				func() error {
					return exec(`INSERT INTO public.actor (first_name, last_name) VALUES ('LIVE', $1::text)`, fmt.Sprintf("A%d", i))
				})
		}
		if i%10 == 0 {
			steps = append(steps, func() error {
				tx, err := conn.Begin(context.Background())
				if err != nil {
					return err
				}
				defer tx.Rollback(context.Background())
				if _, err := tx.Exec(context.Background(), `TRUNCATE live.trunc`); err != nil {
					return err
				}
				if _, err := tx.Exec(context.Background(), `INSERT INTO live.trunc SELECT g, 'round ' || $1::int FROM generate_series(1, 100) g`, i); err != nil {
					return err
				}
				return tx.Commit(context.Background())
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
	pagila   bool
	cdc      *proc
	cdcDir   string
	stopLoad context.CancelFunc
	loadErr  chan error
	rounds   atomic.Int64
	bulkID   atomic.Int64 // the last id given to live.bulk by burst
	held     pgx.Tx       // holds live.kv's copy (holdCopy)
}

// newLiveFleet makes the two clusters: datagen's schema with rows in
// caravan.events, liveSchema, and pagila if asked.
func newLiveFleet(t *testing.T, rows int, pagila bool) *liveFleet {
	t.Helper()
	if testing.Short() {
		t.Skip("live migration test: skipped with -short")
	}
	ctx := context.Background()
	f := &fleet{t: t, src: pgtest.Start(t, pgtest.Options{}), dst: pgtest.Start(t, pgtest.Options{}),
		dir: t.TempDir(), addr: freeAddr(t), workers: map[string]*proc{}}
	if pagila {
		pgtest.LoadPagila(t, f.src, "app")
	} else if err := f.src.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
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
	lf := &liveFleet{fleet: f, pagila: pagila, cdcDir: t.TempDir(), loadErr: make(chan error, 1)}
	lf.bulkID.Store(10_000_000)
	lf.admin = newFleetAdmin(t, f.addr)
	return lf
}

func (lf *liveFleet) startLoad() {
	ctx, cancel := context.WithCancel(context.Background())
	lf.stopLoad = cancel
	go func() { lf.loadErr <- workload(ctx, lf.srcURI, lf.pagila, &lf.rounds) }()
	lf.t.Cleanup(cancel)
}

// startCDC starts a cdcnode on the fleet's one spool directory (again,
// after a kill).
func (lf *liveFleet) startCDC() *proc {
	lf.cdc = start(lf.t, "cdcnode", "cdcnode", "--coordinator", lf.addr, "--source", lf.srcURI, "--target", lf.dstURI, "--dir", lf.cdcDir)
	return lf.cdc
}

// kill SIGKILLs p and waits for it to be gone.
func (lf *liveFleet) kill(p *proc) {
	lf.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		lf.t.Fatal(err)
	}
	p.wait(lf.t, time.Minute)
	lf.t.Logf("killed %s", p.name)
}

// waitFor polls cond every 100ms for up to 3 minutes, and gives up at once
// if the coordinator or the workload has stopped on its own.
func (lf *liveFleet) waitFor(what string, cond func() bool) {
	lf.t.Helper()
	lf.fleet.waitFor(what, func() bool {
		select {
		case <-lf.coord.done:
			lf.t.Fatalf("coordinator exited while waiting for %s:\n%s", what, tail(lf.coord.output(), 30))
		default:
		}
		select {
		case err := <-lf.loadErr:
			lf.t.Fatalf("workload stopped while waiting for %s: %v", what, err)
		default:
		}
		return cond()
	})
}

// waitPhase waits for the coordinator's phase.
func (lf *liveFleet) waitPhase(p pb.Phase) {
	lf.t.Helper()
	lf.waitFor("phase "+p.String(), func() bool { return lf.status().GetPhase() == p })
}

// cdcStatus is the coordinator's view of the cdcnode, or nil.
func (lf *liveFleet) cdcStatus() *pb.CDCStatus { return lf.status().GetCdc() }

func lsn(s string) pglogrepl.LSN {
	l, _ := pglogrepl.ParseLSN(s)
	return l
}

// holdCopy keeps live.kv from being copied: a SHARE lock on the target's
// table blocks the copy's TRUNCATE and COPY until releaseCopy, while the
// workload keeps writing to it on the source.
func (lf *liveFleet) holdCopy() {
	lf.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, lf.dstURI)
	if err != nil {
		lf.t.Fatal(err)
	}
	lf.t.Cleanup(func() { conn.Close(context.Background()) })
	if lf.held, err = conn.Begin(ctx); err != nil {
		lf.t.Fatal(err)
	}
	if _, err := lf.held.Exec(ctx, `LOCK TABLE live.kv IN SHARE MODE`); err != nil {
		lf.t.Fatal(err)
	}
}

func (lf *liveFleet) releaseCopy() {
	lf.t.Helper()
	if err := lf.held.Rollback(context.Background()); err != nil {
		lf.t.Fatal(err)
	}
}

// waitHeld waits until every copy unit is done but live.kv's, which a
// worker holds.
func (lf *liveFleet) waitHeld() {
	lf.t.Helper()
	lf.waitFor("every table but live.kv to be copied", func() bool {
		s := lf.status()
		if s == nil {
			return false
		}
		for _, tb := range s.GetTables() {
			kv := tb.GetSchema() == "live" && tb.GetName() == "kv"
			if !kv && tb.GetCopyUnitsDone() < tb.GetCopyUnits() {
				return false
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		units, err := lf.admin.ListUnits(ctx, &pb.ListUnitsRequest{State: pb.UnitState_UNIT_STATE_RUNNING, Table: "live.kv"})
		return err == nil && len(units.GetUnits()) > 0
	})
}

// burst inserts rows into live.bulk on the source in txns transactions.
func (lf *liveFleet) burst(txns, rows int) {
	lf.t.Helper()
	if err := lf.burstErr(txns, rows); err != nil {
		lf.t.Fatal(err)
	}
}

// burstErr is burst for goroutines other than the test's.
func (lf *liveFleet) burstErr(txns, rows int) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, lf.srcURI)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for range txns {
		from := lf.bulkID.Add(int64(rows)) - int64(rows) + 1
		if _, err := conn.Exec(ctx, `INSERT INTO live.bulk SELECT g, md5(g::text) FROM generate_series($1::bigint, $2::bigint) g`, from, from+int64(rows)-1); err != nil {
			return fmt.Errorf("burst: %w", err)
		}
	}
	return nil
}

// sourceLSN is the source's current WAL insert position.
func (lf *liveFleet) sourceLSN() pglogrepl.LSN {
	lf.t.Helper()
	conn, err := pgx.Connect(context.Background(), lf.srcURI)
	if err != nil {
		lf.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		lf.t.Fatal(err)
	}
	return lsn(s)
}

// waitSpooled waits until the cdcnode holds every change the source had
// written when it was called.
func (lf *liveFleet) waitSpooled() {
	lf.t.Helper()
	want := lf.sourceLSN()
	lf.waitFor(fmt.Sprintf("the cdcnode to spool up to %s", want), func() bool {
		return lsn(lf.cdcStatus().GetFlushedLsn()) >= want
	})
}

// backlog builds a backlog of changes while the copy is held, lets the
// copy finish, and waits until the cdcnode is applying it, in phase
// follow, with at least a megabyte still to apply.
func (lf *liveFleet) backlog() {
	lf.t.Helper()
	lf.burst(300, 500)
	lf.waitSpooled()
	lf.releaseCopy()
	lf.waitPhase(pb.Phase_PHASE_FOLLOW)
	lf.waitFor("the cdcnode to be applying a backlog", func() bool {
		c := lf.cdcStatus()
		applied, flushed := lsn(c.GetAppliedLsn()), lsn(c.GetFlushedLsn())
		return c.GetChangesApplied() > 0 && applied > 0 && flushed > applied+1<<20
	})
	c := lf.cdcStatus()
	lf.t.Logf("applying: applied %s, flushed %s, %d changes applied", c.GetAppliedLsn(), c.GetFlushedLsn(), c.GetChangesApplied())
}

// stopWorkload ends the workload and fails the test if it failed.
func (lf *liveFleet) stopWorkload() {
	lf.t.Helper()
	lf.stopLoad()
	if err := <-lf.loadErr; err != nil && !errors.Is(err, context.Canceled) {
		lf.t.Fatalf("workload: %v", err)
	}
	lf.t.Logf("workload ran %d rounds", lf.rounds.Load())
}

// cutover runs `pgcaravan cutover` (writes have stopped) and verifies the
// target equal to the source.
func (lf *liveFleet) cutover() {
	t := lf.t
	t.Helper()
	out, code := run(t, 5*time.Minute, "cutover", "--coordinator", lf.addr)
	if code != 0 || !strings.Contains(out, "cutover complete") {
		t.Fatalf("cutover exited %d:\n%s", code, out)
	}
	t.Logf("cutover:\n%s", out)
	mustVerify(t, lf.srcURI, lf.dstURI)
}

// sourceClean fails the test if a slot or publication is left on the source.
func (lf *liveFleet) sourceClean() {
	t := lf.t
	t.Helper()
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
}

// cutoverAndVerify stops the workload, cuts over, verifies, cleans up, and
// checks every process exits 0.
func (lf *liveFleet) cutoverAndVerify() {
	t := lf.t
	t.Helper()
	lf.stopWorkload()
	lf.cutover()
	out, code := run(t, 2*time.Minute, "cleanup", "--coordinator", lf.addr)
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
	lf.sourceClean()
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
	lf := newLiveFleet(t, 100_000, true)
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
