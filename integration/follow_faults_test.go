package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// liveFault is a fault injected into a live migration at a known moment.
type liveFault struct {
	// duringCopy runs while every table but live.kv is copied and live.kv's
	// copy is held (holdCopy), the workload writing to it all along.
	duringCopy func(lf *liveFleet)
	// whileApplying runs in phase follow while the cdcnode applies a
	// backlog; nil means no backlog is built.
	whileApplying func(lf *liveFleet)
}

// runLiveFault runs a --follow migration of generated data with the
// workload on, injects the fault, and ends with a cutover, a verification
// that every table and sequence is equal (counts and checksums: no row lost
// or applied twice), and cleanup.
func runLiveFault(t *testing.T, fault liveFault) *liveFleet {
	t.Helper()
	lf := newLiveFleet(t, 50_000, false)
	lf.startCoordinator("--follow", "--replica-identity-full")
	lf.startLoad()
	lf.startCDC()
	lf.waitPhase(pb.Phase_PHASE_COPY)
	lf.holdCopy()
	lf.startWorker("w1", "--jobs", "2")
	lf.waitHeld()
	if fault.duringCopy != nil {
		fault.duringCopy(lf)
	}
	if fault.whileApplying != nil {
		lf.backlog()
		fault.whileApplying(lf)
	} else {
		lf.releaseCopy()
		lf.waitPhase(pb.Phase_PHASE_FOLLOW)
	}
	// Follow for a while after the fault, the workload still writing.
	lf.waitFor("the cdcnode to apply past the fault", func() bool {
		c := lf.cdcStatus()
		return c.GetConnected() && lsn(c.GetAppliedLsn()) >= lf.sourceLSN()-1<<20
	})
	lf.cutoverAndVerify()
	return lf
}

// TestLiveKillCDCNode: SIGKILL the cdcnode while it receives a 200k-row
// transaction during the copy, and again while it applies a backlog after
// the backfill; each time a new one starts on the same spool. The first
// cuts the spool back to its last whole transaction; the second resumes
// after the target's replication origin.
func TestLiveKillCDCNode(t *testing.T) {
	runLiveFault(t, liveFault{
		duringCopy: func(lf *liveFleet) {
			// The source sends a transaction's changes after its commit, in
			// one run; the spool's files grow as they arrive, and become
			// durable at the commit. Kill once a few megabytes of it are in.
			before := lf.spoolBytes()
			big := make(chan struct{})
			go func() {
				defer close(big)
				if err := lf.burstErr(1, 300_000); err != nil {
					t.Error(err)
				}
			}()
			deadline := time.Now().Add(3 * time.Minute)
			for lf.spoolBytes() < before+4<<20 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			lf.kill(lf.cdc)
			<-big
			lf.startCDC()
			lf.waitSpooled()
			if strings.Contains(lf.cdc.output(), "spool ends inside a transaction") {
				t.Log("the kill left part of the big transaction in the spool; the restart cut it off")
			} else {
				t.Log("the kill landed on a transaction boundary")
			}
		},
		whileApplying: func(lf *liveFleet) {
			lf.kill(lf.cdc)
			lf.startCDC()
		},
	})
}

// TestLiveRestartTarget: restart the target server while the cdcnode
// applies a backlog. The transaction in flight is lost with the server;
// the cdcnode reconnects and resumes after the replication origin.
func TestLiveRestartTarget(t *testing.T) {
	lf := runLiveFault(t, liveFault{
		whileApplying: func(lf *liveFleet) {
			if err := lf.dst.Restart(context.Background()); err != nil {
				t.Fatal(err)
			}
		},
	})
	if !strings.Contains(lf.cdc.output(), "apply interrupted, resuming from the origin") {
		t.Errorf("the cdcnode did not notice the target restart:\n%s", tail(lf.cdc.output(), 20))
	}
}

// TestLiveKillCoordinator: SIGKILL the coordinator while live.kv's copy is
// unfinished and start it again on the same --dir. live.kv is reset and
// recopied under a new epoch, from a temporary slot's snapshot, and gets
// only the changes committed from that epoch's LSN on; the tables already
// copied keep epoch 1 and get every change from the slot's start. The
// workload writes to live.kv throughout (inserts, key changes, deletes), so
// applying a change on the wrong side of the epoch shows in the verification.
func TestLiveKillCoordinator(t *testing.T) {
	var second *proc
	lf := runLiveFault(t, liveFault{
		duringCopy: func(lf *liveFleet) {
			lf.kill(lf.coord)
			// Writes land between the two epochs.
			time.Sleep(time.Second)
			second = lf.startCoordinator("--follow", "--replica-identity-full")
		},
	})
	if !strings.Contains(second.output(), "resumed an unfinished migration") {
		t.Errorf("second coordinator did not say it resumed:\n%s", tail(second.output(), 20))
	}
	s := status(t, lf.dir)
	var kv, customers *pb.TableStatus
	for _, tb := range s.GetTables() {
		switch tb.GetSchema() + "." + tb.GetName() {
		case "live.kv":
			kv = tb
		case "caravan.customers":
			customers = tb
		}
	}
	if kv.GetEpoch() != 2 || kv.GetEpochLsn() == "" {
		t.Errorf("live.kv epoch = %d at %q, want epoch 2 with an LSN", kv.GetEpoch(), kv.GetEpochLsn())
	}
	if customers.GetEpoch() != 1 || lsn(customers.GetEpochLsn()) >= lsn(kv.GetEpochLsn()) {
		t.Errorf("caravan.customers epoch = %d at %q, want epoch 1 before live.kv's %q", customers.GetEpoch(), customers.GetEpochLsn(), kv.GetEpochLsn())
	}
}

// spoolBytes is the size of the cdcnode's spool files.
func (lf *liveFleet) spoolBytes() int64 {
	files, _ := filepath.Glob(filepath.Join(lf.cdcDir, "spool", "*.seg"))
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestLiveKillCoordinatorDuringSetup: a coordinator killed after it made a
// --follow migration's slot and publications, but before its store
// described the migration, leaves a record of them in its --dir. The next
// coordinator there drops them before it starts anew, and `cleanup --dir`
// drops what that one made in turn: no slot is left retaining WAL.
func TestLiveKillCoordinatorDuringSetup(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ctx := context.Background()
	src, dst := pgtest.Start(t, pgtest.Options{}), pgtest.Start(t, pgtest.Options{})
	for _, c := range []*pgtest.Cluster{src, dst} {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Exec(ctx, "app", `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	// --after-schema runs after the slot is made and before the store is
	// written: a file that sleeps holds the setup there.
	sleep := filepath.Join(t.TempDir(), "sleep.sql")
	if err := os.WriteFile(sleep, []byte("SELECT pg_sleep(60);\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	slots := func() []string {
		return queryStrings(t, src.URI("app"), `SELECT slot_name::text FROM pg_replication_slots ORDER BY 1`)
	}
	publications := func() []string {
		return queryStrings(t, src.URI("app"), `SELECT pubname::text FROM pg_publication ORDER BY 1`)
	}
	sleeping := func() bool {
		return queryInt(t, dst.URI("app"), `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'`) > 0
	}

	var first []string
	for round, extra := range [][]string{nil, {"--drop-if-exists"}} {
		args := append([]string{"coordinator", "--follow", "--source", src.URI("app"), "--target", dst.URI("app"),
			"--dir", dir, "--listen", freeAddr(t), "--after-schema", sleep}, extra...)
		coord := start(t, "coordinator", args...)
		deadline := time.Now().Add(2 * time.Minute)
		for !sleeping() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the coordinator never reached --after-schema:\n%s", round+1, tail(coord.output(), 30))
			}
			time.Sleep(100 * time.Millisecond)
		}
		made := slots()
		if err := coord.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		coord.wait(t, time.Minute)
		// The target's session does not notice its client is gone while
		// it sleeps; end it, so the next round waits for its own.
		if err := dst.Exec(ctx, "app", `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'`); err != nil {
			t.Fatal(err)
		}
		for sleeping() {
			time.Sleep(50 * time.Millisecond)
		}
		if len(made) != 1 || len(publications()) == 0 {
			t.Fatalf("round %d: during the setup the source has slots %q and publications %q, want one of ours each", round+1, made, publications())
		}
		if round == 0 {
			first = made
			continue
		}
		if made[0] == first[0] {
			t.Errorf("the second coordinator kept the first one's slot %s instead of dropping it", first[0])
		}
		if out := coord.output(); !strings.Contains(out, "dropping the slot and publications it made") {
			t.Errorf("the second coordinator did not say it dropped the leftover slot:\n%s", tail(out, 30))
		}
	}
	out, code := run(t, time.Minute, "cleanup", "--dir", dir, "--source", src.URI("app"), "--target", dst.URI("app"))
	if code != 0 {
		t.Fatalf("cleanup --dir exited %d:\n%s", code, out)
	}
	if s, p := slots(), publications(); len(s) != 0 || len(p) != 0 {
		t.Errorf("after cleanup --dir the source still has slots %q and publications %q", s, p)
	}
}
