package precheck

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
	"github.com/pgcaravan/pgcaravan/report"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// Every check is a method of run that adds one Check (sameDatabase adds
// one only when it fails). A query error makes that check Fail, not the
// whole precheck.

// userRelations filters pg_class c (joined to pg_namespace n) to the
// relations a clone carries: what package catalog reads.
const userRelations = `n.nspname NOT IN ('pg_catalog', 'information_schema', '` + catalog.OwnSchema + `')
	AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
	AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`

// userSchemas filters pg_namespace n the same way.
const userSchemas = `n.nspname NOT IN ('pg_catalog', 'information_schema', '` + catalog.OwnSchema + `')
	AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'`

// shown lists at most n items, one a line, saying how many more there are.
func shown(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "\n")
	}
	return strings.Join(items[:n], "\n") + fmt.Sprintf("\n… and %d more", len(items)-n)
}

// server is what the connection check learns about one side.
type server struct {
	systemID, database, role string
	version                  int
	versionText              string
	superuser                bool
}

func (s server) major() int { return s.version / 10000 }

// connect opens pgcaravan's own sessions to both sides (the same settings
// every coordinator and worker session has) and reads who they are.
func (r *run) connect(ctx context.Context) {
	for _, side := range []struct {
		u    pguri.URI
		conn **pgx.Conn
		info *server
	}{{r.src, &r.srcConn, &r.srcInfo}, {r.dst, &r.dstConn, &r.dstInfo}} {
		name := side.u.Role() + "_connection"
		conn, err := side.u.Connect(ctx, "pgcaravan-precheck")
		if err != nil {
			r.add(Check{Name: name, Level: Fail, Message: err.Error(),
				Hint: fmt.Sprintf("fix --%s; the checks that need the %s did not run", side.u.Role(), side.u.Role())})
			continue
		}
		var s server
		err = conn.QueryRow(ctx, `SELECT system_identifier::text, current_database(), current_user,
			current_setting('server_version_num')::int, current_setting('server_version'),
			(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
			FROM pg_control_system()`).Scan(&s.systemID, &s.database, &s.role, &s.version, &s.versionText, &s.superuser)
		if err != nil {
			_ = conn.Close(context.Background())
			r.failed(name, side.u, "read the server's identity", err)
			continue
		}
		*side.conn, *side.info = conn, s
		super := ""
		if s.superuser {
			super = ", a superuser"
		}
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("PostgreSQL %s, database %q as role %q%s", s.versionText, s.database, s.role, super)})
	}
}

// sameDatabase refuses a target that is the source.
func (r *run) sameDatabase() {
	if r.srcInfo.systemID == r.dstInfo.systemID && r.srcInfo.database == r.dstInfo.database {
		r.add(Check{Name: "distinct_databases", Level: Fail,
			Message: fmt.Sprintf("source and target are the same database (%q on system %s)", r.srcInfo.database, r.srcInfo.systemID),
			Hint:    "point --target at another database"})
	}
}

// versions compares the two servers' major versions.
func (r *run) versions() {
	s, d := r.srcInfo.major(), r.dstInfo.major()
	switch {
	case d < s:
		r.add(Check{Name: "versions", Level: Warn,
			Message: fmt.Sprintf("the target (PostgreSQL %d) is older than the source (%d): the schema dump may use syntax or features the target does not have, and COPY runs in text format", d, s),
			Hint:    fmt.Sprintf("use a target running PostgreSQL %d or newer, or try the schema restore on a scratch database first", s)})
	case d > s:
		r.add(Check{Name: "versions", Level: Pass,
			Message: fmt.Sprintf("upgrade from PostgreSQL %d to %d: COPY runs in text format (binary COPY needs the same major version)", s, d)})
	default:
		r.add(Check{Name: "versions", Level: Pass,
			Message: fmt.Sprintf("both PostgreSQL %d: binary COPY where every column type allows it", s)})
	}
}

// pgDump finds pg_dump and pg_restore and runs the coordinator's version
// check of pg_dump against the source.
func (r *run) pgDump(ctx context.Context) {
	tools, err := schema.FindTools()
	if err != nil {
		r.add(Check{Name: "pg_dump", Level: Fail, Message: err.Error(),
			Hint: fmt.Sprintf("install the PostgreSQL %d client tools (or newer) on the machine that runs the coordinator, and put them on PATH", r.srcInfo.major())})
		return
	}
	if err := r.cfg.Hooks.PgDumpCheck(ctx, tools.PgDump, r.srcInfo.version); err != nil {
		r.add(Check{Name: "pg_dump", Level: Fail, Message: err.Error(),
			Hint: fmt.Sprintf("put PostgreSQL %d client tools (or newer) first on PATH", r.srcInfo.major())})
		return
	}
	out, _ := exec.CommandContext(ctx, tools.PgDump, "--version").Output()
	r.add(Check{Name: "pg_dump", Level: Pass,
		Message: fmt.Sprintf("%s (%s) is new enough for the source's PostgreSQL %d", strings.TrimSpace(string(out)), tools.PgDump, r.srcInfo.major())})
}

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

// settingSources names where pg_settings.source says a value comes from.
var settingSources = map[string]string{
	"user":               "the role's setting (ALTER ROLE ... SET)",
	"database":           "the database's setting (ALTER DATABASE ... SET)",
	"database user":      "the role's setting in this database (ALTER ROLE ... IN DATABASE ... SET)",
	"configuration file": "the server's configuration (postgresql.conf)",
	"command line":       "the server's command line",
	"client":             "the connection string or PGOPTIONS",
}

// timeouts reads statement_timeout and idle_in_transaction_session_timeout
// as a session of the connecting role gets them when it sets nothing
// (role, database and server level), and checks that pgcaravan's own
// sessions, which ask for 0, really get 0 (a pooler can drop startup
// parameters).
func (r *run) timeouts(ctx context.Context, name string, u pguri.URI) {
	own := r.srcConn
	if u.Role() == r.dst.Role() {
		own = r.dstConn
	}
	cfg, err := pgx.ParseConfig(u.Raw())
	if err != nil {
		r.failed(name, u, "parse the connection string", err)
		return
	}
	cfg.RuntimeParams["application_name"] = "pgcaravan-precheck"
	plain, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		r.failed(name, u, "open a session with the role's own settings", err)
		return
	}
	defer plain.Close(context.Background())
	var found, broken []string
	for _, setting := range []string{"statement_timeout", "idle_in_transaction_session_timeout"} {
		var value, source, ours string
		err := plain.QueryRow(ctx, `SELECT current_setting($1), coalesce((SELECT source FROM pg_settings WHERE name = $1), '')`, setting).
			Scan(&value, &source)
		if err == nil {
			err = own.QueryRow(ctx, `SELECT current_setting($1)`, setting).Scan(&ours)
		}
		if err != nil {
			r.failed(name, u, "read "+setting, err)
			return
		}
		if value != "0" {
			from := settingSources[source]
			if from == "" {
				from = "source " + source
			}
			found = append(found, fmt.Sprintf("%s is %s for role %q (from %s)", setting, value, r.roleOf(u), from))
		}
		if ours != "0" {
			broken = append(broken, fmt.Sprintf("%s is %s in pgcaravan's own sessions, which ask for 0", setting, ours))
		}
	}
	switch {
	case len(broken) > 0:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("%s: %s: snapshot, COPY and index sessions that run longer are killed", u.Role(), strings.Join(broken, "; ")),
			Hint:    "connect directly rather than through a pooler that drops startup parameters, or set them to 0 for the role: ALTER ROLE ... SET statement_timeout = 0, and the same for idle_in_transaction_session_timeout"})
	case len(found) > 0:
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("%s: %s; pgcaravan's sessions set both to 0 (checked), and pg_dump and pg_restore do too, so they do not kill snapshot or COPY sessions", u.Role(), strings.Join(found, "; "))})
	default:
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("%s: statement_timeout and idle_in_transaction_session_timeout are 0 (off)", u.Role())})
	}
}

func (r *run) roleOf(u pguri.URI) string {
	if u.Role() == r.dst.Role() {
		return r.dstInfo.role
	}
	return r.srcInfo.role
}

// extensions finds extensions installed on the source that the target
// cannot create. pg_dump writes CREATE EXTENSION without a version, so the
// target gets its default version.
func (r *run) extensions(ctx context.Context) {
	const name = "extensions"
	rows, err := r.srcConn.Query(ctx, `SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)
	if err != nil {
		r.failed(name, r.src, "list extensions", err)
		return
	}
	type ext struct{ name, version string }
	var used []ext
	var n, v string
	if _, err := pgx.ForEachRow(rows, []any{&n, &v}, func() error { used = append(used, ext{n, v}); return nil }); err != nil {
		r.failed(name, r.src, "list extensions", err)
		return
	}
	rows, err = r.dstConn.Query(ctx, `SELECT name, coalesce(installed_version, default_version, '') FROM pg_available_extensions`)
	if err != nil {
		r.failed(name, r.dst, "list available extensions", err)
		return
	}
	avail := map[string]string{}
	if _, err := pgx.ForEachRow(rows, []any{&n, &v}, func() error { avail[n] = v; return nil }); err != nil {
		r.failed(name, r.dst, "list available extensions", err)
		return
	}
	var missing, differ []string
	for _, e := range used {
		got, ok := avail[e.name]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprintf("%s (version %s on the source)", e.name, e.version))
		case got != e.version:
			differ = append(differ, fmt.Sprintf("%s: %s on the source, %s on the target", e.name, e.version, got))
		}
	}
	switch {
	case len(missing) > 0:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("%d extension(s) used on the source are not available on the target (pg_available_extensions):\n%s", len(missing), shown(missing, 20)),
			Hint:    "install their packages on the target server (the restore runs CREATE EXTENSION), or drop them on the source if nothing uses them"})
	case len(differ) > 0:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("%d extension(s) will be created at another version on the target:\n%s", len(differ), shown(differ, 20)),
			Hint:    "make the versions match (ALTER EXTENSION ... UPDATE on the source, or install that version on the target) if the objects they create must be the same"})
	case len(used) == 0:
		r.add(Check{Name: name, Level: Pass, Message: "the source uses no extension but plpgsql"})
	default:
		r.add(Check{Name: name, Level: Pass, Message: fmt.Sprintf("the target can create all %d extension(s) the source uses", len(used))})
	}
}

// tablespaces finds tablespaces the source's relations live in that the
// target lacks: the restore sets default_tablespace to them and fails.
func (r *run) tablespaces(ctx context.Context) {
	const name = "tablespaces"
	rows, err := r.srcConn.Query(ctx, `SELECT DISTINCT t.spcname::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_tablespace t ON t.oid = c.reltablespace
		WHERE c.reltablespace <> 0 AND `+userRelations+` ORDER BY 1`)
	if err != nil {
		r.failed(name, r.src, "list tablespaces", err)
		return
	}
	used, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.src, "list tablespaces", err)
		return
	}
	rows, err = r.dstConn.Query(ctx, `SELECT spcname::text FROM pg_tablespace`)
	if err != nil {
		r.failed(name, r.dst, "list tablespaces", err)
		return
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.dst, "list tablespaces", err)
		return
	}
	onTarget := map[string]bool{}
	for _, h := range have {
		onTarget[h] = true
	}
	var missing []string
	for _, u := range used {
		if !onTarget[u] {
			missing = append(missing, u)
		}
	}
	switch {
	case len(missing) > 0:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("%d tablespace(s) that source tables or indexes live in are missing on the target, and the schema restore would fail on them:\n%s", len(missing), shown(missing, 20)),
			Hint:    "create them on the target first (CREATE TABLESPACE name LOCATION '/path', as a superuser), with room for what they hold"})
	case len(used) > 0:
		r.add(Check{Name: name, Level: Pass, Message: fmt.Sprintf("the target has all %d tablespace(s) the source's tables and indexes use: %s", len(used), strings.Join(used, ", "))})
	default:
		r.add(Check{Name: name, Level: Pass, Message: "every source table and index is in the database's default tablespace"})
	}
}

// rolesQuery lists the roles that own objects the clone carries, or are
// granted (or granted) privileges on them, with which of the two.
const rolesQuery = `
WITH owner(oid) AS (
  SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + userRelations + `
  UNION SELECT n.nspowner FROM pg_namespace n WHERE ` + userSchemas + `
  UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ` + userSchemas + `
  UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE ` + userSchemas + `
  UNION SELECT lomowner FROM pg_largeobject_metadata
  UNION SELECT pubowner FROM pg_publication WHERE pubname NOT LIKE 'pgcaravan\_%'
), acl(a) AS (
  SELECT c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + userRelations + `
  UNION ALL SELECT a.attacl FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attacl IS NOT NULL AND ` + userRelations + `
  UNION ALL SELECT n.nspacl FROM pg_namespace n WHERE ` + userSchemas + `
  UNION ALL SELECT p.proacl FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ` + userSchemas + `
  UNION ALL SELECT t.typacl FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE ` + userSchemas + `
  UNION ALL SELECT lomacl FROM pg_largeobject_metadata
  UNION ALL SELECT defaclacl FROM pg_default_acl
), grantee(oid) AS (
  SELECT x.grantee FROM acl, aclexplode(acl.a) x
  UNION SELECT x.grantor FROM acl, aclexplode(acl.a) x
  UNION SELECT defaclrole FROM pg_default_acl
)
SELECT r.rolname, r.oid IN (SELECT oid FROM owner), r.oid IN (SELECT oid FROM grantee)
FROM pg_roles r
WHERE (r.oid IN (SELECT oid FROM owner) OR r.oid IN (SELECT oid FROM grantee)) AND r.rolname NOT LIKE 'pg\_%'
ORDER BY 1`

// roles finds the roles the restore needs (owners and grantees) that the
// target does not have: pg_restore fails on the first one.
func (r *run) roles(ctx context.Context) {
	const name = "roles"
	rows, err := r.srcConn.Query(ctx, rolesQuery)
	if err != nil {
		r.failed(name, r.src, "list the roles that own objects or have grants", err)
		return
	}
	type need struct {
		name            string
		owns, isGrantee bool
	}
	var needs []need
	var nd need
	if _, err := pgx.ForEachRow(rows, []any{&nd.name, &nd.owns, &nd.isGrantee}, func() error { needs = append(needs, nd); return nil }); err != nil {
		r.failed(name, r.src, "list the roles that own objects or have grants", err)
		return
	}
	rows, err = r.dstConn.Query(ctx, `SELECT rolname FROM pg_roles`)
	if err != nil {
		r.failed(name, r.dst, "list roles", err)
		return
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.dst, "list roles", err)
		return
	}
	onTarget := map[string]bool{}
	for _, h := range have {
		onTarget[h] = true
	}
	var missing []string
	fatal := false
	for _, n := range needs {
		if onTarget[n.name] {
			continue
		}
		var why []string
		if n.owns {
			why = append(why, "owns objects")
			fatal = fatal || !r.cfg.NoOwner
		}
		if n.isGrantee {
			why = append(why, "has or gave grants")
			fatal = fatal || !r.cfg.NoACL
		}
		missing = append(missing, fmt.Sprintf("%s (%s)", n.name, strings.Join(why, ", ")))
	}
	switch {
	case len(missing) == 0:
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("the target has all %d role(s) that own objects or have grants on the source", len(needs))})
	case r.cfg.Roles:
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("%d role(s) that own objects or have grants on the source are missing on the target; --roles makes them from the source's before the schema:\n%s", len(missing), shown(missing, 20))})
	case fatal:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("%d role(s) that own objects or have grants on the source are missing on the target, and the schema restore would fail on them:\n%s", len(missing), shown(missing, 20)),
			Hint:    "create them on the target first (pg_dumpall --roles-only on the source gives their definitions), or pass --no-owner and/or --no-acl to leave owners and grants out"})
	default:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("%d role(s) of the source are missing on the target; --no-owner/--no-acl leave them out, so the target's objects get other owners and fewer grants:\n%s", len(missing), shown(missing, 20)),
			Hint:    "create them on the target if the owners and grants must be the same"})
	}
}

// targetEmpty uses the coordinator's own conflict check (package catalog):
// the setup refuses a target that has objects the clone creates.
func (r *run) targetEmpty(ctx context.Context) {
	const name = "target_empty"
	if r.cfg.Running {
		r.add(Check{Name: name, Level: Pass, Message: "not judged: this migration is writing the target"})
		return
	}
	want, err := catalog.Objects(ctx, r.srcConn)
	if err != nil {
		r.failed(name, r.src, "list objects", err)
		return
	}
	have, err := catalog.Objects(ctx, r.dstConn)
	if err != nil {
		r.failed(name, r.dst, "list objects", err)
		return
	}
	conflicts := catalog.Conflicts(want, have)
	switch {
	case len(conflicts) > 0 && r.cfg.DropIfExists:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("the target already has %d object(s) the clone creates; --drop-if-exists drops them first:\n%s", len(conflicts), shown(conflicts, 20)),
			Hint:    "make sure nothing on the target needs them"})
	case len(conflicts) > 0:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("the target already has %d object(s) the clone would create, and the clone refuses to start:\n%s", len(conflicts), shown(conflicts, 20)),
			Hint:    "point --target at an empty database, or pass --drop-if-exists to drop them first"})
	case len(have) > 0:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("the target is not empty: it has %d object(s) the clone does not create:\n%s", len(have), shown(have, 10)),
			Hint:    "make sure adding the source's objects to this database is what you want"})
	default:
		r.add(Check{Name: name, Level: Pass, Message: "the target is empty"})
	}
}

// forecast sums what the target must hold and samples the source's WAL
// rate, then estimates the WAL written during the copy.
func (r *run) forecast(ctx context.Context) {
	f := &r.report.Forecast
	f.AssumedCopyRate = r.cfg.CopyRate
	var tables int
	err := r.srcConn.QueryRow(ctx, `SELECT count(*),
		  coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
		  + CASE WHEN EXISTS (SELECT 1 FROM pg_largeobject_metadata) THEN pg_total_relation_size('pg_catalog.pg_largeobject') ELSE 0 END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'm') AND `+userRelations).Scan(&tables, &f.DataBytes)
	if err != nil {
		r.failed("forecast_space", r.src, "sum table and index sizes", err)
		return
	}
	f.EstimatedCopy = time.Duration(float64(f.DataBytes) / float64(r.cfg.CopyRate) * float64(time.Second)).Round(time.Second)
	r.space(ctx, tables)
	r.walRate(ctx)
}

// space says how much room the target needs. Free disk space cannot be
// read over SQL (no core function reports it, to any role), so it is
// always a warning with the number to compare against.
func (r *run) space(ctx context.Context, tables int) {
	dataDir, maxWAL := "", "unknown"
	if r.dstConn != nil {
		// data_directory is hidden from roles without pg_read_all_settings:
		// no row.
		_ = r.dstConn.QueryRow(ctx, `SELECT coalesce((SELECT setting FROM pg_settings WHERE name = 'data_directory'), ''),
			current_setting('max_wal_size')`).Scan(&dataDir, &maxWAL)
	}
	where := "the target's data directory (and any tablespace the source's tables use)"
	if dataDir != "" {
		where = fmt.Sprintf("the target's data directory %s (and any tablespace the source's tables use)", dataDir)
	}
	r.add(Check{Name: "forecast_space", Level: Warn,
		Message: fmt.Sprintf("the target needs about %s free for %d table(s) with their TOAST, indexes and large objects (their size on the source); free disk space cannot be read over SQL",
			report.Bytes(r.report.Forecast.DataBytes), tables),
		Hint: fmt.Sprintf("check with df on %s that more than that is free, plus room for WAL (max_wal_size is %s)", where, maxWAL)})
}

// walRate samples pg_current_wal_lsn() twice, WALSample apart.
func (r *run) walRate(ctx context.Context) {
	const name = "forecast_wal"
	f := &r.report.Forecast
	read := func() (pglogrepl.LSN, time.Time, error) {
		var s string
		var standby bool
		err := r.srcConn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
			(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).Scan(&standby, &s)
		if err != nil {
			return 0, time.Time{}, err
		}
		lsn, err := pglogrepl.ParseLSN(s)
		return lsn, time.Now(), err
	}
	a, at, err := read()
	if err != nil {
		r.failed(name, r.src, "read the WAL position", err)
		return
	}
	t := time.NewTimer(r.cfg.WALSample)
	select {
	case <-ctx.Done():
		t.Stop()
		return
	case <-t.C:
	}
	b, bt, err := read()
	if err != nil {
		r.failed(name, r.src, "read the WAL position", err)
		return
	}
	f.WALSample = bt.Sub(at)
	if b > a && f.WALSample > 0 {
		f.WALBytesPerSecond = float64(b-a) / f.WALSample.Seconds()
	}
	f.EstimatedWALBytes = int64(f.WALBytesPerSecond * f.EstimatedCopy.Seconds())
	took := "about " + f.EstimatedCopy.String()
	if f.EstimatedCopy < time.Second {
		took = "under a second"
	}
	msg := fmt.Sprintf("the source wrote %s/s of WAL over %s; at an assumed copy rate of %s/s (not measured) the copy takes %s, during which about %s of WAL is written",
		report.Bytes(int64(f.WALBytesPerSecond)), f.WALSample.Round(time.Millisecond), report.Bytes(f.AssumedCopyRate),
		took, report.Bytes(f.EstimatedWALBytes))
	if r.cfg.Follow {
		msg += "; the cdcnode spools that to its --dir until the target has applied it"
		r.add(Check{Name: name, Level: Pass, Message: msg,
			Hint: fmt.Sprintf("give the cdcnode's --dir well over %s free (writes on the source may peak above the sample)", report.Bytes(f.EstimatedWALBytes))})
		return
	}
	r.add(Check{Name: name, Level: Pass, Message: msg + "; an offline clone keeps none of it (no slot)"})
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
