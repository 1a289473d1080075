package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgcopydb's follow, driven the way its documentation describes a follow without its
// own clone:
//
//  1. `pgcopydb snapshot` exports a snapshot and holds it open; `pgcopydb stream setup
//     --snapshot` creates the slot "pgcopydb" (wal2json) at it, the sentinel table
//     pgcopydb.sentinel on the source and the replication origin "pgcopydb" on the
//     target; pg_dump --snapshot | psql copies the database as of the slot's start.
//  2. The sentinel's apply switch is turned on (pgcopydb clone --follow does so once its
//     copy is done) and the backlog is written.
//  3. `pgcopydb follow --resume --not-consistent` streams the slot into JSON files, turns
//     them into SQL files and applies those. --resume because step 1 did the setup:
//     without it follow creates the slot again and fails ("already exists").
//  4. After the lag phase, `pgcopydb stream sentinel set endpos` with the source's WAL
//     position: follow applies up to it and exits, like a cutover (given a no-op
//     transaction a second, see below). `pgcopydb stream cleanup` drops the slot, the
//     sentinel table and the origin.
//
// pgcopydb 0.10 files a message by its LSN into one JSON file per source WAL segment.
// When transactions interleave, one that straddles a segment boundary has messages in
// both files, and the transform of the first fails ("BUG: logical message xid is 12771,
// which is different from the current transaction xid 12770"): that segment never
// becomes SQL and follow waits for it for ever. So that the benchmark measures
// pgcopydb's speed and not this bug, the backlog starts in a fresh segment (a WAL
// switch, with no transaction open) and must fit in it (-apply-pgcopydb-txns at most
// 25,000, about 14 MB of WAL); the markers are followed by switches too, and the lag
// phase writes about 2 MB. An ERROR in follow's log stops the run with that line.
//
// pgcopydb 0.10 turns a segment's JSON file into SQL only once its stream has moved into
// the next segment, so changes in the segment being written are not applied until that
// segment is full (16 MB of WAL) or endpos is reached. After each marker the benchmark therefore switches the source's WAL segment
// and commits one more transaction in the new one (pgcopydbNextSegment); without that,
// the marker of a small backlog would wait for WAL nobody writes. The lag phase gets no
// such help: there, pgcopydb's lag is what its design gives, less the switched
// segment's unused tail, which is no WAL to apply.
//
// pgcopydb 0.10's snapshot and stream setup write to ${TMPDIR}/pgcopydb and
// ${XDG_DATA_HOME} whatever --dir says, so every pgcopydb process here gets a TMPDIR
// and an XDG_DATA_HOME inside the run's directory, and --dir is that same
// ${TMPDIR}/pgcopydb.
func (r *applyRun) pgcopydb(res *ApplyResult) error {
	srcURI, tgtURI := r.src.URI(r.srcDB), r.tgt.URI(r.tgtDB)
	tmp, xdg := filepath.Join(r.dir, "tmp"), filepath.Join(r.dir, "xdg")
	for _, d := range []string{tmp, xdg} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	dir := filepath.Join(tmp, "pgcopydb")
	env := []string{"TMPDIR=" + tmp, "XDG_DATA_HOME=" + xdg}
	cmd := func(g *group, name string, args ...string) *process {
		p := g.command("pgcopydb "+name, filepath.Join(r.dir, "pgcopydb-"+strings.ReplaceAll(name, " ", "-")+".log"), r.tools.pgcopydb, args...)
		p.cmd.Env = append(p.cmd.Env, env...)
		return p
	}
	one := func(name string, args ...string) error {
		g := newGroup(r.ctx, nil)
		cmd(g, name, args...)
		return g.run()
	}
	// Whatever happens from here on, the slot, the sentinel and the origin go.
	defer func() {
		g := newGroup(context.WithoutCancel(r.ctx), nil)
		cmd(g, "stream cleanup", "stream", "cleanup", "--source", srcURI, "--target", tgtURI, "--dir", dir)
		if err := g.run(); err != nil {
			progress("pgcopydb stream cleanup: %v", firstLine(err.Error()))
		}
	}()

	// 1. The snapshot, the slot and origin at it, and the copy under it.
	snapGroup := newGroup(r.ctx, nil)
	snap := cmd(snapGroup, "snapshot", "snapshot", "--source", srcURI, "--dir", dir)
	snapDone := make(chan error, 1)
	go func() { snapDone <- snapGroup.run() }()
	snapshot, err := waitSnapshot(r.ctx, filepath.Join(dir, "snapshot"), snapDone)
	if err != nil {
		snapGroup.cancel()
		<-snapDone
		return err
	}
	copyErr := func() error {
		if err := one("stream setup", "stream", "setup", "--source", srcURI, "--target", tgtURI, "--dir", dir, "--snapshot", snapshot); err != nil {
			return err
		}
		g := newGroup(r.ctx, nil)
		dump := g.command("pg_dump", filepath.Join(r.dir, "pg_dump.log"), r.tools.pgDump, "--snapshot", snapshot, "-d", srcURI)
		load := g.command("psql", filepath.Join(r.dir, "psql.log"), r.tools.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", tgtURI)
		if err := g.pipe(dump, load); err != nil {
			return err
		}
		if err := g.run(); err != nil {
			return fmt.Errorf("pg_dump --snapshot | psql: %w", err)
		}
		return nil
	}()
	// pgcopydb snapshot holds its snapshot until it is asked to stop, and then exits 0.
	if err := snap.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		snapGroup.cancel()
	}
	if err := <-snapDone; err != nil && copyErr == nil {
		copyErr = err
	}
	if copyErr != nil {
		return copyErr
	}

	// 2. Apply switched on; the backlog, in a segment of its own (see above).
	if err := one("sentinel set apply", "stream", "sentinel", "set", "apply", "--source", srcURI); err != nil {
		return err
	}
	if err := r.queryRow(srcURI, `SELECT pg_switch_wal()::text`, new(string)); err != nil {
		return err
	}
	if err := r.queryRow(srcURI, `SELECT pg_current_wal_lsn()::text`, &r.backlogFloor); err != nil {
		return err
	}
	if err := r.backlog(res, r.sizes.PgcopydbTxns); err != nil {
		return err
	}

	// 3. follow, timed until the origin is past the marker.
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	fg := newGroup(ctx, nil)
	follow := cmd(fg, "follow", "follow", "--source", srcURI, "--target", tgtURI, "--dir", dir, "--resume", "--not-consistent")
	// follow's prefetch, catch-up and transform processes are its children: a stop
	// reaches the whole process group, not only the supervisor.
	follow.cmd.Cancel = func() error { return syscall.Kill(-follow.cmd.Process.Pid, syscall.SIGTERM) }
	follow.cmd.WaitDelay = stopGrace
	// Closed after its one value, so that a second receive does not block.
	followDone := make(chan error, 1)
	started := time.Now()
	go func() {
		followDone <- fg.run()
		close(followDone)
	}()
	// On an early return follow is stopped before the deferred cleanup, which cannot
	// drop a slot in use.
	defer func() {
		cancel()
		<-followDone
	}()
	// follow does not exit when its transform fails: it waits for the SQL file for ever.
	// An ERROR in its log stops it, and says why.
	var logged atomic.Pointer[string]
	go watchLog(ctx, follow.log, func(line string) {
		logged.Store(&line)
		fg.cancel()
	})
	withLog := func(err error) error {
		if line := logged.Load(); err != nil && line != nil {
			return fmt.Errorf("pgcopydb follow logged %q, and was stopped: %w", *line, err)
		}
		return err
	}
	r.nextSegment = r.pgcopydbNextSegment
	if err := r.catchUp(res, started, followDone); err != nil {
		return withLog(err)
	}
	if err := r.lag(res); err != nil {
		return withLog(err)
	}

	// 4. endpos at the source's current position: follow applies up to it and exits.
	var endpos string
	if err := r.queryRow(r.src.URI(r.srcDB), `SELECT pg_current_wal_flush_lsn()::text`, &endpos); err != nil {
		return err
	}
	if err := one("sentinel set endpos", "stream", "sentinel", "set", "endpos", "--source", srcURI, endpos); err != nil {
		return err
	}
	// follow compares endpos with the messages it receives, and reads endpos from the
	// sentinel only every 10 s or so: on a quiet source it would wait for ever. A no-op
	// UPDATE once a second gives it a message to compare; one applied or not leaves the
	// data the same.
	deadline := time.After(2 * time.Minute)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for stopped := false; !stopped; {
		select {
		case err := <-followDone:
			if err != nil {
				return withLog(fmt.Errorf("pgcopydb follow: %w", err))
			}
			if line := logged.Load(); line != nil {
				return fmt.Errorf("pgcopydb follow logged %q, and was stopped", *line)
			}
			stopped = true
		case <-tick.C:
			if err := r.noOp(); err != nil {
				return err
			}
		case <-deadline:
			return fmt.Errorf("pgcopydb follow did not stop within 2 minutes of endpos %s", endpos)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	all, _ := fg.cpu()
	res.ConsumerCPUSeconds = all.Total.Seconds()
	return nil
}

// watchLog calls found with the first line of the log at path that has " ERROR ", a
// pgcopydb error, checking twice a second until ctx is done.
func watchLog(ctx context.Context, path string, found func(string)) {
	var offset int64
	var partial string
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		_, err = f.Seek(offset, io.SeekStart)
		var b []byte
		if err == nil {
			b, err = io.ReadAll(f)
		}
		f.Close()
		if err != nil {
			continue
		}
		offset += int64(len(b))
		lines := strings.Split(partial+string(b), "\n")
		partial = lines[len(lines)-1]
		for _, l := range lines[:len(lines)-1] {
			if strings.Contains(l, " ERROR ") {
				found(strings.TrimSpace(l))
				return
			}
		}
	}
}

// waitSnapshot waits for pgcopydb snapshot to write the snapshot's name to path.
func waitSnapshot(ctx context.Context, path string, exited <-chan error) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if s := strings.TrimSpace(string(b)); s != "" {
				return s, nil
			}
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("pgcopydb snapshot exited before writing %s: %v", path, err)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", errors.New("pgcopydb snapshot wrote no snapshot to " + path + " within a minute")
}

// pgcopydbNextSegment moves the source to a new WAL segment and commits one transaction
// in it, so that pgcopydb's stream closes the segment holding the marker and turns it
// into SQL (see the comment on pgcopydb). It has to be a transaction on a table:
// pgcopydb 0.10 fails on a logical decoding message ("Unknown message action 77").
func (r *applyRun) pgcopydbNextSegment() error {
	conn, err := pgx.Connect(r.ctx, r.src.URI(r.srcDB))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// The switched segment's unused tail is WAL positions without WAL: the lag leaves it
	// out (see lag).
	var switched string
	if err := conn.QueryRow(r.ctx, `SELECT pg_switch_wal()::text`).Scan(&switched); err != nil {
		return err
	}
	if err := conn.QueryRow(r.ctx, `SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`,
		switched).Scan(&r.holeEnd, &r.holeBytes); err != nil {
		return err
	}
	_, err = conn.Exec(r.ctx, noOpUpdate)
	return err
}

// noOpUpdate is a transaction that pgcopydb's stream receives and whose apply, or not,
// changes no data: the target equals the source either way.
const noOpUpdate = `UPDATE pgbench_branches SET filler = filler WHERE bid = 1`

// noOp commits noOpUpdate on the source.
func (r *applyRun) noOp() error {
	conn, err := pgx.Connect(r.ctx, r.src.URI(r.srcDB))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(r.ctx, noOpUpdate)
	return err
}

// queryRow scans one value from sql on the database at uri.
func (r *applyRun) queryRow(uri, sql string, dst any) error {
	conn, err := pgx.Connect(r.ctx, uri)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(r.ctx, sql).Scan(dst)
}
