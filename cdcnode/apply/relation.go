package apply

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// column is one published column of a relation.
type column struct {
	name  string
	key   bool // part of the replica identity
	quote string
	// identityAlways columns take writes only with OVERRIDING SYSTEM VALUE
	// (INSERT) and cannot be SET by UPDATE.
	identityAlways bool
	// noEquality types (json, point, xml, …) have no = operator; they are
	// matched by their text form.
	noEquality bool
}

// relation is a source relation as pgoutput described it, with what the
// target's catalog adds.
type relation struct {
	id        uint32
	schema    string
	name      string
	qualified string
	identity  uint8 // 'd' default, 'n' nothing, 'f' full, 'i' index
	columns   []column
	anyAlways bool
}

// describe builds a relation from its Relation message and the target's
// catalog.
func describe(ctx context.Context, conn *pgx.Conn, m *pglogrepl.RelationMessage) (*relation, error) {
	r := &relation{id: m.RelationID, schema: m.Namespace, name: m.RelationName,
		qualified: ident.Qualified(m.Namespace, m.RelationName), identity: m.ReplicaIdentity}
	rows, err := conn.Query(ctx, `SELECT a.attname, a.attidentity = 'a',
		NOT EXISTS (SELECT 1 FROM pg_operator o WHERE o.oprname = '=' AND o.oprleft = a.atttypid AND o.oprright = a.atttypid)
		FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, r.qualified)
	if err != nil {
		return nil, fmt.Errorf("target: describe %s: %w", r.qualified, err)
	}
	type attr struct{ always, noEq bool }
	attrs := map[string]attr{}
	var name string
	var a attr
	if _, err := pgx.ForEachRow(rows, []any{&name, &a.always, &a.noEq}, func() error { attrs[name] = a; return nil }); err != nil {
		return nil, fmt.Errorf("target: describe %s: %w", r.qualified, err)
	}
	for _, c := range m.Columns {
		at, ok := attrs[c.Name]
		if !ok {
			return nil, fmt.Errorf("target: table %s has no column %q that the source publishes (was the schema changed during the migration?)", r.qualified, c.Name)
		}
		r.columns = append(r.columns, column{name: c.Name, key: c.Flags&1 == 1, quote: ident.Quote(c.Name),
			identityAlways: at.always, noEquality: at.noEq})
		r.anyAlways = r.anyAlways || at.always
	}
	return r, nil
}
