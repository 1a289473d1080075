package precheck

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
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
