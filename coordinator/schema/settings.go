package schema

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// Querier is what reads a catalog: a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Setting is one ALTER DATABASE ... SET of the source database, or one
// ALTER ROLE ... IN DATABASE ... SET when Role is not empty: a row of
// pg_db_role_setting for the database. pg_dump writes them only with
// --create, naming the source database; the coordinator writes them for
// the target's.
type Setting struct {
	Role  string `json:"role,omitempty"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ReadSettings reads the settings of the database q is connected to, the
// database's own first, each group in the order they were set.
func ReadSettings(ctx context.Context, q Querier) ([]Setting, error) {
	rows, err := q.Query(ctx, `SELECT coalesce(r.rolname, ''), c.item
	FROM pg_db_role_setting s
	LEFT JOIN pg_roles r ON r.oid = s.setrole
	CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS c(item, n)
	WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND (s.setrole = 0 OR r.oid IS NOT NULL)
	ORDER BY s.setrole <> 0, r.rolname, c.n`)
	if err != nil {
		return nil, fmt.Errorf("read database settings: %w", err)
	}
	defer rows.Close()
	var out []Setting
	for rows.Next() {
		var role, item string
		if err := rows.Scan(&role, &item); err != nil {
			return nil, fmt.Errorf("read database settings: %w", err)
		}
		name, value, _ := strings.Cut(item, "=")
		out = append(out, Setting{Role: role, Name: name, Value: value})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read database settings: %w", err)
	}
	return out, nil
}

// SQL is the statement that makes the setting on database db.
func (s Setting) SQL(db string) string {
	target := "DATABASE " + ident.Quote(db)
	if s.Role != "" {
		target = "ROLE " + ident.Quote(s.Role) + " IN DATABASE " + ident.Quote(db)
	}
	return fmt.Sprintf("ALTER %s SET %s TO %s;", target, ident.Quote(s.Name), s.valueSQL())
}

// listQuoted are the settings whose stored value is a list of quoted
// elements, which pg_dump splits and writes as one literal each (its
// variable_is_guc_list_quote).
var listQuoted = map[string]bool{
	"local_preload_libraries": true, "search_path": true, "session_preload_libraries": true,
	"shared_preload_libraries": true, "temp_tablespaces": true, "unix_socket_directories": true,
}

// valueSQL is the value as pg_dump writes it (makeAlterConfigCommand).
func (s Setting) valueSQL() string {
	if !listQuoted[strings.ToLower(s.Name)] {
		return ident.Literal(s.Value)
	}
	elems, ok := splitGUCList(s.Value)
	if !ok {
		return ident.Literal(s.Value)
	}
	lits := make([]string, len(elems))
	for i, e := range elems {
		lits[i] = ident.Literal(e)
	}
	return strings.Join(lits, ", ")
}

// splitGUCList splits a stored list value like `"$user", public` into its
// elements, as PostgreSQL's SplitGUCList does: commas separate, double
// quotes quote (with "" for a quote), and unquoted names are kept as they
// are. An empty value is one empty element.
func splitGUCList(v string) ([]string, bool) {
	var out []string
	i := 0
	skipSpace := func() {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
			i++
		}
	}
	skipSpace()
	if i == len(v) {
		return []string{""}, true
	}
	for {
		skipSpace()
		var b strings.Builder
		if i < len(v) && v[i] == '"' {
			i++
			for {
				if i >= len(v) {
					return nil, false
				}
				if v[i] == '"' {
					if i+1 < len(v) && v[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(v[i])
				i++
			}
		} else {
			for i < len(v) && v[i] != ',' && v[i] != ' ' && v[i] != '\t' && v[i] != '\n' && v[i] != '\r' {
				b.WriteByte(v[i])
				i++
			}
			if b.Len() == 0 {
				return nil, false
			}
		}
		out = append(out, b.String())
		skipSpace()
		if i == len(v) {
			return out, true
		}
		if v[i] != ',' {
			return nil, false
		}
		i++
	}
}
