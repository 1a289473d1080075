package coordinator

// The schema options of a clone: --after-schema, --skip-extensions,
// --roles and the source database's settings, which setup runs around the
// pre-data restore.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
)

// loadAfterSchema reads and parses the --after-schema file, so a missing or
// malformed file is refused before anything is done on the target.
func (c *Coordinator) loadAfterSchema() (*schema.Script, error) {
	path := c.cfg.AfterSchema
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("--after-schema %s: no such file (give the path of a SQL file to run on the target after the pre-data schema)", path)
	case err != nil:
		return nil, fmt.Errorf("--after-schema %s: %w", path, err)
	}
	s, err := schema.ParseScript(path, string(b))
	if err != nil {
		return nil, fmt.Errorf("--after-schema %w", err)
	}
	if len(s.Statements) == 0 {
		return nil, fmt.Errorf("--after-schema %s: the file has no SQL statement", path)
	}
	return &s, nil
}

// runAfterSchema runs the --after-schema file on the target in one
// transaction, on a session of its own so that what it SETs stays there.
func (c *Coordinator) runAfterSchema(ctx context.Context, s *schema.Script) error {
	conn, err := c.dst.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := s.Run(ctx, conn); err != nil {
		return fmt.Errorf("--after-schema on target %s: %w\n(the target has the pre-data schema and no data: fix the file, then start over with --drop-if-exists)", c.dst, err)
	}
	c.log.Info("after-schema file applied", "file", s.Name, "statements", len(s.Statements))
	return nil
}

// targetRelKinds reads, on the target, the relkind of every plain source
// table, and returns the tables with TargetRelKind "p" set on those the
// --after-schema file made partitioned, and their names; no names when it
// made none (tables is then the input, unchanged).
func (c *Coordinator) targetRelKinds(ctx context.Context, dst *pgx.Conn, tables []plan.Table) ([]plan.Table, []string, error) {
	var schemas, names []string
	for _, t := range tables {
		if t.RelKind == "r" {
			schemas, names = append(schemas, t.Schema), append(names, t.Name)
		}
	}
	if len(names) == 0 {
		return tables, nil, nil
	}
	rows, err := dst.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN unnest($1::text[], $2::text[]) AS w(nspname, relname) ON w.nspname = n.nspname AND w.relname = c.relname
		WHERE c.relkind = 'p'`, schemas, names)
	if err != nil {
		return nil, nil, fmt.Errorf("target %s: read the kinds of the tables after --after-schema: %w", c.dst, err)
	}
	type name struct{ schema, name string }
	partitioned := map[name]bool{}
	var n name
	_, err = pgx.ForEachRow(rows, []any{&n.schema, &n.name}, func() error {
		partitioned[n] = true
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("target %s: read the kinds of the tables after --after-schema: %w", c.dst, err)
	}
	if len(partitioned) == 0 {
		return tables, nil, nil
	}
	out := slices.Clone(tables)
	var changed []string
	for i, t := range out {
		if t.RelKind == "r" && partitioned[name{t.Schema, t.Name}] {
			out[i].TargetRelKind = "p"
			changed = append(changed, t.QualifiedName())
		}
	}
	return out, changed, nil
}

// applySchemaOptions applies --skip-extensions and --no-comments to the
// kept dump entries, recording what is left out in in.Skipped. lacking are
// the extensions left out that the target does not have.
func (c *Coordinator) applySchemaOptions(ctx context.Context, dst *pgx.Conn, in *plan.Input, kept *filtered) (lacking []string, err error) {
	if c.cfg.NoComments {
		// pg_restore --no-comments leaves out those of pre-data.
		kept.post = schema.WithoutComments(kept.post)
	}
	if !c.cfg.SkipExtensions {
		return nil, nil
	}
	var left []schema.Entry
	kept.pre, left = schema.WithoutExtensions(kept.pre)
	if len(left) == 0 {
		return nil, nil
	}
	rows, err := dst.Query(ctx, `SELECT extname FROM pg_extension`)
	if err != nil {
		return nil, fmt.Errorf("target %s: list extensions: %w", c.dst, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("target %s: list extensions: %w", c.dst, err)
	}
	for _, e := range left {
		switch e.Desc {
		case "EXTENSION":
			in.Skipped = append(in.Skipped, "extension "+e.Tag+": not created (--skip-extensions)")
			if !slices.Contains(have, e.Tag) {
				lacking = append(lacking, e.Tag)
			}
		default:
			in.Skipped = append(in.Skipped, strings.ToLower(e.Desc)+" "+e.Tag+": not restored (--skip-extensions)")
		}
	}
	return lacking, nil
}

// copyRoles makes the source server's roles on the target (--roles), from
// pg_dumpall --roles-only, in one transaction. Roles the target has are
// left as they are.
func (c *Coordinator) copyRoles(ctx context.Context, tools schema.Tools) error {
	dump, err := tools.DumpRoles(ctx, c.src, c.cfg.NoRolePasswords)
	if err != nil {
		return err
	}
	// A session of its own: pg_dumpall's SETs stay there.
	dst, err := c.dst.Connect(ctx, "pgcaravan-coordinator")
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	rows, err := dst.Query(ctx, `SELECT rolname FROM pg_roles`)
	if err != nil {
		return fmt.Errorf("target %s: list roles: %w", c.dst, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("target %s: list roles: %w", c.dst, err)
	}
	script, existing, err := schema.RolesScript(dump, func(r string) bool { return slices.Contains(have, r) })
	if err != nil {
		return err
	}
	if err := script.Run(ctx, dst); err != nil {
		return fmt.Errorf("--roles: target %s: %w\n(the target role needs CREATEROLE, and superuser to copy superusers; "+
			"or create the roles yourself and drop --roles)", c.dst, err)
	}
	created := 0
	for _, st := range script.Statements {
		if strings.HasPrefix(st.SQL, "CREATE ROLE ") {
			created++
		}
	}
	c.log.Info("roles copied", "created", created, "already_on_target", strings.Join(existing, ", "))
	return nil
}

// settingsSQL is what copies the source database's settings onto the
// target database db: ALTER DATABASE ... SET, and ALTER ROLE ... IN
// DATABASE ... SET for roles the target has (or --roles makes). skipped
// names the settings of other roles. It refuses when the target role may
// not make them, rather than failing at the end of the clone.
func (c *Coordinator) settingsSQL(ctx context.Context, dst *pgx.Conn, db string, settings []schema.Setting) (sql []string, skipped []string, err error) {
	if len(settings) == 0 {
		return nil, nil, nil
	}
	var owner, createRole bool
	var have []string
	err = dst.QueryRow(ctx, `SELECT r.rolsuper OR pg_has_role(d.datdba, 'MEMBER'), r.rolsuper OR r.rolcreaterole,
		ARRAY(SELECT rolname FROM pg_roles)
		FROM pg_database d, pg_roles r WHERE d.datname = current_database() AND r.rolname = current_user`).Scan(&owner, &createRole, &have)
	if err != nil {
		return nil, nil, fmt.Errorf("target %s: read privileges for the database settings: %w", c.dst, err)
	}
	var needOwner, needCreateRole []string
	for _, s := range settings {
		if s.Role == "" {
			sql = append(sql, s.SQL(db))
			needOwner = append(needOwner, s.Name)
			continue
		}
		if !c.cfg.Roles && !slices.Contains(have, s.Role) {
			skipped = append(skipped, fmt.Sprintf("setting %s of role %s in the database: not copied, the role does not exist on the target (create it, or pass --roles)", s.Name, s.Role))
			continue
		}
		sql = append(sql, s.SQL(db))
		needCreateRole = append(needCreateRole, s.Role+"."+s.Name)
	}
	switch {
	case len(needOwner) > 0 && !owner:
		return nil, skipped, fmt.Errorf("target %s: the role does not own database %q, so the source database's settings (%s) cannot be copied: "+
			"make the role the database's owner, or pass --skip-db-properties", c.dst, db, strings.Join(needOwner, ", "))
	case len(needCreateRole) > 0 && !createRole:
		return nil, skipped, fmt.Errorf("target %s: the role has no CREATEROLE, so the source's per-role database settings (%s) cannot be copied: "+
			"use a role that has it, or pass --skip-db-properties", c.dst, strings.Join(needCreateRole, ", "))
	}
	return sql, skipped, nil
}

// addSettingsUnit adds the unit that copies the database settings, after
// every other unit: a setting such as default_transaction_read_only or
// search_path must not change the clone's own sessions.
func addSettingsUnit(p *plan.Plan, sql []string) {
	if len(sql) == 0 {
		return
	}
	var id uint64
	deps := make([]uint64, 0, len(p.Units))
	for _, u := range p.Units {
		deps = append(deps, u.ID)
		id = max(id, u.ID)
	}
	p.Units = append(p.Units, plan.Unit{ID: id + 1, Kind: plan.KindPostData,
		Description: fmt.Sprintf("database settings (%d)", len(sql)),
		SQL:         strings.Join(sql, "\n") + "\n", Transactional: true, DependsOn: deps})
}
