package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/lease"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// createMarkerSchema makes the table of done-markers on the target. A unit's
// rows and its marker commit in one transaction: a redelivered unit that
// finds its marker only reports done (ARCHITECTURE.md "Exactly once").
const createMarkerSchema = `CREATE SCHEMA IF NOT EXISTS pgcaravan;
CREATE TABLE IF NOT EXISTS pgcaravan.unit_done (
	migration_id text NOT NULL,
	unit_id bigint NOT NULL,
	done_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (migration_id, unit_id))`

const dropMarkerSchema = `DROP SCHEMA IF EXISTS pgcaravan CASCADE`

// heldSnapshot is the source transaction whose snapshot every copy imports.
type heldSnapshot struct {
	conn *pgx.Conn
	tx   pgx.Tx
	id   string
	lsn  string
}

func (s *heldSnapshot) held() bool { return s != nil && s.conn != nil }

// export opens the REPEATABLE READ READ ONLY transaction and exports its
// snapshot, with the WAL position it is consistent at.
func (s *heldSnapshot) export(ctx context.Context, u pguri.URI) error {
	var err error
	s.tx, err = s.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("source %s: begin snapshot transaction: %w", u, err)
	}
	err = s.tx.QueryRow(ctx, `SELECT pg_export_snapshot(),
		(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).
		Scan(&s.id, &s.lsn)
	if err != nil {
		return fmt.Errorf("source %s: export snapshot: %w", u, err)
	}
	return nil
}

// release ends the snapshot transaction: it stops pinning the source's xmin
// horizon once nothing needs it.
func (s *heldSnapshot) release(ctx context.Context) {
	if !s.held() {
		return
	}
	if s.tx != nil {
		_ = s.tx.Rollback(ctx)
	}
	_ = s.conn.Close(ctx)
	s.conn, s.tx = nil, nil
}

// setup runs the schema phase: identify both sides, export the snapshot,
// read the catalog, check the target, dump and restore pre-data, plan, and
// persist the plan. The snapshot stays held on return.
func (c *Coordinator) setup(ctx context.Context, st *store.Store, rpc *rpcserver.Server) (*heldSnapshot, error) {
	snap, _, err := c.schemaPhase(ctx, st, rpc)
	return snap, err
}

// planned is what the read-only part of the schema phase decided.
type planned struct {
	plan plan.Plan
	meta store.Meta
}

// schemaPhase is setup; with a nil store it is a dry run (DryRun): it reads
// the source under a snapshot and dumps its schema into c.cfg.Dir, but
// creates nothing on either side (no publication, slot, pre-data or
// done-markers) and persists nothing.
func (c *Coordinator) schemaPhase(ctx context.Context, st *store.Store, rpc *rpcserver.Server) (snap *heldSnapshot, out *planned, err error) {
	dry := st == nil
	started := time.Now()
	var timings []store.Timing
	mark := func(name string, since time.Time) {
		timings = append(timings, store.Timing{Name: name, Millis: time.Since(since).Milliseconds()})
	}
	setMigration := func(meta store.Meta) {
		if rpc != nil {
			rpc.SetMigration(meta)
		}
	}
	// 0. Refuse bad schema options before anything is done on either side.
	afterSchema, err := c.loadAfterSchema()
	if err != nil {
		return nil, nil, err
	}
	if c.cfg.NoRolePasswords && !c.cfg.Roles {
		return nil, nil, errors.New("--no-role-passwords only applies to --roles: add --roles, or drop --no-role-passwords")
	}
	tools, err := schema.FindTools()
	if err != nil {
		return nil, nil, err
	}
	if c.cfg.Roles && tools.PgDumpAll == "" {
		return nil, nil, fmt.Errorf("%w: pg_dumpall is not on PATH; --roles needs it (install the PostgreSQL client package, or drop --roles)", schema.ErrToolMissing)
	}

	if !dry {
		if err := c.dropLeftoverCDC(ctx, st); err != nil {
			return nil, nil, err
		}
	}

	// 1. Connect to both sides and identify them.
	srcConn, err := c.src.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return nil, nil, err
	}
	snap = &heldSnapshot{conn: srcConn}
	dstConn, err := c.dst.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return snap, nil, err
	}
	defer dstConn.Close(context.Background())
	srcID, err := catalog.ReadIdentity(ctx, srcConn)
	if err != nil {
		return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
	}
	dstID, err := catalog.ReadIdentity(ctx, dstConn)
	if err != nil {
		return snap, nil, fmt.Errorf("target %s: %w", c.dst, err)
	}
	if srcID.SystemID == dstID.SystemID && srcID.Database == dstID.Database {
		return snap, nil, fmt.Errorf("source and target are the same database (%q on system %s): point --target at another database", srcID.Database, srcID.SystemID)
	}
	if err := checkPgDumpVersion(ctx, tools.PgDump, srcID.ServerVersion); err != nil {
		return snap, nil, err
	}
	meta := store.Meta{
		MigrationID: newMigrationID(),
		Source:      store.Identity(srcID),
		Target:      store.Identity(dstID),
		Options:     c.cfg.Plan,
		Phase:       store.PhaseSchema,
		StartedAt:   started,
	}
	if !c.cfg.Filter.Empty() {
		meta.Filters = c.cfg.Filter
	}
	meta.Options.BinaryCopy = srcID.ServerVersion/10000 == dstID.ServerVersion/10000
	setMigration(meta)

	// 2. Export the snapshot from a REPEATABLE READ READ ONLY transaction
	// that stays open while units need it. With --follow, the publication
	// comes first and the snapshot is the new slot's (PITFALLS.md); the
	// publication carries the tables the filter keeps.
	t := time.Now()
	var published []plan.Table
	follow := c.cfg.Follow && !dry
	if follow {
		if err := checkFollow(ctx, srcConn, c.src); err != nil {
			return snap, nil, err
		}
		if published, err = catalog.ReadTables(ctx, srcConn); err != nil {
			return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
		}
		published = c.publishedTables(published)
		slot, pub, insertOnly, origin := cdcNames(meta.MigrationID)
		meta.Follow, meta.Slot, meta.Origin = true, slot, origin
		// Until the store describes the migration (step 9), the record of
		// what is about to be made lets a failure here, or the next start
		// after a crash, drop it.
		pending := store.PendingCDC{MigrationID: meta.MigrationID, Slot: slot, Publications: []string{pub, insertOnly}, Origin: origin}
		if err := st.PutPendingCDC(pending); err != nil {
			return snap, nil, fmt.Errorf("record the slot and publications about to be made: %w", err)
		}
		defer func() {
			if err != nil {
				err = c.undoFollow(ctx, st, pending, err)
			}
		}()
		pubs, warnings, err := c.createPublications(ctx, srcConn, published, pub, insertOnly)
		meta.Publications = pubs
		meta.Warnings = append(meta.Warnings, warnings...)
		if err != nil {
			return snap, nil, err
		}
		if err := c.createSlot(ctx, snap, slot, false); err != nil {
			return snap, nil, err
		}
		meta.StartLSN = snap.lsn
	} else if err := snap.export(ctx, c.src); err != nil {
		return snap, nil, err
	}
	meta.Snapshot = snap.id
	c.log.Info("snapshot exported", "snapshot", snap.id, "lsn", snap.lsn)

	// 3. Read the catalog inside the snapshot.
	in := plan.Input{Options: meta.Options}
	if in.Tables, err = catalog.ReadTables(ctx, snap.tx); err != nil {
		return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
	}
	if in.Sequences, err = catalog.ReadSequences(ctx, snap.tx); err != nil {
		return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
	}
	if in.LargeObjects, err = catalog.ReadLargeObjects(ctx, snap.tx); err != nil {
		return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
	}
	var settings []schema.Setting
	if !c.cfg.SkipDBProperties {
		if settings, err = schema.ReadSettings(ctx, snap.tx); err != nil {
			return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
		}
	}
	if follow && !sameTables(published, c.publishedTables(in.Tables)) {
		return snap, nil, fmt.Errorf("source %s: tables were created or dropped while the publication was set up; run again", c.src)
	}
	mark("snapshot and catalog", t)

	// 4. Dump the schema under the snapshot and read its table of contents.
	t = time.Now()
	dumpFile := filepath.Join(c.cfg.Dir, "schema.dump")
	if err := tools.Dump(ctx, c.src, dumpFile, schema.DumpOptions{Snapshot: snap.id, ExcludeSchemas: []string{catalog.OwnSchema}}); err != nil {
		return snap, nil, err
	}
	post, err := tools.List(ctx, dumpFile, schema.PostData)
	if err != nil {
		return snap, nil, err
	}
	pre, err := tools.List(ctx, dumpFile, schema.PreData)
	if err != nil {
		return snap, nil, err
	}
	mark("schema dump", t)

	// 5. Apply the filters: what they name and what depends on it is left
	// out of the dump's entries, the tables and the sequences.
	kept, err := c.applyFilter(ctx, snap.tx, &in, pre, post)
	if err != nil {
		return snap, nil, err
	}
	meta.Warnings = append(meta.Warnings, kept.sel.Warnings...)
	if follow {
		if err := checkPublished(published, kept.sel); err != nil {
			return snap, nil, err
		}
	}
	lacking, err := c.applySchemaOptions(ctx, dstConn, &in, &kept)
	if err != nil {
		return snap, nil, err
	}
	for _, ext := range lacking {
		w := fmt.Sprintf("--skip-extensions: the target has no extension %s; objects that use it cannot be restored (CREATE EXTENSION %s on the target first)", ext, ext)
		meta.Warnings = append(meta.Warnings, w)
		c.log.Warn("extension left out is missing on the target", "warning", w)
	}
	settingsSQL, skipped, err := c.settingsSQL(ctx, dstConn, dstID.Database, settings)
	if err != nil {
		if !dry {
			return snap, nil, err
		}
		meta.Warnings = append(meta.Warnings, err.Error())
	}
	in.Skipped = append(in.Skipped, skipped...)

	// 6. Refuse a target that already has what the clone would create.
	if err := c.checkTarget(ctx, snap.tx, dstConn, kept, pre, post); err != nil {
		if !dry {
			return snap, nil, err
		}
		meta.Warnings = append(meta.Warnings, err.Error())
	}

	// 7. Plan, then give every unit made of dump entries its SQL.
	t = time.Now()
	in.PostData = notOurPublications(entriesOf(kept.post), meta.Publications)
	if err := catalog.Annotate(ctx, snap.tx, in.PostData); err != nil {
		return snap, nil, fmt.Errorf("source %s: %w", c.src, err)
	}
	var notRefreshed []string
	in.Matviews, notRefreshed = matviews(kept.pre, in.Tables)
	in.Skipped = append(in.Skipped, notRefreshed...)
	p := plan.Build(in)
	restoreOpts := schema.RestoreOptions{NoOwner: c.cfg.NoOwner, NoACL: c.cfg.NoACL, NoComments: c.cfg.NoComments}
	if err := fillSQL(ctx, tools, dumpFile, kept.post, p.Units, restoreOpts); err != nil {
		return snap, nil, err
	}
	addSettingsUnit(&p, settingsSQL)
	mark("plan", t)
	meta.Skipped = p.Skipped
	if dry {
		meta.Timings = timings
		return snap, &planned{plan: p, meta: meta}, nil
	}

	// 8. Copy the roles (--roles), restore pre-data on the target (only
	// the kept entries when filtered), run the --after-schema file (and
	// plan again for the tables it made partitioned), and make the
	// done-marker table. The store is written only in step 9, so
	// a coordinator restarted on the same --dir never runs the file again:
	// either the store has the plan and it resumes, or it starts over on a
	// target the pre-data restore refuses (or drops, with --drop-if-exists).
	if c.cfg.Roles {
		t = time.Now()
		if err := c.copyRoles(ctx, tools); err != nil {
			return snap, nil, err
		}
		mark("roles", t)
	}
	t = time.Now()
	restoreOpts.Clean = c.cfg.DropIfExists
	if !c.cfg.Filter.Empty() || c.cfg.SkipExtensions {
		restoreOpts.Only = kept.pre
	}
	if c.cfg.DropIfExists {
		if _, err := dstConn.Exec(ctx, dropMarkerSchema); err != nil {
			return snap, nil, fmt.Errorf("target %s: drop leftover pgcaravan schema: %w", c.dst, err)
		}
	}
	if err := tools.RestorePreData(ctx, dumpFile, c.dst, restoreOpts); err != nil {
		if len(lacking) > 0 {
			err = fmt.Errorf("%w (--skip-extensions left out %s, which the target does not have: create them on the target first)", err, strings.Join(lacking, ", "))
		}
		return snap, nil, err
	}
	mark("pre-data restore", t)
	if afterSchema != nil {
		t = time.Now()
		if err := c.runAfterSchema(ctx, afterSchema); err != nil {
			return snap, nil, err
		}
		mark("after-schema", t)
		// The plan assumed every table is on the target as on the source;
		// one the file made partitioned is copied and constrained as a
		// partitioned table (plan.Table.Repartitioned).
		tables, names, err := c.targetRelKinds(ctx, dstConn, in.Tables)
		if err != nil {
			return snap, nil, err
		}
		if len(names) > 0 {
			in.Tables = tables
			p = plan.Build(in)
			if err := fillSQL(ctx, tools, dumpFile, kept.post, p.Units, restoreOpts); err != nil {
				return snap, nil, err
			}
			p.ReachPartitions()
			addSettingsUnit(&p, settingsSQL)
			meta.Skipped = p.Skipped
			c.log.Info("plan rebuilt for the tables --after-schema made partitioned", "tables", strings.Join(names, ", "), "units", len(p.Units))
		}
	}
	if _, err := dstConn.Exec(ctx, createMarkerSchema); err != nil {
		return snap, nil, fmt.Errorf("target %s: create the pgcaravan schema for done-markers: %w", c.dst, err)
	}
	if follow {
		if err := createOrigin(ctx, dstConn, meta.Origin); err != nil {
			return snap, nil, fmt.Errorf("target %s: create replication origin %s: %w", c.dst, meta.Origin, err)
		}
	}

	// 9. Persist: from here on the store describes the migration.
	meta.Phase = store.PhaseCopy
	meta.Timings = timings
	epoch := store.Epoch{ID: 1, Snapshot: snap.id, LSN: snap.lsn, CreatedAt: time.Now()}
	if err := st.SavePlan(p, epoch, lease.InitialState); err != nil {
		return snap, nil, fmt.Errorf("save plan: %w", err)
	}
	if err := st.PutMeta(meta); err != nil {
		return snap, nil, fmt.Errorf("save migration: %w", err)
	}
	if follow {
		// The store now names the slot and publications; cleanup drops them.
		if err := st.ClearPendingCDC(); err != nil {
			c.log.Warn("could not clear the record of the --follow setup", "error", err)
		}
	}
	setMigration(meta)
	for _, s := range p.Skipped {
		c.log.Warn("skipped", "reason", s)
	}
	for _, w := range kept.sel.Warnings {
		c.log.Warn("filter matches nothing", "warning", w)
	}
	c.log.Info("plan ready", "migration_id", meta.MigrationID, "tables", len(p.Tables), "units", len(p.Units),
		"schema_millis", time.Since(started).Milliseconds())
	return snap, &planned{plan: p, meta: meta}, nil
}

// undoFollow drops what a failed --follow setup made (the slot,
// publications and replication origin pending names, those that exist),
// so it leaves no slot retaining WAL behind, and returns cause. The
// record stays when that fails, so the next start tries again.
func (c *Coordinator) undoFollow(ctx context.Context, st *store.Store, pending store.PendingCDC, cause error) error {
	if err := c.dropPending(context.WithoutCancel(ctx), st, pending); err != nil {
		return fmt.Errorf("%w (and dropping the slot %s and publications %s failed too: %v; run pgcaravan cleanup --dir %s)",
			cause, pending.Slot, strings.Join(pending.Publications, ", "), err, c.cfg.Dir)
	}
	return cause
}

// dropPending drops what pending names and forgets it.
func (c *Coordinator) dropPending(ctx context.Context, st *store.Store, pending store.PendingCDC) error {
	dropped, err := dropPendingCDC(ctx, c.src, c.dst, st, pending)
	if len(dropped) > 0 {
		c.log.Info("dropped what an unfinished --follow setup made", "migration_id", pending.MigrationID, "dropped", strings.Join(dropped, ", "))
	}
	return err
}

// dropPendingCDC drops what an unfinished --follow setup's record names
// (those that exist), then removes the record.
func dropPendingCDC(ctx context.Context, src, dst pguri.URI, st *store.Store, pending store.PendingCDC) ([]string, error) {
	dropped, err := DropCDC(ctx, src, dst, pending.Meta())
	if err != nil {
		return dropped, err
	}
	return dropped, st.ClearPendingCDC()
}

// dropLeftoverCDC drops the slot and publications of a --follow setup that
// a previous coordinator on this --dir did not finish (it was killed
// before the store described the migration), before a new one starts.
func (c *Coordinator) dropLeftoverCDC(ctx context.Context, st *store.Store) error {
	pending, err := st.PendingCDC()
	if err != nil || pending == nil {
		return err
	}
	c.log.Warn("a previous coordinator on this --dir stopped while setting up a --follow migration; dropping the slot and publications it made",
		"migration_id", pending.MigrationID, "slot", pending.Slot)
	if err := c.dropPending(ctx, st, *pending); err != nil {
		return fmt.Errorf("drop the slot %s and publications %s left by an unfinished setup on %s: %w (run pgcaravan cleanup --dir %s)",
			pending.Slot, strings.Join(pending.Publications, ", "), c.cfg.Dir, err, c.cfg.Dir)
	}
	return nil
}

// sameTables says whether two reads of the catalog list the same tables
// with rows.
func sameTables(a, b []plan.Table) bool {
	set := map[uint32]bool{}
	n := 0
	for _, t := range a {
		if t.HasData() {
			set[t.OID] = true
			n++
		}
	}
	for _, t := range b {
		if t.HasData() {
			if !set[t.OID] {
				return false
			}
			n--
		}
	}
	return n == 0
}

// checkTarget lists the objects the clone would create that the target
// already has, and refuses unless --drop-if-exists. Objects the filter
// leaves out are not created, so they do not count.
func (c *Coordinator) checkTarget(ctx context.Context, src pgx.Tx, dst *pgx.Conn, kept filtered, pre, post []schema.Entry) error {
	want, err := catalog.Objects(ctx, src)
	if err != nil {
		return fmt.Errorf("source %s: %w", c.src, err)
	}
	if len(kept.sel.Excluded) > 0 {
		skip, err := excludedObjects(ctx, src, pre, post, kept.sel)
		if err != nil {
			return fmt.Errorf("source %s: %w", c.src, err)
		}
		want = slices.DeleteFunc(want, func(n string) bool { return skip[n] })
	}
	have, err := catalog.Objects(ctx, dst)
	if err != nil {
		return fmt.Errorf("target %s: %w", c.dst, err)
	}
	conflicts := catalog.Conflicts(want, have)
	if len(conflicts) == 0 {
		return nil
	}
	if c.cfg.DropIfExists {
		c.log.Warn("target has objects the clone creates; they are dropped first (--drop-if-exists)", "conflicts", len(conflicts))
		return nil
	}
	shown := conflicts
	if len(shown) > 20 {
		shown = shown[:20]
	}
	more := ""
	if len(conflicts) > len(shown) {
		more = fmt.Sprintf("\n  … and %d more", len(conflicts)-len(shown))
	}
	return fmt.Errorf("%w: target %s already has %d object(s) the clone would create:\n  %s%s\n"+
		"(point --target at an empty database, or pass --drop-if-exists to drop them first)",
		ErrTargetNotEmpty, c.dst, len(conflicts), strings.Join(shown, "\n  "), more)
}

func entriesOf(list []schema.Entry) []plan.Entry {
	out := make([]plan.Entry, len(list))
	for i, e := range list {
		out[i] = plan.Entry{DumpID: e.DumpID, Desc: e.Desc, Schema: e.Schema, Tag: e.Tag, Names: e.Names, ObjOID: e.ObjOID}
	}
	return out
}

// matviews are the materialized views to refresh after the data, in dump
// order, which puts a view after the views it reads. The dump creates every
// materialized view WITH NO DATA; one that is not populated on the source,
// or whose data a filter leaves out, stays so. One that reads such a view
// (directly or through views) stays empty too, since REFRESH would fail on
// it; skipped says so for each.
func matviews(pre []schema.Entry, tables []plan.Table) (refresh []plan.Table, skipped []string) {
	byOID := map[uint32]plan.Table{}
	for _, t := range tables {
		byOID[t.OID] = t
	}
	// empty are the dump ids of the materialized views left unpopulated
	// and of the views that read one, with the view that is empty.
	empty := map[int]plan.Table{}
	for _, e := range pre {
		if e.Desc != "MATERIALIZED VIEW" && e.Desc != "VIEW" {
			continue
		}
		var reads *plan.Table
		for _, d := range e.Deps {
			if m, ok := empty[d]; ok {
				reads = &m
				break
			}
		}
		t, ok := byOID[e.ObjOID]
		if e.Desc == "VIEW" || !ok || t.RelKind != "m" {
			if reads != nil {
				empty[e.DumpID] = *reads
			}
			continue
		}
		switch {
		case !t.Populated || t.NoData:
			empty[e.DumpID] = t
		case reads != nil:
			empty[e.DumpID] = t
			skipped = append(skipped, fmt.Sprintf("materialized view %s: not refreshed, it reads materialized view %s, which stays empty",
				filter.Name{Schema: t.Schema, Name: t.Name}, filter.Name{Schema: reads.Schema, Name: reads.Name}))
		default:
			refresh = append(refresh, t)
		}
	}
	return refresh, skipped
}

// fillSQL restores the SQL of every unit made of dump entries.
func fillSQL(ctx context.Context, tools schema.Tools, dumpFile string, list []schema.Entry, units []plan.Unit, opts schema.RestoreOptions) error {
	entries := make(map[int]schema.Entry, len(list))
	for _, e := range list {
		entries[e.DumpID] = e
	}
	var idx []int
	var groups [][]int
	for i, u := range units {
		if len(u.DumpIDs) > 0 {
			idx = append(idx, i)
			groups = append(groups, u.DumpIDs)
		}
	}
	sqls, err := tools.EntrySQL(ctx, dumpFile, entries, groups, opts)
	if err != nil {
		return err
	}
	for j, i := range idx {
		units[i].SQL = sqls[j]
	}
	return nil
}

var versionRE = regexp.MustCompile(`\) (\d+)(?:\.(\d+))?`)

// checkPgDumpVersion refuses a pg_dump older than the source server: it
// would not understand the catalogs.
func checkPgDumpVersion(ctx context.Context, pgDump string, serverVersion int) error {
	out, err := exec.CommandContext(ctx, pgDump, "--version").Output()
	if err != nil {
		return fmt.Errorf("run %s --version: %w", pgDump, err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return nil
	}
	major, _ := strconv.Atoi(m[1])
	if major < serverVersion/10000 {
		return fmt.Errorf("%s is version %d but the source server is %d: install PostgreSQL %d client tools or newer",
			pgDump, major, serverVersion/10000, serverVersion/10000)
	}
	return nil
}

func newMigrationID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
