package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
)

// ReadFilterCatalog reads what filter.Select needs besides the tables
// already read: every index with the constraint it backs, the sequences
// behind identity columns, and the tables of every foreign key.
func ReadFilterCatalog(ctx context.Context, q Querier, tables []plan.Table) (filter.Catalog, error) {
	cat := filter.Catalog{Relations: Relations(tables)}
	rows, err := q.Query(ctx, `
SELECT i.indexrelid, n.nspname, c.relname,
       coalesce((SELECT con.oid FROM pg_constraint con WHERE con.conindid = i.indexrelid
                 AND con.contype IN ('p', 'u', 'x') AND con.conrelid = i.indrelid LIMIT 1), 0)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE `+userSchemas)
	if err != nil {
		return cat, fmt.Errorf("read indexes: %w", err)
	}
	cat.Indexes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (filter.Index, error) {
		var ix filter.Index
		return ix, r.Scan(&ix.OID, &ix.Schema, &ix.Name, &ix.ConstraintOID)
	})
	if err != nil {
		return cat, fmt.Errorf("read indexes: %w", err)
	}
	rows, err = q.Query(ctx, `
SELECT d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype = 'i' AND s.relkind = 'S'`)
	if err != nil {
		return cat, fmt.Errorf("read identity sequences: %w", err)
	}
	cat.IdentitySequences, err = pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return cat, fmt.Errorf("read identity sequences: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT oid, conrelid, confrelid FROM pg_constraint WHERE contype = 'f'`)
	if err != nil {
		return cat, fmt.Errorf("read foreign keys: %w", err)
	}
	cat.ForeignKeys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (filter.ForeignKey, error) {
		var fk filter.ForeignKey
		return fk, r.Scan(&fk.OID, &fk.TableOID, &fk.RefTableOID)
	})
	if err != nil {
		return cat, fmt.Errorf("read foreign keys: %w", err)
	}
	return cat, nil
}

// Relations are tables as the filter sees them.
func Relations(tables []plan.Table) []filter.Relation {
	out := make([]filter.Relation, len(tables))
	for i, t := range tables {
		out[i] = filter.Relation{OID: t.OID, Schema: t.Schema, Name: t.Name, Kind: t.RelKind,
			ParentOID: t.ParentOID, InheritsFrom: t.InheritsFrom}
	}
	return out
}
