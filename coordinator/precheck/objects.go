package precheck

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
)

// extensions finds extensions installed on the source that the target
// cannot create. pg_dump writes CREATE EXTENSION without a version, so the
// target gets its default version.
func (r *run) extensions(ctx context.Context) {
	const name = "extensions"
	rows, err := r.srcConn.Query(ctx, `SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)
	if err != nil {
		r.failed(name, r.src, "list extensions", err)
		return
	}
	type ext struct{ name, version string }
	var used []ext
	var n, v string
	if _, err := pgx.ForEachRow(rows, []any{&n, &v}, func() error { used = append(used, ext{n, v}); return nil }); err != nil {
		r.failed(name, r.src, "list extensions", err)
		return
	}
	rows, err = r.dstConn.Query(ctx, `SELECT name, coalesce(installed_version, default_version, '') FROM pg_available_extensions`)
	if err != nil {
		r.failed(name, r.dst, "list available extensions", err)
		return
	}
	avail := map[string]string{}
	if _, err := pgx.ForEachRow(rows, []any{&n, &v}, func() error { avail[n] = v; return nil }); err != nil {
		r.failed(name, r.dst, "list available extensions", err)
		return
	}
	var missing, differ []string
	for _, e := range used {
		got, ok := avail[e.name]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprintf("%s (version %s on the source)", e.name, e.version))
		case got != e.version:
			differ = append(differ, fmt.Sprintf("%s: %s on the source, %s on the target", e.name, e.version, got))
		}
	}
	switch {
	case len(missing) > 0:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("%d extension(s) used on the source are not available on the target (pg_available_extensions):\n%s", len(missing), shown(missing, 20)),
			Hint:    "install their packages on the target server (the restore runs CREATE EXTENSION), or drop them on the source if nothing uses them"})
	case len(differ) > 0:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("%d extension(s) will be created at another version on the target:\n%s", len(differ), shown(differ, 20)),
			Hint:    "make the versions match (ALTER EXTENSION ... UPDATE on the source, or install that version on the target) if the objects they create must be the same"})
	case len(used) == 0:
		r.add(Check{Name: name, Level: Pass, Message: "the source uses no extension but plpgsql"})
	default:
		r.add(Check{Name: name, Level: Pass, Message: fmt.Sprintf("the target can create all %d extension(s) the source uses", len(used))})
	}
}

// tablespaces finds tablespaces the source's relations live in that the
// target lacks: the restore sets default_tablespace to them and fails.
func (r *run) tablespaces(ctx context.Context) {
	const name = "tablespaces"
	rows, err := r.srcConn.Query(ctx, `SELECT DISTINCT t.spcname::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_tablespace t ON t.oid = c.reltablespace
		WHERE c.reltablespace <> 0 AND `+userRelations+` ORDER BY 1`)
	if err != nil {
		r.failed(name, r.src, "list tablespaces", err)
		return
	}
	used, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.src, "list tablespaces", err)
		return
	}
	rows, err = r.dstConn.Query(ctx, `SELECT spcname::text FROM pg_tablespace`)
	if err != nil {
		r.failed(name, r.dst, "list tablespaces", err)
		return
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.dst, "list tablespaces", err)
		return
	}
	onTarget := map[string]bool{}
	for _, h := range have {
		onTarget[h] = true
	}
	var missing []string
	for _, u := range used {
		if !onTarget[u] {
			missing = append(missing, u)
		}
	}
	switch {
	case len(missing) > 0:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("%d tablespace(s) that source tables or indexes live in are missing on the target, and the schema restore would fail on them:\n%s", len(missing), shown(missing, 20)),
			Hint:    "create them on the target first (CREATE TABLESPACE name LOCATION '/path', as a superuser), with room for what they hold"})
	case len(used) > 0:
		r.add(Check{Name: name, Level: Pass, Message: fmt.Sprintf("the target has all %d tablespace(s) the source's tables and indexes use: %s", len(used), strings.Join(used, ", "))})
	default:
		r.add(Check{Name: name, Level: Pass, Message: "every source table and index is in the database's default tablespace"})
	}
}

// rolesQuery lists the roles that own objects the clone carries, or are
// granted (or granted) privileges on them, with which of the two.
const rolesQuery = `
WITH owner(oid) AS (
  SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + userRelations + `
  UNION SELECT n.nspowner FROM pg_namespace n WHERE ` + userSchemas + `
  UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ` + userSchemas + `
  UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE ` + userSchemas + `
  UNION SELECT lomowner FROM pg_largeobject_metadata
  UNION SELECT pubowner FROM pg_publication WHERE pubname NOT LIKE 'pgcaravan\_%'
), acl(a) AS (
  SELECT c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + userRelations + `
  UNION ALL SELECT a.attacl FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attacl IS NOT NULL AND ` + userRelations + `
  UNION ALL SELECT n.nspacl FROM pg_namespace n WHERE ` + userSchemas + `
  UNION ALL SELECT p.proacl FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ` + userSchemas + `
  UNION ALL SELECT t.typacl FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE ` + userSchemas + `
  UNION ALL SELECT lomacl FROM pg_largeobject_metadata
  UNION ALL SELECT defaclacl FROM pg_default_acl
), grantee(oid) AS (
  SELECT x.grantee FROM acl, aclexplode(acl.a) x
  UNION SELECT x.grantor FROM acl, aclexplode(acl.a) x
  UNION SELECT defaclrole FROM pg_default_acl
)
SELECT r.rolname, r.oid IN (SELECT oid FROM owner), r.oid IN (SELECT oid FROM grantee)
FROM pg_roles r
WHERE (r.oid IN (SELECT oid FROM owner) OR r.oid IN (SELECT oid FROM grantee)) AND r.rolname NOT LIKE 'pg\_%'
ORDER BY 1`

// roles finds the roles the restore needs (owners and grantees) that the
// target does not have: pg_restore fails on the first one.
func (r *run) roles(ctx context.Context) {
	const name = "roles"
	rows, err := r.srcConn.Query(ctx, rolesQuery)
	if err != nil {
		r.failed(name, r.src, "list the roles that own objects or have grants", err)
		return
	}
	type need struct {
		name            string
		owns, isGrantee bool
	}
	var needs []need
	var nd need
	if _, err := pgx.ForEachRow(rows, []any{&nd.name, &nd.owns, &nd.isGrantee}, func() error { needs = append(needs, nd); return nil }); err != nil {
		r.failed(name, r.src, "list the roles that own objects or have grants", err)
		return
	}
	rows, err = r.dstConn.Query(ctx, `SELECT rolname FROM pg_roles`)
	if err != nil {
		r.failed(name, r.dst, "list roles", err)
		return
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		r.failed(name, r.dst, "list roles", err)
		return
	}
	onTarget := map[string]bool{}
	for _, h := range have {
		onTarget[h] = true
	}
	var missing []string
	fatal := false
	for _, n := range needs {
		if onTarget[n.name] {
			continue
		}
		var why []string
		if n.owns {
			why = append(why, "owns objects")
			fatal = fatal || !r.cfg.NoOwner
		}
		if n.isGrantee {
			why = append(why, "has or gave grants")
			fatal = fatal || !r.cfg.NoACL
		}
		missing = append(missing, fmt.Sprintf("%s (%s)", n.name, strings.Join(why, ", ")))
	}
	switch {
	case len(missing) == 0:
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("the target has all %d role(s) that own objects or have grants on the source", len(needs))})
	case r.cfg.Roles:
		r.add(Check{Name: name, Level: Pass,
			Message: fmt.Sprintf("%d role(s) that own objects or have grants on the source are missing on the target; --roles makes them from the source's before the schema:\n%s", len(missing), shown(missing, 20))})
	case fatal:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("%d role(s) that own objects or have grants on the source are missing on the target, and the schema restore would fail on them:\n%s", len(missing), shown(missing, 20)),
			Hint:    "create them on the target first (pg_dumpall --roles-only on the source gives their definitions), or pass --no-owner and/or --no-acl to leave owners and grants out"})
	default:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("%d role(s) of the source are missing on the target; --no-owner/--no-acl leave them out, so the target's objects get other owners and fewer grants:\n%s", len(missing), shown(missing, 20)),
			Hint:    "create them on the target if the owners and grants must be the same"})
	}
}

// targetEmpty uses the coordinator's own conflict check (package catalog):
// the setup refuses a target that has objects the clone creates.
func (r *run) targetEmpty(ctx context.Context) {
	const name = "target_empty"
	if r.cfg.Running {
		r.add(Check{Name: name, Level: Pass, Message: "not judged: this migration is writing the target"})
		return
	}
	want, err := catalog.Objects(ctx, r.srcConn)
	if err != nil {
		r.failed(name, r.src, "list objects", err)
		return
	}
	have, err := catalog.Objects(ctx, r.dstConn)
	if err != nil {
		r.failed(name, r.dst, "list objects", err)
		return
	}
	conflicts := catalog.Conflicts(want, have)
	switch {
	case len(conflicts) > 0 && r.cfg.DropIfExists:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("the target already has %d object(s) the clone creates; --drop-if-exists drops them first:\n%s", len(conflicts), shown(conflicts, 20)),
			Hint:    "make sure nothing on the target needs them"})
	case len(conflicts) > 0:
		r.add(Check{Name: name, Level: Fail,
			Message: fmt.Sprintf("the target already has %d object(s) the clone would create, and the clone refuses to start:\n%s", len(conflicts), shown(conflicts, 20)),
			Hint:    "point --target at an empty database, or pass --drop-if-exists to drop them first"})
	case len(have) > 0:
		r.add(Check{Name: name, Level: Warn,
			Message: fmt.Sprintf("the target is not empty: it has %d object(s) the clone does not create:\n%s", len(have), shown(have, 10)),
			Hint:    "make sure adding the source's objects to this database is what you want"})
	default:
		r.add(Check{Name: name, Level: Pass, Message: "the target is empty"})
	}
}
