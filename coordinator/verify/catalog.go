package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// factKinds are the catalog comparisons that reduce to "object name ->
// printed definition", in report order.
var factKinds = []string{
	"schema", "type", "column", "index", "constraint", "sequence", "trigger", "view", "matview",
	"function", "comment", "extension",
}

// userSchema is the condition, on a pg_namespace aliased n, that selects the
// schemas compared. $1 is the text[] of excluded schemas.
const userSchema = `n.nspname <> ALL ($1::text[])
	AND n.nspname NOT IN ('pg_catalog', 'information_schema')
	AND n.nspname NOT LIKE 'pg\_toast%'
	AND n.nspname NOT LIKE 'pg\_temp%'`

// notExtension returns the condition that the object oidExpr of catalog
// table catalog is not a member of an extension.
func notExtension(catalog, oidExpr string) string {
	return fmt.Sprintf(`NOT EXISTS (SELECT 1 FROM pg_depend d
		WHERE d.classid = '%s'::regclass AND d.objid = %s AND d.deptype = 'e')`, catalog, oidExpr)
}

// readCatalog fills s.tables, s.facts and s.largeObjects, all under the
// side's snapshot.
func (s *side) readCatalog(ctx context.Context, exclude []string) error {
	s.facts = make(map[string]map[string]string, len(factKinds))
	s.owners = make(map[string]map[string]uint32, len(factKinds))
	for _, k := range factKinds {
		s.facts[k] = make(map[string]string)
		s.owners[k] = make(map[string]uint32)
	}
	steps := []struct {
		what string
		read func(context.Context, []string) error
	}{
		{"tables", s.readTables},
		{"schemas", s.readSchemas},
		{"types", s.readTypes},
		{"columns", s.readColumns},
		{"indexes", s.readIndexes},
		{"constraints", s.readConstraints},
		{"sequences", s.readSequences},
		{"triggers", s.readTriggers},
		{"views", s.readViews},
		{"functions", s.readFunctions},
		{"comments", s.readComments},
		{"extensions", s.readExtensions},
		{"large objects", s.readLargeObjects},
	}
	for _, st := range steps {
		if err := st.read(ctx, exclude); err != nil {
			return fmt.Errorf("verify: read %s %s: %w", s.name, st.what, err)
		}
	}
	return nil
}

// fact records the value of object of kind, which belongs to relation
// owner (0 for none).
func (s *side) fact(kind, object, value string, owner uint32) {
	s.facts[kind][object] = value
	if owner != 0 {
		s.owners[kind][object] = owner
	}
}

// each runs sql with args in the snapshot and calls scan once per row.
func (s *side) each(ctx context.Context, sql string, args []any, scan func(pgx.Rows) error) error {
	rows, err := s.tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (s *side) readTables(ctx context.Context, exclude []string) error {
	s.tables = make(map[string]table)
	sql := `SELECT n.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relispopulated,
		c.relreplident::text,
		coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
		CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) ELSE '' END,
		ARRAY(SELECT pn.nspname FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
			JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid ORDER BY i.inhseqno),
		ARRAY(SELECT pc.relname FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
			WHERE i.inhrelid = c.oid ORDER BY i.inhseqno),
		CASE WHEN c.relkind IN ('r', 'm') THEN pg_table_size(c.oid) ELSE 0 END,
		c.oid, c.relispartition,
		ARRAY(SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid ORDER BY i.inhseqno)
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p', 'm', 'f') AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var t table
		var pSchemas, pNames []string
		if err := rows.Scan(&t.schema, &t.name, &t.kind, &t.persistence, &t.populated, &t.replIdent,
			&t.partBound, &t.partKey, &pSchemas, &pNames, &t.size, &t.oid, &t.partition, &t.parentOIDs); err != nil {
			return err
		}
		for i := range pSchemas {
			t.parents = append(t.parents, displayName(pSchemas[i], pNames[i]))
		}
		s.tables[displayName(t.schema, t.name)] = t
		return nil
	})
}

func (s *side) readSchemas(ctx context.Context, exclude []string) error {
	sql := `SELECT n.nspname FROM pg_namespace n
	WHERE ` + userSchema + ` AND ` + notExtension("pg_namespace", "n.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		s.facts["schema"][displayIdent(name)] = "present"
		return nil
	})
}

// readTypes reads the user-defined types whose definition a column's
// values depend on: enums (labels in order), domains, ranges and
// standalone composite types.
func (s *side) readTypes(ctx context.Context, exclude []string) error {
	sql := `SELECT n.nspname, t.typname,
		CASE t.typtype
		WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
			FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
		WHEN 'd' THEN 'domain over ' || format_type(t.typbasetype, t.typtypmod)
			|| CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
			|| coalesce(' DEFAULT ' || t.typdefault, '')
		WHEN 'r' THEN 'range of ' || (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)
		WHEN 'c' THEN 'composite (' || (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
			FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) || ')'
		ELSE 'type ' || t.typtype::text END
	FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	WHERE t.typtype IN ('e', 'd', 'r', 'c')
		AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
		AND ` + userSchema + ` AND ` + notExtension("pg_type", "t.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, name, def string
		if err := rows.Scan(&schema, &name, &def); err != nil {
			return err
		}
		s.facts["type"][displayName(schema, name)] = def
		return nil
	})
}

func (s *side) readColumns(ctx context.Context, exclude []string) error {
	sql := `SELECT n.nspname, c.relname, a.attname,
		row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
		format_type(a.atttypid, a.atttypmod),
		coalesce((SELECT co.collname FROM pg_collation co
			WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation), ''),
		a.attnotnull,
		coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''),
		a.attgenerated::text, a.attidentity::text, c.oid
	FROM pg_attribute a
	JOIN pg_class c ON c.oid = a.attrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_type t ON t.oid = a.atttypid
	LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	WHERE a.attnum > 0 AND NOT a.attisdropped
		AND c.relkind IN ('r', 'p', 'm', 'f') AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, rel, col, typ, coll, def, generated, identity string
		var pos int64
		var notNull bool
		var owner uint32
		if err := rows.Scan(&schema, &rel, &col, &pos, &typ, &coll, &notNull, &def, &generated, &identity, &owner); err != nil {
			return err
		}
		v := "#" + strconv.FormatInt(pos, 10) + " " + typ
		if coll != "" {
			v += " COLLATE " + displayIdent(coll)
		}
		if notNull {
			v += " NOT NULL"
		}
		switch {
		case generated == "s":
			v += " GENERATED ALWAYS AS (" + def + ") STORED"
		case generated != "":
			v += " GENERATED (" + generated + ") AS (" + def + ")"
		case def != "":
			v += " DEFAULT " + def
		}
		switch identity {
		case "a":
			v += " GENERATED ALWAYS AS IDENTITY"
		case "d":
			v += " GENERATED BY DEFAULT AS IDENTITY"
		}
		s.fact("column", displayName(schema, rel, col), v, owner)
		return nil
	})
}

func (s *side) readIndexes(ctx context.Context, exclude []string) error {
	sql := `SELECT n.nspname, ic.relname, pg_get_indexdef(i.indexrelid),
		i.indisvalid, i.indisready, i.indisclustered, i.indisreplident, i.indrelid
	FROM pg_index i
	JOIN pg_class ic ON ic.oid = i.indexrelid
	JOIN pg_class c ON c.oid = i.indrelid
	JOIN pg_namespace n ON n.oid = ic.relnamespace
	WHERE c.relkind IN ('r', 'p', 'm', 'f') AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, name, def string
		var valid, ready, clustered, replIdent bool
		var owner uint32
		if err := rows.Scan(&schema, &name, &def, &valid, &ready, &clustered, &replIdent, &owner); err != nil {
			return err
		}
		if !valid {
			def += " (INVALID)"
		}
		if !ready {
			def += " (NOT READY)"
		}
		if clustered {
			def += " (CLUSTER)"
		}
		if replIdent {
			def += " (REPLICA IDENTITY)"
		}
		s.fact("index", displayName(schema, name), def, owner)
		return nil
	})
}

func (s *side) readConstraints(ctx context.Context, exclude []string) error {
	// Table constraints are named table.constraint, domain constraints
	// "domain" domain.constraint: names are unique only per table or domain.
	// A foreign key that references a partitioned table has a clone of the
	// same name on the same table for each partition it references; the
	// parent stands for them.
	sql := `SELECT n.nspname, coalesce(c.relname, ty.typname), con.contypid <> 0, con.conname,
		con.contype::text, pg_get_constraintdef(con.oid), con.convalidated, con.condeferrable, con.condeferred,
		con.conrelid
	FROM pg_constraint con
	JOIN pg_namespace n ON n.oid = con.connamespace
	LEFT JOIN pg_class c ON c.oid = con.conrelid
	LEFT JOIN pg_type ty ON ty.oid = con.contypid
	WHERE (con.conrelid <> 0 OR con.contypid <> 0) AND ` + userSchema + `
		AND NOT EXISTS (SELECT 1 FROM pg_constraint pc WHERE pc.oid = con.conparentid AND pc.conrelid = con.conrelid)
		AND ` + notExtension("pg_class", "con.conrelid") + `
		AND ` + notExtension("pg_type", "con.contypid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, owner, name, typ, def string
		var onDomain, validated, deferrable, deferred bool
		var rel uint32
		if err := rows.Scan(&schema, &owner, &onDomain, &name, &typ, &def, &validated, &deferrable, &deferred, &rel); err != nil {
			return err
		}
		key := displayName(schema, owner, name)
		if onDomain {
			key = "domain " + key
		}
		s.fact("constraint", key, fmt.Sprintf("%s [type %s, validated %t, deferrable %t, deferred %t]",
			def, typ, validated, deferrable, deferred), rel)
		return nil
	})
}

func (s *side) readSequences(ctx context.Context, exclude []string) error {
	type seq struct{ schema, name, def string }
	var seqs []seq
	sql := `SELECT n.nspname, c.relname,
		format_type(sq.seqtypid, NULL) || ' increment ' || sq.seqincrement || ' min ' || sq.seqmin ||
		' max ' || sq.seqmax || ' start ' || sq.seqstart || ' cache ' || sq.seqcache ||
		CASE WHEN sq.seqcycle THEN ' cycle' ELSE '' END
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_sequence sq ON sq.seqrelid = c.oid
	WHERE c.relkind = 'S' AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid")
	err := s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var q seq
		if err := rows.Scan(&q.schema, &q.name, &q.def); err != nil {
			return err
		}
		seqs = append(seqs, q)
		return nil
	})
	if err != nil {
		return err
	}
	for _, q := range seqs {
		var last string
		var called bool
		err := s.tx.QueryRow(ctx, "SELECT last_value::text, is_called FROM "+ident.Qualified(q.schema, q.name)).Scan(&last, &called)
		if err != nil {
			return fmt.Errorf("sequence %s: %w", displayName(q.schema, q.name), err)
		}
		s.facts["sequence"][displayName(q.schema, q.name)] = fmt.Sprintf("last_value %s, is_called %t (%s)", last, called, q.def)
	}
	return nil
}

func (s *side) readTriggers(ctx context.Context, exclude []string) error {
	sql := `SELECT n.nspname, c.relname, tg.tgname, pg_get_triggerdef(tg.oid), tg.tgenabled::text, c.oid
	FROM pg_trigger tg
	JOIN pg_class c ON c.oid = tg.tgrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE NOT tg.tgisinternal AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, rel, name, def, enabled string
		var owner uint32
		if err := rows.Scan(&schema, &rel, &name, &def, &enabled, &owner); err != nil {
			return err
		}
		switch enabled {
		case "D":
			def += " (DISABLED)"
		case "R":
			def += " (ENABLE REPLICA)"
		case "A":
			def += " (ENABLE ALWAYS)"
		}
		s.fact("trigger", displayName(schema, rel, name), def, owner)
		return nil
	})
}

func (s *side) readViews(ctx context.Context, exclude []string) error {
	sql := `SELECT n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid), c.relispopulated
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('v', 'm') AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, name, kind, def string
		var populated bool
		if err := rows.Scan(&schema, &name, &kind, &def, &populated); err != nil {
			return err
		}
		key := displayName(schema, name)
		s.facts["view"][key] = strings.TrimSpace(def)
		if kind == "m" {
			state := "populated"
			if !populated {
				state = "not populated"
			}
			s.facts["matview"][key] = state
		}
		return nil
	})
}

func (s *side) readFunctions(ctx context.Context, exclude []string) error {
	// pg_get_functiondef cannot print aggregates; they are compared by
	// signature and result type only.
	sql := `SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind::text,
		CASE WHEN p.prokind = 'a' THEN pg_get_function_result(p.oid)
			ELSE md5(pg_get_functiondef(p.oid)) END
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE ` + userSchema + ` AND ` + notExtension("pg_proc", "p.oid")
	var count int
	err := s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var schema, name, args, kind, v string
		if err := rows.Scan(&schema, &name, &args, &kind, &v); err != nil {
			return err
		}
		if kind == "a" {
			v = "aggregate returning " + v
		} else {
			v = "md5 " + v
		}
		s.facts["function"][displayName(schema, name)+"("+args+")"] = v
		count++
		return nil
	})
	// The count is its own line so a report says how many there were even
	// when every one of them matches.
	s.facts["function"]["count"] = strconv.Itoa(count)
	return err
}

func (s *side) readComments(ctx context.Context, exclude []string) error {
	sql := `SELECT 'schema', n.nspname, '', '', d.description, 0::oid
	FROM pg_description d
	JOIN pg_namespace n ON d.classoid = 'pg_namespace'::regclass AND d.objoid = n.oid
	WHERE ` + userSchema + ` AND ` + notExtension("pg_namespace", "n.oid") + `
	UNION ALL
	SELECT 'table', n.nspname, c.relname, '', d.description, c.oid
	FROM pg_description d
	JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid AND d.objsubid = 0
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p', 'm', 'f', 'v') AND ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid") + `
	UNION ALL
	SELECT 'column', n.nspname, c.relname, a.attname, d.description, c.oid
	FROM pg_description d
	JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
	JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE ` + userSchema + ` AND ` + notExtension("pg_class", "c.oid") + `
	UNION ALL
	SELECT 'index', n.nspname, ic.relname, '', d.description, i.indrelid
	FROM pg_description d
	JOIN pg_class ic ON d.classoid = 'pg_class'::regclass AND d.objoid = ic.oid AND d.objsubid = 0
	JOIN pg_index i ON i.indexrelid = ic.oid
	JOIN pg_namespace n ON n.oid = ic.relnamespace
	WHERE ` + userSchema + ` AND ` + notExtension("pg_class", "i.indrelid")
	return s.each(ctx, sql, []any{exclude}, func(rows pgx.Rows) error {
		var what, schema, rel, col, text string
		var owner uint32
		if err := rows.Scan(&what, &schema, &rel, &col, &text, &owner); err != nil {
			return err
		}
		var name string
		switch what {
		case "schema":
			name = displayIdent(schema)
		case "column":
			name = displayName(schema, rel, col)
		default:
			name = displayName(schema, rel)
		}
		s.fact("comment", what+" "+name, text, owner)
		return nil
	})
}

func (s *side) readExtensions(ctx context.Context, _ []string) error {
	sql := `SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace`
	return s.each(ctx, sql, nil, func(rows pgx.Rows) error {
		var name, version, schema string
		if err := rows.Scan(&name, &version, &schema); err != nil {
			return err
		}
		s.facts["extension"][displayIdent(name)] = "version " + version + " in schema " + displayIdent(schema)
		return nil
	})
}

func (s *side) readLargeObjects(ctx context.Context, _ []string) error {
	// OFFSET 0 keeps lo_get from being evaluated once per use of its result.
	sql := `SELECT m.oid, octet_length(l.data), md5(l.data)
	FROM pg_largeobject_metadata m
	CROSS JOIN LATERAL (SELECT lo_get(m.oid) AS data OFFSET 0) l
	ORDER BY m.oid`
	s.largeObjects = s.largeObjects[:0]
	return s.each(ctx, sql, nil, func(rows pgx.Rows) error {
		var lo largeObject
		if err := rows.Scan(&lo.oid, &lo.size, &lo.md5); err != nil {
			return err
		}
		s.largeObjects = append(s.largeObjects, lo)
		return nil
	})
}
