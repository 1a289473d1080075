package cdcnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/pgcaravan/pgcaravan/cdcnode/spool"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// commit is a pgoutput Commit message for a transaction ending at end.
func commit(end uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, end-0x30)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 0)
}

func testNode(t *testing.T, dir string) *Node {
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{SegmentSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return &Node{log: hclog.NewNullLogger(), spool: sp}
}

// TestRecoverSpool: a spool that a crash left inside a transaction (its
// records reached the files, its commit did not) is cut back to the last
// commit, found by reading the spool through, across segments; one that
// ends with a commit is left as it is.
func TestRecoverSpool(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := testNode(t, dir)
	tr := &appendTracker{n: n}
	insert := append([]byte{'I'}, make([]byte, 100)...)
	// Transaction 1 ends at 0x2000; transaction 2 began before it
	// committed, so its first change comes with a lower LSN.
	for _, r := range []struct {
		lsn uint64
		p   []byte
	}{{0x1000, []byte{'B'}}, {0x1000, insert}, {0x1800, insert}, {0x2000, commit(0x2000)},
		{0x1900, []byte{'B'}}, {0x1900, insert}, {0x2100, insert}, {0x2200, insert}} {
		if err := tr.Append(r.lsn, r.p); err != nil {
			t.Fatalf("append at %x: %v", r.lsn, err)
		}
	}
	// The crash: everything is on disk, but the last commit is
	// transaction 1's.
	if err := n.spool.Sync(); err != nil {
		t.Fatal(err)
	}
	n.spool.Close()
	n = testNode(t, dir)
	end, err := n.recoverSpool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if end != 0x2000 {
		t.Errorf("recoverSpool = %s, want 0/2000", end)
	}
	if got := n.spool.Durable(); got != 0x2000 {
		t.Errorf("spool ends at %s after recovery, want 0/2000 (the commit)", pglogrepl.LSN(got))
	}
	// Appending goes on from there, and a spool that ends with a commit
	// is kept whole.
	tr = &appendTracker{n: n, last: n.spool.Durable()}
	for _, r := range []struct {
		lsn uint64
		p   []byte
	}{{0x1900, []byte{'B'}}, {0x1900, insert}, {0x3000, commit(0x3000)}} {
		if err := tr.Append(r.lsn, r.p); err != nil {
			t.Fatalf("append at %x: %v", r.lsn, err)
		}
	}
	if err := n.spool.Sync(); err != nil {
		t.Fatal(err)
	}
	last := n.spool.Durable()
	if end, err = n.recoverSpool(ctx); err != nil || end != 0x3000 || n.spool.Durable() != last {
		t.Errorf("recoverSpool of a whole spool = %s, %v; spool ends at %s, want 0/3000 and %s",
			end, err, pglogrepl.LSN(n.spool.Durable()), pglogrepl.LSN(last))
	}
}

// TestRecoverSpoolWithoutCommit: a spool holding only part of a
// transaction is emptied; streaming starts again from the slot.
func TestRecoverSpoolWithoutCommit(t *testing.T) {
	n := testNode(t, t.TempDir())
	tr := &appendTracker{n: n}
	for _, lsn := range []uint64{0x1000, 0x1100} {
		if err := tr.Append(lsn, []byte{'I', 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.spool.Sync(); err != nil {
		t.Fatal(err)
	}
	end, err := n.recoverSpool(context.Background())
	if err != nil || end != 0 || n.spool.Durable() != 0 {
		t.Errorf("recoverSpool = %s, %v; spool ends at %s; want 0, nil, 0", end, err, pglogrepl.LSN(n.spool.Durable()))
	}
}

// TestSpoolLostIsRefused: a cdcnode whose spool is empty refuses to stream
// once the slot has confirmed changes past what the target's origin has
// applied (the spool that held them is gone), and streams when nothing is
// missing: a new slot, or an origin that applied everything confirmed.
func TestSpoolLostIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL: skipped with -short")
	}
	ctx := context.Background()
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	n := testNode(t, t.TempDir())
	var err error
	if n.src, n.dst, err = pguri.ParsePair(src.URI("postgres"), dst.URI("postgres")); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, src.URI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var start string
	if err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot('lost', 'pgoutput')`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	if err := dst.Exec(ctx, "postgres", `SELECT pg_replication_origin_create('lost_origin')`); err != nil {
		t.Fatal(err)
	}
	w := &pb.WatchPhaseResponse{SlotName: "lost", StartLsn: start, OriginName: "lost_origin"}

	// 1. A new slot: nothing is missing.
	if err := n.checkSpoolNotLost(ctx, w); err != nil {
		t.Fatalf("new slot: %v", err)
	}
	// 2. The slot confirmed changes the target never got.
	var confirmed string
	err = conn.QueryRow(ctx, `SELECT (pg_replication_slot_advance('lost', pg_switch_wal())).end_lsn::text`).Scan(&confirmed)
	if err != nil {
		t.Fatal(err)
	}
	err = n.checkSpoolNotLost(ctx, w)
	if !errors.Is(err, ErrSpoolLost) || !strings.Contains(err.Error(), "start the migration over") {
		t.Fatalf("confirmed %s past the start %s with nothing applied: got %v, want ErrSpoolLost saying what to do", confirmed, start, err)
	}
	// 3. The target's origin applied everything confirmed: nothing is missing.
	if err := dst.Exec(ctx, "postgres", fmt.Sprintf(`SELECT pg_replication_origin_advance('lost_origin', '%s')`, confirmed)); err != nil {
		t.Fatal(err)
	}
	if err := n.checkSpoolNotLost(ctx, w); err != nil {
		t.Fatalf("origin at the confirmed position: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot('lost')`); err != nil {
		t.Fatal(err)
	}
}
