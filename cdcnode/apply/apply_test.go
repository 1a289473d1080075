package apply_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/cdcnode/apply"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// schema is created on both sides: every kind of table the apply treats
// differently.
const schema = `
CREATE TABLE kv (k int PRIMARY KEY, v text NOT NULL, big text NOT NULL);
CREATE TABLE full_ri (a int, j json, t text);
ALTER TABLE full_ri REPLICA IDENTITY FULL;
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text, doubled int GENERATED ALWAYS AS (length(note) * 2) STORED);
CREATE TABLE vk (k varchar(20) PRIMARY KEY, n numeric, a int[], f float8);
CREATE TABLE wide (id int PRIMARY KEY, c1 int, c2 int, c3 int, c4 int, c5 int, c6 int, c7 int, c8 int, c9 int);
CREATE TABLE epoch (id int PRIMARY KEY, v text);
CREATE TABLE trunc (id int PRIMARY KEY, v text);
CREATE TABLE uq (id int PRIMARY KEY, email text UNIQUE);
`

var tables = []string{"kv", "full_ri", "ident", "vk", "wide", "epoch", "trunc", "uq"}

// changes run on the source after the slot exists, one transaction per
// entry. The epoch table's first rows are "copied" to the target at
// epochAt: changes committed before it must be skipped.
var changes = []string{
	`INSERT INTO kv SELECT g, 'v' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 200) i) FROM generate_series(1, 300) g`,
	`INSERT INTO kv SELECT g, 'w' || g, 'small' FROM generate_series(301, 423) g`,
	`INSERT INTO epoch SELECT g, 'before' FROM generate_series(1, 10) g`,
	"epochAt",
	// Unchanged TOAST values are not sent: the SET list leaves them out.
	`UPDATE kv SET v = v || '+' WHERE k <= 10`,
	// A key change, deletes, and a rollback that leaves nothing.
	`UPDATE kv SET k = k + 1000 WHERE k BETWEEN 11 AND 20`,
	`DELETE FROM kv WHERE k BETWEEN 21 AND 30`,
	`BEGIN; INSERT INTO kv VALUES (-1, 'rolled back', ''); ROLLBACK`,
	// Duplicates without a key: exactly one row changes each time; json
	// has no = operator.
	`INSERT INTO full_ri SELECT g % 5, json_build_object('g', g % 5), 'same' FROM generate_series(1, 20) g`,
	`UPDATE full_ri SET t = 'one' WHERE ctid = (SELECT ctid FROM full_ri WHERE a = 2 LIMIT 1)`,
	`DELETE FROM full_ri WHERE ctid = (SELECT ctid FROM full_ri WHERE a = 3 LIMIT 1)`,
	`INSERT INTO ident (note) SELECT 'n' || g FROM generate_series(1, 30) g`,
	`UPDATE ident SET note = note || 'u' WHERE id % 3 = 0`,
	// A varchar key (no = of its own: text's), arrays, exact numerics.
	`INSERT INTO vk SELECT 'key' || g, 12345678901234567890.123456789 * g, ARRAY[g, NULL, 3], 1.0 / 3 + g FROM generate_series(1, 50) g`,
	`UPDATE vk SET n = n + 1, a = a || 4 WHERE k IN ('key1', 'key2', 'key3')`,
	`UPDATE vk SET k = k || 'x' WHERE k = 'key4'`,
	`DELETE FROM vk WHERE k = 'key5'`,
	// More rows than one INSERT's parameters allow at 100 rows a statement.
	`INSERT INTO wide SELECT g, g, g, g, g, g, g, g, g, g FROM generate_series(1, 7000) g`,
	// Many rows of one table setting the same columns: multi-row UPDATEs.
	`UPDATE wide SET c1 = c1 + 1, c9 = NULL WHERE id <= 257`,
	`UPDATE epoch SET v = 'after' WHERE id <= 5`,
	`INSERT INTO epoch SELECT g, 'after' FROM generate_series(11, 20) g`,
	// A hot row, updated by many transactions: its updates are merged.
	`UPDATE kv SET v = v || '1' WHERE k = 1`, `UPDATE kv SET v = v || '2' WHERE k = 1`, `UPDATE kv SET v = v || '3' WHERE k = 1`,
	`UPDATE kv SET v = v || '4' WHERE k = 1`, `UPDATE kv SET v = v || '5' WHERE k = 1`, `UPDATE kv SET big = 'changed' WHERE k = 1`,
	`UPDATE kv SET v = v || '6' WHERE k = 1`,
	// A second unique index: values move between rows, and merging or
	// reordering the updates would collide on it.
	`INSERT INTO uq VALUES (1, 'a'), (2, 'b')`,
	`BEGIN; UPDATE uq SET email = 'tmp' WHERE id = 1; UPDATE uq SET email = 'a' WHERE id = 2; UPDATE uq SET email = 'b' WHERE id = 1; COMMIT`,
	// Inserts into two tables in turn, and a TRUNCATE in the middle.
	`BEGIN; INSERT INTO trunc VALUES (1, 'a'); INSERT INTO kv VALUES (5000, 'x', 'y'); INSERT INTO trunc VALUES (2, 'b'); COMMIT`,
	`BEGIN; TRUNCATE trunc; INSERT INTO trunc VALUES (3, 'c'); INSERT INTO kv VALUES (5001, 'x', 'y'); COMMIT`,
}

// memSource hands out captured records; once they are all out it closes
// drained and blocks like an idle spool.
type memSource struct {
	recs    []apply.Record
	next    int
	drained chan struct{}
	once    sync.Once
}

func newSource(recs []apply.Record) *memSource {
	return &memSource{recs: recs, drained: make(chan struct{})}
}

func (s *memSource) Next(ctx context.Context) (apply.Record, error) {
	if s.next < len(s.recs) {
		s.next++
		return s.recs[s.next-1], nil
	}
	s.once.Do(func() { close(s.drained) })
	<-ctx.Done()
	return apply.Record{}, ctx.Err()
}

type fixture struct {
	src, dst *pgtest.Cluster
	records  []apply.Record
	end      pglogrepl.LSN // the source's WAL position after the last change
	epochLSN pglogrepl.LSN
}

// setup makes the changes on the source and captures them from a real
// slot through pgoutput; the target gets the schema, the epoch table's
// copied rows and a replication origin.
func setup(t *testing.T) *fixture {
	ctx := context.Background()
	f := &fixture{src: pgtest.Start(t, pgtest.Options{}), dst: pgtest.Start(t, pgtest.Options{})}
	for _, c := range []*pgtest.Cluster{f.src, f.dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, "app", schema); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.src.Exec(ctx, "app", `CREATE PUBLICATION p FOR ALL TABLES`); err != nil {
		t.Fatal(err)
	}
	if err := f.dst.Exec(ctx, "app", `SELECT pg_replication_origin_create('test')`); err != nil {
		t.Fatal(err)
	}
	repl, err := pgconn.Connect(ctx, f.src.URI("app")+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(ctx)
	if _, err := pglogrepl.CreateReplicationSlot(ctx, repl, "s", "pgoutput", pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.src.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range changes {
		if sql != "epochAt" {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			continue
		}
		f.epochLSN = currentLSN(t, conn)
		if err := f.dst.Exec(ctx, "app", `INSERT INTO epoch SELECT g, 'before' FROM generate_series(1, 10) g`); err != nil {
			t.Fatal(err)
		}
	}
	f.end = currentLSN(t, conn)
	f.records = capture(t, repl, f.end)
	return f
}

func currentLSN(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// capture receives from the slot until a transaction ends at or past end.
// LSNs are raised to keep rising, as the cdcnode spools them.
func capture(t *testing.T, repl *pgconn.PgConn, end pglogrepl.LSN) []apply.Record {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := pglogrepl.StartReplication(ctx, repl, "s", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'p'"}})
	if err != nil {
		t.Fatal(err)
	}
	var recs []apply.Record
	var last uint64
	for {
		raw, err := repl.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		cd, ok := raw.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		x, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		last = max(uint64(x.WALStart), last+1)
		recs = append(recs, apply.Record{LSN: last, Payload: append([]byte(nil), x.WALData...)})
		if x.WALData[0] == 'C' {
			var c pglogrepl.CommitMessage
			if err := c.Decode(x.WALData[1:]); err != nil {
				t.Fatal(err)
			}
			if c.TransactionEndLSN >= end {
				return recs
			}
		}
	}
}

// run applies src on a new target session until the endpos is reached
// (endpos set) or until src is drained and a little more (crash).
func (f *fixture) run(t *testing.T, src *memSource, cfg apply.Config, endpos pglogrepl.LSN) (applied int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgx.Connect(ctx, f.dst.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var changes atomic.Int64
	hooks := apply.Hooks{
		EpochLSN: func(schema, name string) pglogrepl.LSN {
			if schema == "public" && name == "epoch" {
				return f.epochLSN
			}
			return 0
		},
		Endpos:   func() pglogrepl.LSN { return endpos },
		Received: func() pglogrepl.LSN { return f.end },
		Settled:  func() bool { return true },
		Applied:  func(p apply.Progress) { changes.Add(p.Changes) },
		Reached:  cancel,
	}
	if endpos == 0 {
		go func() {
			select {
			case <-src.drained:
				time.Sleep(200 * time.Millisecond)
			case <-ctx.Done():
			}
			cancel()
		}()
	}
	cfg.Origin = "test"
	done := make(chan error, 1)
	go func() { done <- apply.Run(ctx, conn, src, cfg, hooks) }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cancel()
		err = <-done
		t.Fatalf("apply did not finish: %v", err)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("apply: %v", err)
	}
	return changes.Load()
}

// same fails the test unless every table holds the same rows on both sides.
func (f *fixture) same(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	read := func(c *pgtest.Cluster) map[string]string {
		conn, err := pgx.Connect(ctx, c.URI("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		out := map[string]string{}
		for _, tb := range tables {
			var rows string
			err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) || ': ' || coalesce(string_agg(x::text, ' ' ORDER BY x::text), '') FROM %s x`, tb)).Scan(&rows)
			if err != nil {
				t.Fatal(err)
			}
			out[tb] = rows
		}
		return out
	}
	want, got := read(f.src), read(f.dst)
	for _, tb := range tables {
		if want[tb] != got[tb] {
			t.Errorf("table %s differs:\nsource %.300s\ntarget %.300s", tb, want[tb], got[tb])
		}
	}
}

// TestApply feeds changes captured from a real slot to the applier on a
// real target: a run cut off mid-way (a crash, part of it never committed),
// a full run that resumes from the origin, and a run again that applies
// nothing twice. Small batches and chunks make transactions span target
// transactions and round trips.
func TestApply(t *testing.T) {
	f := setup(t)
	cfg := apply.Config{MaxTxns: 3, MaxChanges: 500, MaxDelay: 20 * time.Millisecond, Chunk: 7}
	// 1. A crash: only the first part arrives, cut inside a transaction.
	cut := len(f.records) * 2 / 3
	for cut < len(f.records) && f.records[cut].Payload[0] == 'C' {
		cut++
	}
	f.run(t, newSource(f.records[:cut]), cfg, 0)
	// 2. Everything, from the start: what the origin covers is skipped.
	f.run(t, newSource(f.records), cfg, f.end)
	f.same(t)
	// 3. Again: nothing is applied twice.
	if n := f.run(t, newSource(f.records), apply.DefaultConfig(), f.end); n != 0 {
		t.Errorf("a run over applied records applied %d changes, want 0", n)
	}
	f.same(t)
}

// TestApplyBatched: with the default batching, many source transactions
// go into one target transaction and held updates go out as multi-row
// UPDATEs; the result is the same.
func TestApplyBatched(t *testing.T) {
	f := setup(t)
	f.run(t, newSource(f.records), apply.DefaultConfig(), f.end)
	f.same(t)
}

// TestApplyEndpos: changes past the endpos are not applied.
func TestApplyEndpos(t *testing.T) {
	f := setup(t)
	// The endpos falls before the last two transactions (into trunc and kv).
	commits := 0
	var endpos pglogrepl.LSN
	for i := len(f.records) - 1; i >= 0; i-- {
		if f.records[i].Payload[0] != 'B' {
			continue
		}
		if commits++; commits == 2 {
			var b pglogrepl.BeginMessage
			if err := b.Decode(f.records[i].Payload[1:]); err != nil {
				t.Fatal(err)
			}
			endpos = b.FinalLSN - 1
			break
		}
	}
	f.run(t, newSource(f.records), apply.DefaultConfig(), endpos)
	conn, err := pgx.Connect(context.Background(), f.dst.URI("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var trunc, kv int
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM trunc), (SELECT count(*) FROM kv WHERE k >= 5000)`).Scan(&trunc, &kv); err != nil {
		t.Fatal(err)
	}
	if trunc != 0 || kv != 0 {
		t.Errorf("past the endpos: trunc has %d rows and kv %d rows from the last transactions, want none", trunc, kv)
	}
}
