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
	// matched by their text form, with the value read as typ first so that
	// both sides print under the target session's settings.
	noEquality bool
	typ        string // format_type of the column's type
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
	// coalesce: the table's one unique or exclusion index is the primary
	// key changes are matched by, so UPDATEs that keep the key can be
	// merged (coalesce.go).
	coalesce bool
	// partitioned: the target's table is partitioned where the source's
	// is not (an --after-schema conversion), so TRUNCATE must reach its
	// partitions.
	partitioned bool
}

// describe builds a relation from its Relation message and the target's
// catalog.
func describe(ctx context.Context, conn *pgx.Conn, m *pglogrepl.RelationMessage) (*relation, error) {
	r := &relation{id: m.RelationID, schema: m.Namespace, name: m.RelationName,
		qualified: ident.Qualified(m.Namespace, m.RelationName), identity: m.ReplicaIdentity}
	rows, err := conn.Query(ctx, `SELECT a.attname, a.attidentity = 'a', a.atttypid, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, r.qualified)
	if err != nil {
		return nil, fmt.Errorf("target: describe %s: %w", r.qualified, err)
	}
	type attr struct {
		always bool
		typ    uint32
		format string
	}
	attrs := map[string]attr{}
	var name string
	var a attr
	if _, err := pgx.ForEachRow(rows, []any{&name, &a.always, &a.typ, &a.format}, func() error { attrs[name] = a; return nil }); err != nil {
		return nil, fmt.Errorf("target: describe %s: %w", r.qualified, err)
	}
	eq := map[uint32]bool{}
	for _, c := range m.Columns {
		at, ok := attrs[c.Name]
		if !ok {
			return nil, fmt.Errorf("target: table %s has no column %q that the source publishes (was the schema changed during the migration?)", r.qualified, c.Name)
		}
		key := c.Flags&1 == 1
		col := column{name: c.Name, key: key, quote: ident.Quote(c.Name), identityAlways: at.always, typ: at.format}
		if key || r.identity == 'f' {
			has, err := hasEquality(ctx, conn, at.typ, eq, 0)
			if err != nil {
				return nil, fmt.Errorf("target: describe %s column %s: %w", r.qualified, c.Name, err)
			}
			col.noEquality = !has
		}
		r.columns = append(r.columns, col)
		r.anyAlways = r.anyAlways || at.always
	}
	if err := conn.QueryRow(ctx, `SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass`, r.qualified).Scan(&r.partitioned); err != nil {
		return nil, fmt.Errorf("target: describe %s: %w", r.qualified, err)
	}
	if r.identity == 'd' {
		err := conn.QueryRow(ctx, `SELECT count(*) = 1 AND bool_and(i.indisprimary)
			FROM pg_index i WHERE i.indrelid = $1::regclass AND (i.indisunique OR i.indisexclusion)`, r.qualified).Scan(&r.coalesce)
		if err != nil {
			return nil, fmt.Errorf("target: describe %s: %w", r.qualified, err)
		}
	}
	return r, nil
}

// hasEquality says whether "column = value" works for type oid: the type,
// its domain's base type, or a type it is binary-coercible to has an =
// operator; arrays need one for their element type; enums and ranges have
// one. Composite types are compared by their text form. It only reads the
// catalog, so it cannot fail inside an open apply transaction.
func hasEquality(ctx context.Context, conn *pgx.Conn, oid uint32, cache map[uint32]bool, depth int) (bool, error) {
	if v, ok := cache[oid]; ok {
		return v, nil
	}
	if depth > 8 {
		return false, nil
	}
	var typtype, category string
	var elem, base uint32
	var direct bool
	err := conn.QueryRow(ctx, `SELECT t.typtype::text, t.typcategory::text, t.typelem, t.typbasetype,
		EXISTS (SELECT 1 FROM pg_operator o WHERE o.oprname = '=' AND o.oprleft = o.oprright AND (o.oprleft = t.oid
			OR o.oprleft IN (SELECT c.casttarget FROM pg_cast c WHERE c.castsource = t.oid AND c.castmethod = 'b' AND c.castcontext = 'i')))
		FROM pg_type t WHERE t.oid = $1`, oid).Scan(&typtype, &category, &elem, &base, &direct)
	if err != nil {
		return false, fmt.Errorf("read type %d: %w", oid, err)
	}
	var has bool
	switch {
	case typtype == "d":
		has, err = hasEquality(ctx, conn, base, cache, depth+1)
	case category == "A" && elem != 0:
		has, err = hasEquality(ctx, conn, elem, cache, depth+1)
	case typtype == "e" || typtype == "r" || typtype == "m":
		has = true
	case typtype == "c":
		has = false
	default:
		has = direct
	}
	if err != nil {
		return false, err
	}
	cache[oid] = has
	return has, nil
}
