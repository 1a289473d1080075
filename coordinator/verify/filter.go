package verify

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
)

// A filtered clone is compared with what the source would be without the
// objects the filter leaves out. The filter says which tables, schemas,
// indexes and extensions it names (the same file the clone was given);
// what depends on them is found here, on the source's own pg_depend, the
// way DROP ... CASCADE would find it, not with the clone's dependency rules
// (the schema dump's): the judge shares only the filter file with the path
// it judges.

// filteredSchemas are the source schemas the filter leaves out.
func (s *side) filteredSchemas(ctx context.Context, f *filter.Filter) ([]string, error) {
	out := slices.Clone(f.ExcludeSchemas)
	if len(f.IncludeOnlySchemas) == 0 {
		return out, nil
	}
	rows, err := s.tx.Query(ctx, `SELECT nspname FROM pg_namespace
		WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%'`)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, n := range all {
		if !slices.Contains(f.IncludeOnlySchemas, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// leaveOutQuery finds what depends on the excluded relations ($1),
// indexes (schemas $2, names $3) and schemas ($4), following pg_depend from referenced to
// dependent objects (and from a view's rule to the view), as DROP CASCADE
// does. A sequence owned by an excluded table that a kept table's column
// default still uses stays, as the clone keeps it.
const leaveOutQuery = `
WITH RECURSIVE
edge(refclassid, refobjid, classid, objid) AS (
	SELECT refclassid, refobjid, classid, objid FROM pg_depend WHERE deptype IN ('n', 'a', 'i')
	UNION ALL
	SELECT 'pg_rewrite'::regclass::oid, oid, 'pg_class'::regclass::oid, ev_class FROM pg_rewrite
),
idx(oid) AS (
	SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN unnest($2::text[], $3::text[]) AS x(s, r) ON x.s = n.nspname AND x.r = c.relname
	WHERE c.relkind IN ('i', 'I')
),
seed(classid, objid) AS (
	SELECT 'pg_class'::regclass::oid, o FROM unnest($1::oid[]) o
	UNION
	SELECT 'pg_class'::regclass::oid, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = ANY ($4::text[])
	UNION
	SELECT 'pg_type'::regclass::oid, t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	WHERE n.nspname = ANY ($4::text[])
	UNION
	SELECT 'pg_proc'::regclass::oid, p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE n.nspname = ANY ($4::text[])
	UNION
	SELECT 'pg_class'::regclass::oid, oid FROM idx
	UNION
	SELECT 'pg_constraint'::regclass::oid, con.oid FROM pg_constraint con
	WHERE con.conindid IN (SELECT oid FROM idx) AND con.contype IN ('p', 'u', 'x')
),
dep(classid, objid) AS (
	SELECT classid, objid FROM seed
	UNION
	SELECT e.classid, e.objid FROM dep JOIN edge e ON e.refclassid = dep.classid AND e.refobjid = dep.objid
),
rel(oid) AS (SELECT objid FROM dep WHERE classid = 'pg_class'::regclass)
SELECT 'relation', c.relkind::text, n.nspname, c.relname, ''
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid IN (SELECT oid FROM rel)
  AND NOT (c.relkind = 'S' AND EXISTS (
	SELECT 1 FROM pg_depend d JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
	WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid AND ad.adrelid NOT IN (SELECT oid FROM rel))
	AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i'))
UNION ALL
SELECT 'constraint', CASE WHEN con.contypid <> 0 THEN 'domain' ELSE '' END, n.nspname, coalesce(c.relname, ty.typname), con.conname
FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
LEFT JOIN pg_class c ON c.oid = con.conrelid LEFT JOIN pg_type ty ON ty.oid = con.contypid
WHERE con.oid IN (SELECT objid FROM dep WHERE classid = 'pg_constraint'::regclass)
UNION ALL
SELECT 'trigger', '', n.nspname, c.relname, tg.tgname
FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE tg.oid IN (SELECT objid FROM dep WHERE classid = 'pg_trigger'::regclass) AND NOT tg.tgisinternal
UNION ALL
SELECT 'function', '', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.oid IN (SELECT objid FROM dep WHERE classid = 'pg_proc'::regclass)`

// leaveOut removes from the source side what the filter leaves out of a
// clone (with the objects that depend on anything in schemas), and returns the tables (by display name) whose rows it leaves
// out.
func (s *side) leaveOut(ctx context.Context, f *filter.Filter, schemas []string) (map[string]bool, error) {
	// 1. The relations the filter names, and those whose rows it does.
	rels := make([]filter.Relation, 0, len(s.tables))
	for _, t := range s.tables {
		r := filter.Relation{OID: t.oid, Schema: t.schema, Name: t.name, Kind: t.kind, InheritsFrom: t.parentOIDs}
		if t.partition && len(t.parentOIDs) == 1 {
			r.ParentOID, r.InheritsFrom = t.parentOIDs[0], nil
		}
		rels = append(rels, r)
	}
	var seeds, empty []uint32
	noData := map[string]bool{}
	for n, t := range s.tables {
		switch {
		case f.TableExcluded(rels, t.oid):
			seeds = append(seeds, t.oid)
		case f.TableDataExcluded(rels, t.oid):
			empty = append(empty, t.oid)
			if t.hasRows() {
				noData[n] = true
			}
		}
	}
	var ixSchemas, ixNames []string
	for _, ix := range f.ExcludeIndexes {
		ixSchemas, ixNames = append(ixSchemas, ix.Schema), append(ixNames, ix.Name)
	}

	// 2. What depends on them, removed from what the target must have.
	removedFuncs := 0
	err := s.each(ctx, leaveOutQuery, []any{seeds, ixSchemas, ixNames, schemas}, func(rows pgx.Rows) error {
		var what, kind, schema, name, sub string
		if err := rows.Scan(&what, &kind, &schema, &name, &sub); err != nil {
			return err
		}
		switch what {
		case "relation":
			s.dropRelation(kind, schema, name)
		case "constraint":
			key := displayName(schema, name, sub)
			if kind == "domain" {
				key = "domain " + key
			}
			delete(s.facts["constraint"], key)
		case "trigger":
			delete(s.facts["trigger"], displayName(schema, name, sub))
		case "function":
			key := displayName(schema, name) + "(" + sub + ")"
			if _, ok := s.facts["function"][key]; ok {
				delete(s.facts["function"], key)
				removedFuncs++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n, err := strconv.Atoi(s.facts["function"]["count"]); err == nil && removedFuncs > 0 {
		s.facts["function"]["count"] = strconv.Itoa(n - removedFuncs)
	}
	for _, e := range f.ExcludeExtensions {
		delete(s.facts["extension"], displayIdent(e))
	}

	// 3. A foreign key from a table with rows to one without cannot hold,
	// so the clone does not make it.
	emptySet := map[uint32]bool{}
	for _, oid := range empty {
		emptySet[oid] = true
	}
	if len(empty) > 0 {
		err := s.each(ctx, `SELECT n.nspname, c.relname, con.conname, con.conrelid
			FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = con.connamespace
			WHERE con.contype = 'f' AND con.confrelid = ANY ($1::oid[])`, []any{empty}, func(rows pgx.Rows) error {
			var schema, rel, name string
			var relOID uint32
			if err := rows.Scan(&schema, &rel, &name, &relOID); err != nil {
				return err
			}
			if !emptySet[relOID] {
				delete(s.facts["constraint"], displayName(schema, rel, name))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return noData, nil
}

// dropRelation removes a relation and what belongs to it (columns,
// comments) from the side's facts.
func (s *side) dropRelation(kind, schema, name string) {
	key := displayName(schema, name)
	switch kind {
	case "r", "p", "m", "f":
		delete(s.tables, key)
		deletePrefix(s.facts["column"], key+".")
		delete(s.facts["comment"], "table "+key)
		deletePrefix(s.facts["comment"], "column "+key+".")
		delete(s.facts["view"], key)
		delete(s.facts["matview"], key)
	case "v":
		delete(s.facts["view"], key)
		deletePrefix(s.facts["column"], key+".")
		delete(s.facts["comment"], "table "+key)
		deletePrefix(s.facts["comment"], "column "+key+".")
	case "S":
		delete(s.facts["sequence"], key)
	case "i", "I":
		delete(s.facts["index"], key)
		delete(s.facts["comment"], "index "+key)
	}
}

func deletePrefix(m map[string]string, prefix string) {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			delete(m, k)
		}
	}
}

// compareNoData checks that every table whose rows the filter left out is
// empty on the target.
func compareNoData(ctx context.Context, tgt *side, tables map[string]bool) ([]Check, error) {
	names := make([]string, 0, len(tables))
	for n := range tables {
		names = append(names, n)
	}
	sort.Strings(names)
	var checks []Check
	for _, n := range names {
		t, ok := tgt.tables[n]
		if !ok {
			continue // the "table" check reports it
		}
		var rows int64
		if err := tgt.tx.QueryRow(ctx, "SELECT count(*) FROM "+t.from()).Scan(&rows); err != nil {
			return nil, fmt.Errorf("verify: count target table %s: %w", n, err)
		}
		checks = append(checks, Check{Kind: "rows", Object: n, Source: "0 (table data excluded by the filter)",
			Target: strconv.FormatInt(rows, 10), OK: rows == 0})
	}
	return checks, nil
}
