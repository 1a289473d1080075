// Package pguri parses PostgreSQL connection strings once and hands out the
// forms pgcaravan needs: a pgx config for its own sessions, an environment for
// the libpq tools it runs (pg_dump, pg_restore) that keeps the password off
// their command line, and a redacted form for logs and errors. It must not
// import any other pgcaravan package.
package pguri

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrEmpty is returned for an empty connection string.
var ErrEmpty = errors.New("pguri: empty connection string")

// URI is a parsed connection string. The zero value is not usable.
type URI struct {
	role   string
	raw    string
	config *pgconn.Config
}

// Parse parses a postgres:// URI or a key=value connection string. role names
// the input in errors ("source", "target").
func Parse(role, raw string) (URI, error) {
	if strings.TrimSpace(raw) == "" {
		return URI{}, fmt.Errorf("%s: %w (pass --%s or set PGCARAVAN_%s_URI)", role, ErrEmpty, role, strings.ToUpper(role))
	}
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		// pgconn's parse errors can quote the input; never echo a password.
		return URI{}, fmt.Errorf("%s: cannot parse connection string %s: %s", role, Redact(raw), redactErr(err, raw))
	}
	return URI{role: role, raw: raw, config: cfg}, nil
}

// ParsePair parses the source and target connection strings every
// component takes.
func ParsePair(source, target string) (src, dst URI, err error) {
	if src, err = Parse("source", source); err != nil {
		return src, dst, err
	}
	dst, err = Parse("target", target)
	return src, dst, err
}

// String is the connection string with the password replaced by "xxxxx".
func (u URI) String() string { return Redact(u.raw) }

// Raw is the connection string as given, password included. Use it only to
// open connections.
func (u URI) Raw() string { return u.raw }

// Database is the database name the string connects to.
func (u URI) Database() string { return u.config.Database }

// Config returns a fresh copy of the parsed pgconn config.
func (u URI) Config() *pgconn.Config { return u.config.Copy() }

// LibpqEnv returns PG* environment variables that make libpq tools connect
// where this URI does, without a password on the command line (which anyone
// on the host could read with ps). Pass the result as the child's env, and no
// -d/-h/-p/-U flags.
func (u URI) LibpqEnv() []string {
	c := u.config
	env := []string{
		"PGHOST=" + c.Host,
		"PGPORT=" + strconv.Itoa(int(c.Port)),
		"PGDATABASE=" + c.Database,
		"PGUSER=" + c.User,
	}
	if c.Password != "" {
		env = append(env, "PGPASSWORD="+c.Password)
	}
	// Carry the TLS intent: pgconn turns sslmode into a tls.Config, so read
	// the word back from the raw string.
	if mode := sslMode(u.raw); mode != "" {
		env = append(env, "PGSSLMODE="+mode)
	} else if c.TLSConfig == nil {
		env = append(env, "PGSSLMODE=disable")
	}
	for _, key := range []string{"sslrootcert", "sslcert", "sslkey", "application_name"} {
		if v := param(u.raw, key); v != "" {
			env = append(env, libpqEnvName(key)+"="+v)
		}
	}
	return env
}

func libpqEnvName(key string) string {
	switch key {
	case "sslrootcert":
		return "PGSSLROOTCERT"
	case "sslcert":
		return "PGSSLCERT"
	case "sslkey":
		return "PGSSLKEY"
	case "application_name":
		return "PGAPPNAME"
	}
	return ""
}

func sslMode(raw string) string { return param(raw, "sslmode") }

// param reads one parameter from either connection string form.
func param(raw, key string) string {
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		u, err := url.Parse(raw)
		if err != nil {
			return ""
		}
		return u.Query().Get(key)
	}
	for _, field := range strings.Fields(raw) {
		k, v, ok := strings.Cut(field, "=")
		if ok && k == key {
			return strings.Trim(v, "'")
		}
	}
	return ""
}

// Redact replaces the password in a connection string with "xxxxx". It works
// on both URI and key=value forms and on strings that do not parse.
func Redact(raw string) string {
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		u, err := url.Parse(raw)
		if err != nil {
			// Unparseable: drop everything between the scheme and the host.
			scheme, rest, _ := strings.Cut(raw, "://")
			if at := strings.LastIndex(rest, "@"); at >= 0 {
				return scheme + "://xxxxx@" + rest[at+1:]
			}
			return raw
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	fields := strings.Fields(raw)
	for i, f := range fields {
		if strings.HasPrefix(f, "password=") {
			fields[i] = "password=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}

// redactErr returns err's text with any password from raw removed.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if cfg, perr := pgconn.ParseConfig(raw); perr == nil && cfg.Password != "" {
		msg = strings.ReplaceAll(msg, cfg.Password, "xxxxx")
	}
	if u, perr := url.Parse(raw); perr == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// RedactError returns err's text with u's password removed: driver errors
// can echo connection parameters.
func RedactError(err error, u URI) string {
	return redactErr(err, u.raw)
}

// Role is what the string is for ("source", "target"), as given to Parse.
func (u URI) Role() string { return u.role }

// sessionParams keep the server from killing pgcaravan's long transactions
// and COPYs (PITFALLS.md: idle_in_transaction_session_timeout and
// statement_timeout kill snapshot and COPY sessions).
var sessionParams = map[string]string{
	"statement_timeout":                   "0",
	"idle_in_transaction_session_timeout": "0",
	"lock_timeout":                        "0",
}

// ConnConfig is a pgx config for one of pgcaravan's own sessions: timeouts
// that would kill long transactions are off, and the application name says
// which process it is.
func (u URI) ConnConfig(application string) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig(u.raw)
	if err != nil {
		// Parse accepted the same string; this cannot happen.
		panic(fmt.Sprintf("pguri: re-parse of %s: %v", u, err))
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["application_name"] = application
	return cfg
}

// Connect opens a session with ConnConfig. The error names the role and the
// redacted URI and says what to check.
func (u URI) Connect(ctx context.Context, application string) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, u.ConnConfig(application))
	if err != nil {
		return nil, fmt.Errorf("%s %s: cannot connect: %s (check the URI, that the server is up and accepts connections from this host, and the credentials)",
			u.role, u, redactErr(err, u.raw))
	}
	return conn, nil
}

// UnitApplication is the application_name of the sessions that run one
// lease of a unit. The coordinator finds them by it to end them when the
// lease expires (fencing), so a stopped worker cannot keep its locks.
func UnitApplication(unitID uint64, token string) string {
	if len(token) > 12 {
		token = token[:12]
	}
	return fmt.Sprintf("pgcaravan unit %d %s", unitID, token)
}

// ErrWrongDatabase means a connection string points at another database
// than the migration's.
var ErrWrongDatabase = errors.New("connection string points at another database than the coordinator's")

// CheckIdentity refuses a connection string that is not the migration's
// database (system identifier and name): a process writing into the wrong
// database would be a disaster no retry fixes.
func (u URI) CheckIdentity(ctx context.Context, application, migrationID, systemID, database string) error {
	conn, err := u.Connect(ctx, application)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var gotID, gotDB string
	err = conn.QueryRow(ctx, `SELECT system_identifier::text, current_database() FROM pg_control_system()`).Scan(&gotID, &gotDB)
	if err != nil {
		return fmt.Errorf("%s %s: read identity: %w", u.role, u, err)
	}
	if gotID != systemID || gotDB != database {
		return fmt.Errorf("%w: --%s %s is database %q on system %s, but migration %s copies %s database %q on system %s (fix --%s)",
			ErrWrongDatabase, u.role, u, gotDB, gotID, migrationID, u.role, database, systemID, u.role)
	}
	return nil
}

// ReplicationConn opens a logical replication connection (replication=database).
func (u URI) ReplicationConn(ctx context.Context, application string) (*pgconn.PgConn, error) {
	cfg := u.Config()
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = application
	// Values in pgoutput's text tuples follow these settings; fixing them
	// makes the text independent of the server's configuration.
	for k, v := range map[string]string{"DateStyle": "ISO", "IntervalStyle": "postgres", "TimeZone": "UTC",
		"extra_float_digits": "3", "bytea_output": "hex"} {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s %s: open a replication connection: %s (the role needs REPLICATION, and pg_hba.conf must allow it)",
			u.role, u, redactErr(err, u.raw))
	}
	return conn, nil
}
