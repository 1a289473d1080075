// Package catalog reads what the coordinator needs from the source's
// catalogs, inside the transaction that holds the exported snapshot, so the
// plan describes exactly the data the workers will copy. It also looks for
// objects on the target that a clone would collide with. It only reads.
package catalog

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// Querier is a connection or transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// OwnSchema is pgcaravan's schema on the target (done-markers). It is never
// copied or compared.
const OwnSchema = "pgcaravan"

// userSchemas filters pg_namespace n to the schemas a clone carries.
const userSchemas = `n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcaravan')
	AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'`

// notExtensionMember filters out objects created by CREATE EXTENSION; the
// extension recreates them on the target.
const notExtensionMember = `NOT EXISTS (SELECT 1 FROM pg_depend d
	WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`

// Identity names a database and its server.
type Identity struct {
	SystemID      string
	Database      string
	ServerVersion int
}

// ReadIdentity reads the server's system identifier, the database name and
// the server version number.
func ReadIdentity(ctx context.Context, q Querier) (Identity, error) {
	var id Identity
	err := q.QueryRow(ctx, `SELECT system_identifier::text, current_database(),
		current_setting('server_version_num')::int FROM pg_control_system()`).
		Scan(&id.SystemID, &id.Database, &id.ServerVersion)
	if err != nil {
		return id, fmt.Errorf("read identity: %w", err)
	}
	return id, nil
}

// ReadTables reads every user relation with rows or indexes: tables,
// partitioned tables, materialized views and foreign tables, ordered by
// schema and name, with what the plan needs to split big tables (heap
// pages, an integer key and its distribution; see readSplitKeys).
func ReadTables(ctx context.Context, q Querier) ([]plan.Table, error) {
	rows, err := q.Query(ctx, `
SELECT c.oid, n.nspname, c.relname, c.relkind::text,
       coalesce((SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition), 0),
       coalesce((SELECT array_agg(i.inhparent::int8 ORDER BY i.inhseqno) FROM pg_inherits i
                 WHERE i.inhrelid = c.oid AND NOT c.relispartition), '{}'),
       coalesce(array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       coalesce(bool_and(t.typsend <> 0 AND t.typreceive <> 0
                AND (t.typelem = 0 OR (e.typsend <> 0 AND e.typreceive <> 0))), true),
       greatest(c.reltuples, 0)::bigint,
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_table_size(c.oid) ELSE 0 END,
       c.relispopulated
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
LEFT JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typelem <> 0
WHERE c.relkind IN ('r', 'p', 'm', 'f') AND `+userSchemas+` AND `+notExtensionMember+`
GROUP BY c.oid, n.nspname
ORDER BY n.nspname, c.relname`)
	if err != nil {
		return nil, fmt.Errorf("read tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (plan.Table, error) {
		var t plan.Table
		var inherits []int64
		err := r.Scan(&t.OID, &t.Schema, &t.Name, &t.RelKind, &t.ParentOID, &inherits, &t.Columns, &t.BinarySafe,
			&t.EstRows, &t.Bytes, &t.Populated)
		for _, p := range inherits {
			t.InheritsFrom = append(t.InheritsFrom, uint32(p))
		}
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("read tables: %w", err)
	}
	if err := readSplitKeys(ctx, q, tables); err != nil {
		return nil, err
	}
	return tables, nil
}

// Annotate fills in the catalog facts of post-data entries: the table each
// belongs to, the constraint behind it, the indexes an attachment joins.
func Annotate(ctx context.Context, q Querier, entries []plan.Entry) error {
	indexTable := map[uint32]uint32{}
	indexParent := map[uint32]uint32{}
	indexByName := map[string]uint32{}
	indexShape := map[uint32]plan.IndexShape{}
	rows, err := q.Query(ctx, `
SELECT i.indexrelid, i.indrelid, n.nspname, c.relname,
       coalesce((SELECT h.inhparent FROM pg_inherits h WHERE h.inhrelid = i.indexrelid), 0),
       a.amname, i.indnkeyatts, i.indexprs IS NOT NULL
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_am a ON a.oid = c.relam
WHERE `+userSchemas)
	if err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	var idx, tbl, parent uint32
	var schema, name string
	var shape plan.IndexShape
	_, err = pgx.ForEachRow(rows, []any{&idx, &tbl, &schema, &name, &parent, &shape.Method, &shape.Keys, &shape.Expressions}, func() error {
		indexTable[idx] = tbl
		indexByName[schema+"\x00"+name] = idx
		indexShape[idx] = shape
		if parent != 0 {
			indexParent[idx] = parent
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	for i := range entries {
		e := &entries[i]
		switch e.Desc {
		case "INDEX":
			e.IndexOID = e.ObjOID
			e.TableOID = indexTable[e.ObjOID]
			e.IndexShape = indexShape[e.IndexOID]
		case "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT":
			var indexDef *string
			err := q.QueryRow(ctx, `
SELECT conrelid, confrelid, contype::text, conindid, condeferrable, condeferred, conname,
       CASE WHEN contype IN ('p', 'u') AND conindid <> 0 THEN pg_get_indexdef(conindid) END
FROM pg_constraint WHERE oid = $1`, e.ObjOID).Scan(&e.TableOID, &e.RefTableOID, &e.ConType, &e.IndexOID,
				&e.Deferrable, &e.Deferred, &e.ConName, &indexDef)
			if err != nil {
				return fmt.Errorf("read constraint %s (oid %d): %w", e.Tag, e.ObjOID, err)
			}
			if indexDef != nil {
				e.IndexDef = *indexDef
			}
			e.IndexShape = indexShape[e.IndexOID]
		case "INDEX ATTACH":
			// The entry names the child index (it has no OID); pg_inherits
			// gives its parent.
			child, ok := lookupByNames(indexByName, e)
			if !ok {
				return fmt.Errorf("index attach %q: index not found in the catalog", e.Names)
			}
			e.IndexOID = child
			e.ParentIndexOID = indexParent[child]
			e.TableOID = indexTable[e.ParentIndexOID]
		case "TRIGGER", "RULE", "POLICY":
			e.TableOID = tableOf(ctx, q, e)
		}
	}
	return nil
}

// lookupByNames finds an object named by a TOC entry. pg_restore prints
// "schema tag owner" unquoted, so a name with spaces can split anywhere:
// try the best-effort split, then every split of the words.
func lookupByNames(byName map[string]uint32, e *plan.Entry) (uint32, bool) {
	if oid, ok := byName[e.Schema+"\x00"+e.Tag]; ok {
		return oid, true
	}
	words := strings.Split(e.Names, " ")
	for i := 1; i < len(words); i++ {
		for j := i + 1; j <= len(words); j++ {
			schema, tag := strings.Join(words[:i], " "), strings.Join(words[i:j], " ")
			if oid, ok := byName[schema+"\x00"+tag]; ok {
				e.Schema, e.Tag = schema, tag
				return oid, true
			}
		}
	}
	return 0, false
}

// tableOf finds the table of a trigger, rule or policy, for display only.
func tableOf(ctx context.Context, q Querier, e *plan.Entry) uint32 {
	var sql string
	switch e.Desc {
	case "TRIGGER":
		sql = `SELECT tgrelid FROM pg_trigger WHERE oid = $1`
	case "RULE":
		sql = `SELECT ev_class FROM pg_rewrite WHERE oid = $1`
	case "POLICY":
		sql = `SELECT polrelid FROM pg_policy WHERE oid = $1`
	}
	var oid uint32
	if err := q.QueryRow(ctx, sql, e.ObjOID).Scan(&oid); err != nil {
		return 0
	}
	return oid
}

// ReadSequences reads every sequence's value. Sequences are not
// transactional: the value is the current one, not the snapshot's, which is
// at or past every value the snapshot's rows use.
func ReadSequences(ctx context.Context, q Querier) ([]plan.Sequence, error) {
	rows, err := q.Query(ctx, `
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND `+userSchemas+` AND `+notExtensionMember+`
ORDER BY n.nspname, c.relname`)
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (plan.Sequence, error) {
		var s plan.Sequence
		return s, r.Scan(&s.OID, &s.Schema, &s.Name)
	})
	if err != nil {
		return nil, fmt.Errorf("read sequences: %w", err)
	}
	for i := range seqs {
		s := &seqs[i]
		err := q.QueryRow(ctx, "SELECT last_value, is_called FROM "+ident.Qualified(s.Schema, s.Name)).
			Scan(&s.LastValue, &s.IsCalled)
		if err != nil {
			return nil, fmt.Errorf("read sequence %s.%s: %w", s.Schema, s.Name, err)
		}
	}
	return seqs, nil
}

// ReadLargeObjects returns the OIDs of every large object, ascending.
func ReadLargeObjects(ctx context.Context, q Querier) ([]uint32, error) {
	rows, err := q.Query(ctx, `SELECT oid FROM pg_largeobject_metadata ORDER BY oid`)
	if err != nil {
		return nil, fmt.Errorf("read large objects: %w", err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, fmt.Errorf("read large objects: %w", err)
	}
	return oids, nil
}

// objectsQuery lists the names a clone creates: schemas (but public, which
// every database has), relations, types and routines, excluding extension
// members. Run on both sides, the intersection is the set of conflicts.
const objectsQuery = `
SELECT n.oid, 'schema ' || quote_ident(n.nspname) FROM pg_namespace n
WHERE ` + userSchemas + ` AND n.nspname <> 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
UNION ALL
SELECT c.oid, CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
         WHEN 'i' THEN 'index ' WHEN 'I' THEN 'index ' WHEN 'f' THEN 'foreign table ' ELSE 'table ' END
       || quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I') AND ` + userSchemas + ` AND ` + notExtensionMember + `
UNION ALL
SELECT t.oid, 'type ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r', 'm') AND ` + userSchemas + `
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT p.oid, 'function ' || quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE ` + userSchemas + `
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')`

// Objects lists the objects a clone of this database creates, sorted.
func Objects(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT name FROM (`+objectsQuery+`) o(oid, name)`)
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// ObjectNames are the names Objects gives the objects with these OIDs.
func ObjectNames(ctx context.Context, q Querier, oids []uint32) ([]string, error) {
	if len(oids) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT name FROM (`+objectsQuery+`) o(oid, name) WHERE oid = ANY($1::oid[])`, oids)
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	return names, nil
}

// Conflicts returns the objects present in both lists.
func Conflicts(source, target []string) []string {
	have := make(map[string]bool, len(target))
	for _, n := range target {
		have[n] = true
	}
	var out []string
	for _, n := range source {
		if have[n] {
			out = append(out, n)
		}
	}
	return out
}
