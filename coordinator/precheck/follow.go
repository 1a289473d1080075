package precheck

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/report"
)

// follow runs the coordinator's own --follow check: the setup refuses
// exactly what this reports.
func (r *run) follow(ctx context.Context) {
	if err := r.cfg.Hooks.FollowCheck(ctx, r.srcConn, r.src); err != nil {
		r.add(Check{Name: "follow", Level: Fail, Message: err.Error(),
			Hint: "fix each item on the source (or run without --follow for an offline clone)"})
		return
	}
	r.add(Check{Name: "follow", Level: Pass,
		Message: "wal_level is logical, the role may replicate, and a replication slot and a WAL sender are free"})
}

// replicaIdentity lists the tables whose UPDATE and DELETE logical
// decoding cannot identify rows for: no primary key and no replica
// identity (the same condition the coordinator's publication setup uses).
func (r *run) replicaIdentity(ctx context.Context) {
	const name = "replica_identity"
	rows, err := r.srcConn.Query(ctx, `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND `+userRelations+`
		  AND (c.relreplident = 'n'
		    OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
		    OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
		ORDER BY 1`)
	if err != nil {
		r.failed(name, r.src, "look for tables without a primary key", err)
		return
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.src, "look for tables without a primary key", err)
		return
	}
	if len(tables) == 0 {
		r.add(Check{Name: name, Level: Pass, Message: "every table has a primary key or a replica identity"})
		return
	}
	c := Check{Name: name, Level: Warn}
	list := shown(tables, 20)
	switch {
	case r.cfg.Follow && r.cfg.ReplicaIdentityFull:
		c.Message = fmt.Sprintf("%d table(s) have no primary key or replica identity; --replica-identity-full will set REPLICA IDENTITY FULL on them on the source:\n%s", len(tables), list)
		c.Hint = "expect more WAL for their UPDATEs and DELETEs (every old row is logged), and slower apply on the target; or add primary keys"
	case r.cfg.Follow:
		c.Message = fmt.Sprintf("%d table(s) have no primary key or replica identity: their UPDATEs and DELETEs during the migration will NOT be carried to the target (only INSERT and TRUNCATE are):\n%s", len(tables), list)
		c.Hint = "add a primary key (or REPLICA IDENTITY USING INDEX on a unique index), or run with --replica-identity-full"
	default:
		c.Message = fmt.Sprintf("%d table(s) have no primary key or replica identity: they copy fine offline, but a --follow migration could not carry their UPDATEs and DELETEs, and duplicate rows cannot be told apart:\n%s", len(tables), list)
		c.Hint = "add primary keys if you will migrate with --follow; nothing to do for an offline clone"
	}
	r.add(c)
}

// unlogged lists unlogged tables, with --follow: they write no WAL, so
// their changes during the migration cannot be carried (the coordinator
// leaves them out of the publication and copies them as of the snapshot).
func (r *run) unlogged(ctx context.Context) {
	const name = "unlogged_tables"
	rows, err := r.srcConn.Query(ctx, `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'u' AND `+userRelations+` ORDER BY 1`)
	if err != nil {
		r.failed(name, r.src, "look for unlogged tables", err)
		return
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.src, "look for unlogged tables", err)
		return
	}
	if len(tables) == 0 {
		r.add(Check{Name: name, Level: Pass, Message: "no unlogged table: every table's changes can be carried"})
		return
	}
	r.add(Check{Name: name, Level: Warn,
		Message: fmt.Sprintf("%d table(s) are UNLOGGED: their rows are copied as of the snapshot, but their changes during the migration are NOT carried (unlogged tables write no WAL):\n%s", len(tables), shown(tables, 20)),
		Hint:    "run ALTER TABLE ... SET LOGGED on the source before the migration if their changes matter"})
}

// longTransactions lists transactions open for longer than the threshold
// on the source, including prepared ones.
func (r *run) longTransactions(ctx context.Context) {
	const name = "long_transactions"
	own := ""
	if r.cfg.Running {
		// The running migration's snapshot is supposed to be open.
		own = `AND coalesce(application_name, '') NOT LIKE 'pgcaravan%'`
	}
	rows, err := r.srcConn.Query(ctx, `SELECT pid, coalesce(usename, ''), coalesce(application_name, ''),
			coalesce(client_addr::text, 'local'), coalesce(state, ''),
			extract(epoch FROM now() - xact_start)::bigint, backend_xid IS NOT NULL
		FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		  AND xact_start < now() - make_interval(secs => $1) `+own+`
		ORDER BY xact_start`, r.cfg.LongTransaction.Seconds())
	if err != nil {
		r.failed(name, r.src, "look for long transactions", err)
		return
	}
	var found []string
	blocksSlot := false
	var pid int
	var user, app, from, state string
	var age int64
	var xid bool
	_, err = pgx.ForEachRow(rows, []any{&pid, &user, &app, &from, &state, &age, &xid}, func() error {
		what := "holds the xmin horizon"
		if xid {
			what = "holds a transaction ID and the xmin horizon"
			blocksSlot = true
		}
		found = append(found, fmt.Sprintf("pid %d (role %q, application %q, from %s) open for %s, %s, %s",
			pid, user, app, from, time.Duration(age)*time.Second, state, what))
		return nil
	})
	if err != nil {
		r.failed(name, r.src, "look for long transactions", err)
		return
	}
	rows, err = r.srcConn.Query(ctx, `SELECT gid, owner, database, extract(epoch FROM now() - prepared)::bigint
		FROM pg_prepared_xacts WHERE prepared < now() - make_interval(secs => $1) ORDER BY prepared`, r.cfg.LongTransaction.Seconds())
	if err != nil {
		r.failed(name, r.src, "look for prepared transactions", err)
		return
	}
	var gid, owner, db string
	_, err = pgx.ForEachRow(rows, []any{&gid, &owner, &db, &age}, func() error {
		blocksSlot = true
		found = append(found, fmt.Sprintf("prepared transaction %q (role %q, database %q) prepared %s ago", gid, owner, db, time.Duration(age)*time.Second))
		return nil
	})
	if err != nil {
		r.failed(name, r.src, "look for prepared transactions", err)
		return
	}
	var hidden int
	err = r.srcConn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND query = '<insufficient privilege>'`).Scan(&hidden)
	if err != nil {
		r.failed(name, r.src, "count sessions the role cannot see", err)
		return
	}
	threshold := r.cfg.LongTransaction.String()
	if len(found) > 0 {
		hint := "end them (COMMIT or ROLLBACK in the application, COMMIT PREPARED / ROLLBACK PREPARED, or SELECT pg_terminate_backend(pid)) before the migration starts: while they are open vacuum cannot clean up behind them"
		if blocksSlot {
			hint += ", and a transaction that holds a transaction ID delays the creation of --follow's replication slot until it ends"
		}
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("%d transaction(s) on the source have been open longer than %s:\n%s", len(found), threshold, shown(found, 20)),
			Hint:    hint})
		return
	}
	if hidden > 0 {
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("no transaction open longer than %s among the sessions this role can see, but %d session(s) of other roles are hidden from it", threshold, hidden),
			Hint:    "run precheck as a role with pg_read_all_stats (GRANT pg_read_all_stats TO ...) to see every session"})
		return
	}
	r.add(Check{Name: name, Level: Pass, Message: fmt.Sprintf("no transaction on the source has been open longer than %s", threshold)})
}

// inactiveSlots lists replication slots nobody consumes: they retain WAL
// on the source until its disk fills.
func (r *run) inactiveSlots(ctx context.Context) {
	const name = "inactive_slots"
	rows, err := r.srcConn.Query(ctx, `SELECT slot_name::text, slot_type, coalesce(database::text, ''), coalesce(wal_status, ''),
			coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint
		FROM pg_replication_slots WHERE NOT active ORDER BY 5 DESC, 1`)
	if err != nil {
		r.failed(name, r.src, "list replication slots", err)
		return
	}
	var slots []string
	ours := false
	var slot, typ, db, walStatus string
	var retained int64
	_, err = pgx.ForEachRow(rows, []any{&slot, &typ, &db, &walStatus, &retained}, func() error {
		s := fmt.Sprintf("%s (%s", slot, typ)
		if db != "" {
			s += ", database " + db
		}
		s += fmt.Sprintf(") retains %s of WAL", report.Bytes(retained))
		if walStatus == "lost" {
			s += " (wal_status lost: it can no longer be used)"
		}
		if strings.HasPrefix(slot, "pgcaravan_") {
			s += ", left by a pgcaravan migration"
			ours = true
		}
		slots = append(slots, s)
		return nil
	})
	if err != nil {
		r.failed(name, r.src, "list replication slots", err)
		return
	}
	if len(slots) == 0 {
		r.add(Check{Name: name, Level: Pass, Message: "no inactive replication slot on the source"})
		return
	}
	hint := "drop each slot nothing will consume again: SELECT pg_drop_replication_slot('NAME')"
	if ours {
		hint += "; for a pgcaravan_* slot, start that migration's cdcnode, or run pgcaravan cleanup with its --dir"
	}
	r.add(Check{Name: name, Level: Warn,
		Message: fmt.Sprintf("%d inactive replication slot(s) on the source retain WAL until its disk fills:\n%s", len(slots), shown(slots, 20)),
		Hint:    hint})
}
