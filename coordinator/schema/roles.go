package schema

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// rolesScriptName names pg_dumpall's output in errors.
const rolesScriptName = "roles from pg_dumpall --roles-only of the source"

// DumpRoles returns the roles of the source's server, as pg_dumpall
// --roles-only prints them: CREATE ROLE, ALTER ROLE, their comments,
// settings and memberships. noPasswords leaves the passwords out
// (--no-role-passwords), which also lets a role that cannot read pg_authid
// dump roles, as on most managed services.
func (t Tools) DumpRoles(ctx context.Context, src pguri.URI, noPasswords bool) (string, error) {
	if t.PgDumpAll == "" {
		return "", fmt.Errorf("%w: pg_dumpall is not on PATH; --roles needs it (install the PostgreSQL client package)", ErrToolMissing)
	}
	args := []string{"--roles-only", "--database=" + conninfoDB(src.Database())}
	if noPasswords {
		args = append(args, "--no-role-passwords")
	}
	out, err := run(ctx, t.PgDumpAll, args, append(src.LibpqEnv(), "PGCLIENTENCODING=UTF8"))
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "pg_authid") && !noPasswords {
			msg += " (the source role cannot read passwords: pass --no-role-passwords, and set passwords on the target afterwards)"
		}
		return "", fmt.Errorf("dump roles of source %s: %s", src, msg)
	}
	return string(out), nil
}

// RolesScript turns pg_dumpall --roles-only output into the script that
// makes the roles on the target. Roles the target already has (exists says
// which) are left as they are: their CREATE ROLE, ALTER ROLE, comment and
// security labels are dropped, so the script never fails on CREATE ROLE
// postgres and never changes an existing role's password. Memberships are
// all granted. skipped are the roles left as they are, in dump order.
func RolesScript(dump string, exists func(role string) bool) (s Script, skipped []string, err error) {
	parsed, err := ParseScript(rolesScriptName, StripMetaCommands(dump))
	if err != nil {
		return s, nil, err
	}
	s.Name = parsed.Name
	seen := map[string]bool{}
	for _, st := range parsed.Statements {
		if strings.HasPrefix(st.SQL, "SET client_encoding") {
			continue // the session is UTF8 already; pgx needs it to stay so
		}
		if role, ok := roleSubject(st.SQL); ok && exists(role) {
			if !seen[role] {
				seen[role] = true
				skipped = append(skipped, role)
			}
			continue
		}
		s.Statements = append(s.Statements, st)
	}
	return s, skipped, nil
}

// rolePrefixes start the statements pg_dumpall writes about one role.
var rolePrefixes = []string{"CREATE ROLE ", "ALTER ROLE ", "COMMENT ON ROLE "}

// roleSubject is the role a CREATE ROLE, ALTER ROLE, COMMENT ON ROLE or
// SECURITY LABEL ... ON ROLE statement of pg_dumpall is about.
func roleSubject(sql string) (string, bool) {
	rest := ""
	for _, p := range rolePrefixes {
		if r, ok := strings.CutPrefix(sql, p); ok {
			rest = r
			break
		}
	}
	if rest == "" && strings.HasPrefix(sql, "SECURITY LABEL FOR ") {
		if i := strings.Index(sql, " ON ROLE "); i >= 0 {
			rest = sql[i+len(" ON ROLE "):]
		}
	}
	if rest == "" {
		return "", false
	}
	return leadingIdent(rest)
}

// leadingIdent reads the identifier at the start of s, as quote_ident
// writes it: "quoted", with "" for a quote, or bare lower case.
func leadingIdent(s string) (string, bool) {
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] == '"' {
				if i+1 < len(s) && s[i+1] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				return b.String(), true
			}
			b.WriteByte(s[i])
		}
		return "", false
	}
	i := 0
	for i < len(s) && identChar(s[i]) {
		i++
	}
	return s[:i], i > 0
}
