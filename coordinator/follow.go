package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	"github.com/pgcaravan/pgcaravan/shared/ident"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// ErrFollowCheck means the source cannot be followed as it is configured.
var ErrFollowCheck = errors.New("coordinator: source not ready for --follow")

// cdcNames are the names of what a live migration creates, derived from
// its migration ID so that cleanup drops exactly those.
func cdcNames(migrationID string) (slot, publication, insertOnly, origin string) {
	id := migrationID[strings.LastIndex(migrationID, "-")+1:]
	base := "pgcaravan_" + id
	return base, base, base + "_insert_only", base
}

// checkFollow verifies what logical decoding needs, and says what to change.
func checkFollow(ctx context.Context, conn *pgx.Conn, src pguri.URI) error {
	var walLevel string
	var replication bool
	var slotsFree, sendersFree int
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
		current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
		current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)`).
		Scan(&walLevel, &replication, &slotsFree, &sendersFree)
	if err != nil {
		return fmt.Errorf("source %s: read replication settings: %w", src, err)
	}
	var problems []string
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("wal_level is %q; --follow needs \"logical\" (set it in postgresql.conf and restart the server)", walLevel))
	}
	if !replication {
		problems = append(problems, "the role has no REPLICATION privilege (ALTER ROLE ... REPLICATION, or use a role that has it)")
	}
	if slotsFree < 1 {
		problems = append(problems, "no free replication slot (raise max_replication_slots, or drop an unused slot: see pg_replication_slots)")
	}
	if sendersFree < 1 {
		problems = append(problems, "no free WAL sender (raise max_wal_senders)")
	}
	// Creating a slot waits for every transaction that holds an XID to end;
	// one open for long would stall the setup with no sign of why.
	rows, err := conn.Query(ctx, `SELECT pid, coalesce(application_name, ''), (now() - xact_start)::text
		FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND xact_start < now() - interval '5 minutes' AND pid <> pg_backend_pid()`)
	if err != nil {
		return fmt.Errorf("source %s: look for long transactions: %w", src, err)
	}
	var pid int
	var app, age string
	_, err = pgx.ForEachRow(rows, []any{&pid, &app, &age}, func() error {
		problems = append(problems, fmt.Sprintf("transaction of pid %d (%q) has been open for %s and would block the slot's creation (end it, or wait)", pid, app, age))
		return nil
	})
	if err != nil {
		return fmt.Errorf("source %s: look for long transactions: %w", src, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: source %s:\n  %s", ErrFollowCheck, src, strings.Join(problems, "\n  "))
	}
	return nil
}

// createPublications publishes exactly the tables with rows. Tables with no
// replica identity must not make UPDATE or DELETE fail on the source: they
// go into an insert-only publication (and are reported), unless
// --replica-identity-full asked to give them REPLICA IDENTITY FULL.
func (c *Coordinator) createPublications(ctx context.Context, conn *pgx.Conn, tables []plan.Table, full, insertOnly string) ([]string, []string, error) {
	var oids []uint32
	byOID := map[uint32]plan.Table{}
	for _, t := range tables {
		if t.HasData() {
			oids = append(oids, t.OID)
			byOID[t.OID] = t
		}
	}
	rows, err := conn.Query(ctx, `SELECT c.oid FROM pg_class c WHERE c.oid = ANY($1) AND (c.relreplident = 'n'
		OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))`, oids)
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: read replica identities: %w", c.src, err)
	}
	noIdentity, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: read replica identities: %w", c.src, err)
	}
	// Unlogged tables write no WAL, so logical decoding never sees their
	// changes (and PostgreSQL refuses them in a publication): they are
	// copied as of the snapshot, and later changes are not carried.
	rows, err = conn.Query(ctx, `SELECT c.oid FROM pg_class c WHERE c.oid = ANY($1) AND c.relpersistence = 'u'`, oids)
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: read table persistence: %w", c.src, err)
	}
	unloggedOIDs, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, nil, fmt.Errorf("source %s: read table persistence: %w", c.src, err)
	}
	unlogged := map[uint32]bool{}
	var warnings []string
	for _, oid := range unloggedOIDs {
		unlogged[oid] = true
		warnings = append(warnings, fmt.Sprintf("table %s is UNLOGGED: its rows are copied as of the snapshot, but its changes during the migration are NOT carried to the target (unlogged tables write no WAL); run ALTER TABLE ... SET LOGGED before the migration if they matter", byOID[oid].QualifiedName()))
	}
	lacking := map[uint32]bool{}
	for _, oid := range noIdentity {
		if unlogged[oid] {
			continue
		}
		t := byOID[oid]
		q := ident.Qualified(t.Schema, t.Name)
		if c.cfg.ReplicaIdentityFull {
			if _, err := conn.Exec(ctx, "ALTER TABLE "+q+" REPLICA IDENTITY FULL"); err != nil {
				return nil, nil, fmt.Errorf("source %s: set REPLICA IDENTITY FULL on %s: %w", c.src, q, err)
			}
			c.log.Warn("table had no replica identity; set REPLICA IDENTITY FULL (--replica-identity-full)", "table", t.QualifiedName())
			continue
		}
		lacking[oid] = true
		warnings = append(warnings, fmt.Sprintf("table %s has no primary key or replica identity: its UPDATEs and DELETEs during the migration are NOT carried to the target (only INSERT and TRUNCATE are); rerun with --replica-identity-full, or add a primary key", t.QualifiedName()))
	}
	var all, ins []string
	for _, oid := range oids {
		t := byOID[oid]
		if unlogged[oid] {
			continue
		}
		if lacking[oid] {
			ins = append(ins, "ONLY "+ident.Qualified(t.Schema, t.Name))
		} else {
			all = append(all, "ONLY "+ident.Qualified(t.Schema, t.Name))
		}
	}
	var created []string
	for _, p := range []struct {
		name   string
		tables []string
		with   string
	}{{full, all, ""}, {insertOnly, ins, " WITH (publish = 'insert, truncate')"}} {
		sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s%s", ident.Quote(p.name), strings.Join(p.tables, ", "), p.with)
		switch {
		case len(p.tables) > 0:
		case p.name == full && len(ins) == 0:
			// Nothing to publish (no table, or only unlogged ones): the
			// stream still needs a publication to name.
			sql = "CREATE PUBLICATION " + ident.Quote(p.name)
		default:
			continue
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			return created, warnings, fmt.Errorf("source %s: create publication %s: %w", c.src, p.name, err)
		}
		created = append(created, p.name)
	}
	for _, w := range warnings {
		c.log.Warn(w)
	}
	return created, warnings, nil
}

// createSlot creates a pgoutput slot that exports a snapshot, imports that
// snapshot into snap's regular session and re-exports it there, so the
// replication connection can close at once (PITFALLS.md "Snapshot and slot").
// A temporary slot (a new epoch on resume) is dropped when it closes.
func (c *Coordinator) createSlot(ctx context.Context, snap *heldSnapshot, name string, temporary bool) error {
	repl, err := c.src.ReplicationConn(ctx, "pgcaravan-coordinator")
	if err != nil {
		return err
	}
	defer repl.Close(context.Background())
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: temporary, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	if err != nil {
		return fmt.Errorf("source %s: create replication slot %s: %w", c.src, name, err)
	}
	snap.tx, err = snap.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("source %s: begin snapshot transaction: %w", c.src, err)
	}
	if _, err := snap.tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+ident.Literal(res.SnapshotName)); err != nil {
		return fmt.Errorf("source %s: import the slot's snapshot: %w", c.src, err)
	}
	if err := snap.tx.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snap.id); err != nil {
		return fmt.Errorf("source %s: export snapshot: %w", c.src, err)
	}
	snap.lsn = res.ConsistentPoint
	c.log.Info("replication slot created", "slot", name, "temporary", temporary, "lsn", snap.lsn, "snapshot", snap.id)
	return nil
}

// createOrigin makes the replication origin on the target whose progress
// the apply advances in every transaction.
func createOrigin(ctx context.Context, dst *pgx.Conn, name string) error {
	_, err := dst.Exec(ctx, `SELECT pg_replication_origin_create($1)
		WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, name)
	return err
}

// notOurPublications drops the dump's entries for the publications this
// migration created: they are scaffolding, not the user's schema.
func notOurPublications(entries []plan.Entry, pubs []string) []plan.Entry {
	out := entries[:0]
	for _, e := range entries {
		ours := false
		if strings.HasPrefix(e.Desc, "PUBLICATION") {
			for _, p := range pubs {
				if e.Tag == p || strings.HasPrefix(e.Tag, p+" ") || strings.Contains(e.Names, " "+p+" ") || strings.HasPrefix(e.Names, p+" ") {
					ours = true
				}
			}
		}
		if !ours {
			out = append(out, e)
		}
	}
	return out
}

// watchState is what the cdcnode is told.
func (c *Coordinator) watchState(st *store.Store, meta store.Meta) (func(*pb.WatchPhaseResponse), error) {
	tables, err := st.Tables()
	if err != nil {
		return nil, err
	}
	epochs, err := st.Epochs()
	if err != nil {
		return nil, err
	}
	lsn := map[uint32]string{}
	for _, e := range epochs {
		lsn[e.ID] = e.LSN
	}
	return func(w *pb.WatchPhaseResponse) {
		w.MigrationId = meta.MigrationID
		w.Source = &pb.DatabaseIdentity{SystemIdentifier: meta.Source.SystemID, Database: meta.Source.Database}
		w.Target = &pb.DatabaseIdentity{SystemIdentifier: meta.Target.SystemID, Database: meta.Target.Database}
		w.SlotName, w.Publications, w.StartLsn, w.OriginName = meta.Slot, meta.Publications, meta.StartLSN, meta.Origin
		w.Epochs = w.Epochs[:0]
		for _, t := range tables {
			if t.HasData() {
				w.Epochs = append(w.Epochs, &pb.TableEpoch{Schema: t.Schema, Name: t.Name, Lsn: lsn[t.EpochID]})
			}
		}
		w.BackfillComplete = meta.Phase == store.PhaseFollow || meta.Phase == store.PhaseCutover || meta.Phase == store.PhaseDone
		w.Endpos = meta.Endpos
	}, nil
}

// pollSource keeps the status's view of the source current: its WAL
// position (for lag) and whether our slot is consumed (an inactive slot
// retains WAL until the disk fills).
func (c *Coordinator) pollSource(ctx context.Context, rpc *rpcserver.Server, slot string) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var inactiveSince time.Time
	for {
		func() {
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			conn, err := c.src.Connect(qctx, "pgcaravan-coordinator")
			if err != nil {
				return
			}
			defer conn.Close(context.Background())
			var lsn string
			var active *bool
			var retained *int64
			err = conn.QueryRow(qctx, `SELECT pg_current_wal_lsn()::text,
				(SELECT active FROM pg_replication_slots WHERE slot_name = $1),
				(SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1)`, slot).
				Scan(&lsn, &active, &retained)
			if err != nil {
				return
			}
			var warnings []string
			switch {
			case active == nil:
				warnings = append(warnings, fmt.Sprintf("replication slot %s does not exist on the source", slot))
			case !*active:
				if inactiveSince.IsZero() {
					inactiveSince = time.Now()
				}
				if time.Since(inactiveSince) > 30*time.Second {
					warnings = append(warnings, fmt.Sprintf("replication slot %s has been inactive for %s and retains %d bytes of WAL on the source: start the cdcnode, or run `pgcaravan cleanup`",
						slot, time.Since(inactiveSince).Round(time.Second), deref(retained)))
				}
			default:
				inactiveSince = time.Time{}
			}
			parsed, _ := pglogrepl.ParseLSN(lsn)
			rpc.SetSourceStatus(parsed, warnings)
		}()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// Cutover implements rpcserver.Controller: apply through endpos, set the
// sequences, and say how it went.
func (c *Coordinator) Cutover(ctx context.Context, endpos string) (*pb.CutoverResponse, error) {
	started := time.Now()
	meta, err := c.st.Meta()
	if err != nil {
		return nil, err
	}
	if !meta.Follow {
		return nil, fmt.Errorf("%w: this migration was started without --follow; it has no changes to apply", rpcserver.ErrNotFollowing)
	}
	if meta.Phase != store.PhaseFollow && meta.Phase != store.PhaseCutover && meta.Phase != store.PhaseDone {
		return nil, fmt.Errorf("%w: the backfill is not complete (phase %s); wait until the phase is follow", rpcserver.ErrNotFollowing, meta.Phase)
	}
	// 1. The endpos: given, or the source's current WAL insert position.
	// Not the flush position: with synchronous_commit off a transaction is
	// visible (and so, to the application, committed) before its commit
	// record is flushed, and an endpos before it would leave it out. The
	// stream waits for the source to flush and send up to the endpos.
	conn, err := c.src.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if endpos == "" {
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&endpos); err != nil {
			return nil, fmt.Errorf("source %s: read the WAL insert position: %w", c.src, err)
		}
	}
	end, err := pglogrepl.ParseLSN(endpos)
	if err != nil {
		return nil, fmt.Errorf("endpos %q is not an LSN (like 0/16B3748): %w", endpos, err)
	}
	endpos = end.String()
	if err := c.st.UpdateMeta(func(m *store.Meta) { m.Phase, m.Endpos = store.PhaseCutover, endpos }); err != nil {
		return nil, err
	}
	c.rpc.UpdateCDC(func(w *pb.WatchPhaseResponse) { w.Endpos = endpos })
	c.log.Info("cutover: applying up to endpos", "endpos", endpos)

	// 2. Wait for the cdcnode to apply through it.
	var last *pb.ReportProgressRequest
	err = c.rpc.WaitCDC(ctx, func(p *pb.ReportProgressRequest, _ int) bool {
		last = p
		return p.GetReachedEndpos()
	})
	if err != nil {
		return nil, fmt.Errorf("cutover: waiting for the cdcnode to apply up to %s: %w (is the cdcnode running? see status)", endpos, err)
	}

	// 3. Sequences: logical decoding does not carry them.
	seqs, err := catalog.ReadSequences(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", c.src, err)
	}
	dst, err := c.dst.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.Background())
	batch := &pgx.Batch{}
	for _, s := range seqs {
		batch.Queue(`SELECT pg_catalog.setval($1::regclass, $2, $3)`, ident.Qualified(s.Schema, s.Name), s.LastValue, s.IsCalled)
	}
	if err := dst.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("target %s: set sequences: %w", c.dst, err)
	}
	if err := c.st.UpdateMeta(func(m *store.Meta) { m.Phase, m.FinishedAt = store.PhaseDone, time.Now() }); err != nil {
		return nil, err
	}
	resp := &pb.CutoverResponse{Endpos: endpos, AppliedLsn: last.GetAppliedLsn(), Millis: time.Since(started).Milliseconds(),
		ChangesApplied: last.GetChangesApplied(), SequencesSet: int64(len(seqs))}
	c.log.Info("cutover complete: the target has every change up to endpos; switch the application over, then run cleanup",
		"endpos", endpos, "applied_lsn", resp.AppliedLsn, "changes_applied", resp.ChangesApplied, "sequences", len(seqs), "millis", resp.Millis)
	return resp, nil
}

// Cleanup implements rpcserver.Controller.
func (c *Coordinator) Cleanup(ctx context.Context) (*pb.CleanupResponse, error) {
	meta, err := c.st.Meta()
	if err != nil {
		return nil, err
	}
	// Ask the cdcnode to stop, so the slot and the origin are free.
	c.rpc.UpdateCDC(func(w *pb.WatchPhaseResponse) { w.Stop = true })
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_ = c.rpc.WaitCDC(wctx, func(_ *pb.ReportProgressRequest, watchers int) bool { return watchers == 0 })
	cancel()
	dropped, err := DropCDC(ctx, c.src, c.dst, meta)
	if err != nil {
		return &pb.CleanupResponse{Dropped: dropped}, err
	}
	if err := c.st.UpdateMeta(func(m *store.Meta) { m.Cleaned = true }); err != nil {
		return nil, err
	}
	c.cleanedOnce.Do(func() { close(c.cleaned) })
	return &pb.CleanupResponse{Dropped: dropped}, nil
}

// DropCDC drops what a migration created: the slot (ending the session
// that uses it, if any), the publications, the replication origin and the
// target's pgcaravan schema. Dropping what is already gone is not an error.
func DropCDC(ctx context.Context, src, dst pguri.URI, meta store.Meta) ([]string, error) {
	var dropped []string
	s, err := src.Connect(ctx, "pgcaravan-cleanup")
	if err != nil {
		return nil, err
	}
	defer s.Close(context.Background())
	if meta.Slot != "" {
		var n int
		err := s.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL) t`, meta.Slot).Scan(&n)
		if err != nil {
			return dropped, fmt.Errorf("source %s: stop the session using slot %s: %w", src, meta.Slot, err)
		}
		var existed bool
		err = s.QueryRow(ctx, `SELECT count(pg_drop_replication_slot(slot_name)) > 0 FROM pg_replication_slots WHERE slot_name = $1`, meta.Slot).Scan(&existed)
		if err != nil {
			return dropped, fmt.Errorf("source %s: drop slot %s: %w", src, meta.Slot, err)
		}
		if existed {
			dropped = append(dropped, "slot "+meta.Slot)
		}
	}
	for _, p := range meta.Publications {
		var existed bool
		if err := s.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, p).Scan(&existed); err != nil {
			return dropped, fmt.Errorf("source %s: look for publication %s: %w", src, p, err)
		}
		if !existed {
			continue
		}
		if _, err := s.Exec(ctx, "DROP PUBLICATION IF EXISTS "+ident.Quote(p)); err != nil {
			return dropped, fmt.Errorf("source %s: drop publication %s: %w", src, p, err)
		}
		dropped = append(dropped, "publication "+p)
	}
	d, err := dst.Connect(ctx, "pgcaravan-cleanup")
	if err != nil {
		return dropped, err
	}
	defer d.Close(context.Background())
	if meta.Origin != "" {
		var existed bool
		err := d.QueryRow(ctx, `SELECT count(pg_replication_origin_drop(roname)) > 0 FROM pg_replication_origin WHERE roname = $1`, meta.Origin).Scan(&existed)
		if err != nil {
			return dropped, fmt.Errorf("target %s: drop replication origin %s: %w (is a cdcnode still applying?)", dst, meta.Origin, err)
		}
		if existed {
			dropped = append(dropped, "origin "+meta.Origin)
		}
	}
	var had bool
	if err := d.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgcaravan')`).Scan(&had); err != nil {
		return dropped, fmt.Errorf("target %s: %w", dst, err)
	}
	if had {
		if _, err := d.Exec(ctx, dropMarkerSchema); err != nil {
			return dropped, fmt.Errorf("target %s: drop the pgcaravan schema: %w", dst, err)
		}
		dropped = append(dropped, "schema pgcaravan (target)")
	}
	return dropped, nil
}

// CleanupDir drops what the migration in dir created, without a running
// coordinator (for example after it was lost for good).
func CleanupDir(ctx context.Context, dir, sourceURI, targetURI string) ([]string, error) {
	src, dst, err := pguri.ParsePair(sourceURI, targetURI)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(dir, store.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("%w (stop the coordinator, or run cleanup with --coordinator)", err)
	}
	defer st.Close()
	meta, err := st.Meta()
	if errors.Is(err, store.ErrNoMigration) {
		// A coordinator killed during a --follow setup may have left a
		// slot and publications that only this record names.
		pending, perr := st.PendingCDC()
		if perr != nil || pending == nil {
			return nil, errors.Join(err, perr)
		}
		return dropPendingCDC(ctx, src, dst, st, *pending)
	}
	if err != nil {
		return nil, err
	}
	if meta.Source.Database != src.Database() || meta.Target.Database != dst.Database() {
		return nil, fmt.Errorf("%w: %s holds migration %s from %q to %q", ErrOtherMigration, dir, meta.MigrationID, meta.Source.Database, meta.Target.Database)
	}
	dropped, err := DropCDC(ctx, src, dst, meta)
	if err != nil {
		return dropped, err
	}
	return dropped, st.UpdateMeta(func(m *store.Meta) { m.Cleaned = true })
}
