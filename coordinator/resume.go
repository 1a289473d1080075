package coordinator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/rpcserver"
	"github.com/pgcaravan/pgcaravan/coordinator/store"
	"github.com/pgcaravan/pgcaravan/shared/ident"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// resume picks up a migration a previous coordinator left unfinished
// (ARCHITECTURE.md "Snapshot epochs"). The exported snapshot died with that
// process, so:
//
//  1. the same two databases are checked by system identifier;
//  2. the sessions of leases that were running are ended (fenced);
//  3. a new snapshot is exported: a new epoch with its LSN;
//  4. every table with a copy unit not done is reset: its rows and the
//     done-markers of its copy units are removed on the target in one
//     transaction, and its copy units are delivered again under the new
//     epoch; tables whose copy units are all done keep their epoch;
//  5. units that had failed are requeued: restarting is how an operator
//     retries after fixing the cause.
func (c *Coordinator) resume(ctx context.Context, st *store.Store, rpc *rpcserver.Server, meta store.Meta) (*heldSnapshot, error) {
	// 1. The same databases.
	srcConn, err := c.src.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return nil, err
	}
	snap := &heldSnapshot{conn: srcConn}
	dstConn, err := c.dst.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return snap, err
	}
	defer dstConn.Close(context.Background())
	for _, side := range []struct {
		conn *pgx.Conn
		uri  pguri.URI
		want store.Identity
	}{{srcConn, c.src, meta.Source}, {dstConn, c.dst, meta.Target}} {
		id, err := catalog.ReadIdentity(ctx, side.conn)
		if err != nil {
			return snap, fmt.Errorf("%s %s: %w", side.uri.Role(), side.uri, err)
		}
		if id.SystemID != side.want.SystemID || id.Database != side.want.Database {
			return snap, fmt.Errorf("%w: %s holds migration %s whose %s is database %q on system %s, but --%s is %q on system %s (use another --dir)",
				ErrOtherMigration, c.cfg.Dir, meta.MigrationID, side.uri.Role(), side.want.Database, side.want.SystemID,
				side.uri.Role(), id.Database, id.SystemID)
		}
	}
	// A crash between saving the migration and forgetting the record of
	// its --follow setup leaves the record; the store names the same slot.
	pending, err := st.PendingCDC()
	if err == nil && pending != nil && pending.MigrationID == meta.MigrationID {
		err = st.ClearPendingCDC()
	} else if err == nil {
		err = c.dropLeftoverCDC(ctx, st)
	}
	if err != nil {
		return snap, err
	}
	rpc.SetMigration(meta)
	units, err := st.Units()
	if err != nil {
		return snap, err
	}
	tables, err := st.Tables()
	if err != nil {
		return snap, err
	}
	epochs, err := st.Epochs()
	if err != nil {
		return snap, err
	}

	// 2. End the sessions of the leases the old coordinator had handed out.
	for _, u := range units {
		if u.State == store.StateRunning {
			c.fence(ctx, u)
		}
	}

	// 3. A new epoch. With --follow its LSN must be exact: it comes from a
	// temporary slot, and the cdcnode applies a change to a table only from
	// its epoch's LSN on.
	epochID := uint32(len(epochs) + 1)
	if meta.Follow {
		if err := c.createSlot(ctx, snap, fmt.Sprintf("%s_epoch%d", meta.Slot, epochID), true); err != nil {
			return snap, err
		}
	} else if err := snap.export(ctx, c.src); err != nil {
		return snap, err
	}
	epoch := store.Epoch{ID: epochID, Snapshot: snap.id, LSN: snap.lsn, CreatedAt: time.Now()}

	// 4. Reset the tables whose copy is unfinished.
	unfinished := map[uint32]bool{}
	for _, u := range units {
		if u.Kind == plan.KindCopy && u.State != store.StateDone {
			unfinished[u.TableOID] = true
		}
	}
	var reset []store.Table
	var names []string
	for _, t := range tables {
		if unfinished[t.OID] {
			t.EpochID = epoch.ID
			reset = append(reset, t)
			names = append(names, t.QualifiedName())
		}
	}
	var changed []store.Unit
	var markers []int64
	for _, u := range units {
		switch {
		case u.Kind == plan.KindCopy && unfinished[u.TableOID]:
			markers = append(markers, int64(u.ID))
			u.State, u.Attempts, u.Rows, u.Bytes, u.NotBefore = store.StateReady, 0, 0, 0, time.Time{}
		case u.State == store.StateFailed: // 5.
			u.State, u.Attempts, u.NotBefore = store.StateReady, 0, time.Time{}
		case u.State == store.StateRunning: // leases that died with the old coordinator
			u.State, u.NotBefore = store.StateReady, time.Time{}
		default:
			continue
		}
		u.Token, u.WorkerID = "", ""
		changed = append(changed, u)
	}
	if err := resetTables(ctx, dstConn, meta.MigrationID, reset, markers); err != nil {
		return snap, fmt.Errorf("target %s: %w", c.dst, err)
	}
	if err := st.PutEpoch(epoch); err != nil {
		return snap, err
	}
	if err := st.PutTables(reset...); err != nil {
		return snap, err
	}
	if err := st.PutUnits(changed...); err != nil {
		return snap, err
	}
	err = st.UpdateMeta(func(m *store.Meta) {
		m.Snapshot = snap.id
		m.FinishedAt = time.Time{}
		if m.Phase == store.PhaseFailed {
			m.Phase = store.PhaseCopy
		}
		if len(reset) > 0 && !m.Follow {
			m.Warnings = append(m.Warnings, fmt.Sprintf(
				"coordinator restarted at %s: %d table(s) were recopied under a new snapshot (epoch %d at LSN %s); "+
					"this offline clone is consistent across tables only if nothing wrote to the source in between",
				time.Now().UTC().Format(time.RFC3339), len(reset), epoch.ID, epoch.LSN))
		}
	})
	if err != nil {
		return snap, err
	}
	c.log.Warn("resumed an unfinished migration", "migration_id", meta.MigrationID, "epoch", epoch.ID, "lsn", epoch.LSN,
		"tables_reset", len(reset), "units_requeued", len(changed))
	if len(names) > 0 {
		c.log.Info("tables recopied under the new epoch", "tables", strings.Join(names, ", "))
	}
	if m, err := st.Meta(); err == nil {
		rpc.SetMigration(m)
	}
	return snap, nil
}

// resetTables empties tables whose copy is to be redone and forgets their
// copy units' done-markers, in one target transaction.
func resetTables(ctx context.Context, dst *pgx.Conn, migrationID string, tables []store.Table, markers []int64) error {
	if len(tables) == 0 {
		return nil
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return fmt.Errorf("reset tables: %w", err)
	}
	defer tx.Rollback(context.Background())
	for _, t := range tables {
		// A table --after-schema made partitioned is emptied with its
		// partitions: TRUNCATE ONLY is refused on a partitioned table.
		truncate := "TRUNCATE ONLY "
		if t.Repartitioned() {
			truncate = "TRUNCATE "
		}
		if _, err := tx.Exec(ctx, truncate+ident.Qualified(t.Schema, t.Name)); err != nil {
			return fmt.Errorf("reset table %s: %w", t.QualifiedName(), err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pgcaravan.unit_done WHERE migration_id = $1 AND unit_id = ANY($2)`, migrationID, markers); err != nil {
		return fmt.Errorf("reset done-markers: %w", err)
	}
	return tx.Commit(ctx)
}

// fence ends the database sessions of one lease of a unit, on both sides,
// so that a worker that stopped heartbeating (stopped, partitioned away, or
// belonging to a dead coordinator's era) cannot keep locks or commit later.
// A session that commits before it is ended has written its done-marker,
// and the next delivery finds it.
func (c *Coordinator) fence(ctx context.Context, u store.Unit) {
	if u.Token == "" {
		return
	}
	app := pguri.UnitApplication(u.ID, u.Token)
	for _, side := range []pguri.URI{c.dst, c.src} {
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		conn, err := side.Connect(fctx, "pgcaravan-coordinator")
		if err != nil {
			cancel()
			c.log.Warn("cannot fence an expired lease", "unit_id", u.ID, "side", side.Role(), "error", err)
			continue
		}
		var ended int
		err = conn.QueryRow(fctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
			FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`, app).Scan(&ended)
		conn.Close(context.Background())
		cancel()
		if err != nil {
			c.log.Warn("cannot fence an expired lease", "unit_id", u.ID, "side", side.Role(), "error", err)
			continue
		}
		if ended > 0 {
			c.log.Info("ended the sessions of an expired lease", "unit_id", u.ID, "side", side.Role(), "sessions", ended)
		}
	}
}
