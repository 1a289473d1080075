package schema_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/coordinator/schema"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

func connect(t *testing.T, uri string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestRolesCopy dumps a server's roles with pg_dumpall and makes them on
// another, which already has one of them: that one is left as it is, the
// others get their attributes, password, comment and memberships; without
// passwords, the new role has none.
func TestRolesCopy(t *testing.T) {
	ctx := t.Context()
	src := pgtest.Start(t, pgtest.Options{})
	dst := pgtest.Start(t, pgtest.Options{})
	if err := src.Exec(ctx, "postgres", `CREATE ROLE readers CONNECTION LIMIT 7;
		CREATE ROLE "App Owner" LOGIN CREATEDB PASSWORD 'secret pass';
		COMMENT ON ROLE "App Owner" IS 'owns; the app';
		GRANT readers TO "App Owner";`); err != nil {
		t.Fatal(err)
	}
	if err := dst.Exec(ctx, "postgres", `CREATE ROLE readers CONNECTION LIMIT 3`); err != nil {
		t.Fatal(err)
	}
	srcConn, dstConn := connect(t, src.URI("postgres")), connect(t, dst.URI("postgres"))
	exists := func(r string) bool {
		var ok bool
		if err := dstConn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, r).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	tl := tools(t)

	for _, noPasswords := range []bool{false, true} {
		dump, err := tl.DumpRoles(ctx, mustParse(t, "source", src.URI("postgres")), noPasswords)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(dump, "PASSWORD") == noPasswords {
			t.Errorf("noPasswords %v: the dump has PASSWORD %v", noPasswords, !noPasswords)
		}
		script, skipped, err := schema.RolesScript(dump, exists)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(skipped, "postgres") || !slices.Contains(skipped, "readers") || slices.Contains(skipped, "App Owner") {
			t.Errorf("skipped %q, want postgres and readers", skipped)
		}
		if err := script.Run(ctx, dstConn); err != nil {
			t.Fatal(err)
		}
		var srcPass, dstPass *string
		if err := srcConn.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = 'App Owner'`).Scan(&srcPass); err != nil {
			t.Fatal(err)
		}
		var login, createdb, member bool
		var comment string
		var limit int
		err = dstConn.QueryRow(ctx, `SELECT a.rolpassword, a.rolcanlogin, a.rolcreatedb,
			pg_has_role(a.oid, 'readers', 'MEMBER'), shobj_description(a.oid, 'pg_authid'),
			(SELECT rolconnlimit FROM pg_roles WHERE rolname = 'readers')
			FROM pg_authid a WHERE rolname = 'App Owner'`).Scan(&dstPass, &login, &createdb, &member, &comment, &limit)
		if err != nil {
			t.Fatal(err)
		}
		if !login || !createdb || !member || comment != "owns; the app" {
			t.Errorf("noPasswords %v: App Owner on the target: login %v, createdb %v, member of readers %v, comment %q", noPasswords, login, createdb, member, comment)
		}
		if noPasswords && dstPass != nil || !noPasswords && (dstPass == nil || srcPass == nil || *dstPass != *srcPass) {
			t.Errorf("noPasswords %v: password on the target %v, on the source %v", noPasswords, dstPass, srcPass)
		}
		if limit != 3 {
			t.Errorf("the target's own role readers was changed: connection limit %d, want 3", limit)
		}
		if _, err := dstConn.Exec(ctx, `DROP ROLE "App Owner"`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadSettings copies a database's settings, and a role's in it, onto
// another database with the statements Setting.SQL writes: the catalog
// holds exactly the same values.
func TestReadSettings(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	for _, db := range []string{"from db", "to"} {
		if err := c.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Exec(ctx, "postgres", `CREATE ROLE "Bob";
		ALTER DATABASE "from db" SET search_path TO "$user", public, "My Schema";
		ALTER DATABASE "from db" SET app.note TO 'it''s; \ here';
		ALTER DATABASE "from db" SET work_mem TO '8MB';
		ALTER DATABASE "from db" SET DateStyle TO 'SQL, DMY';
		ALTER ROLE "Bob" IN DATABASE "from db" SET statement_timeout TO '5s';
		ALTER ROLE "Bob" SET work_mem TO '1MB';
		ALTER DATABASE postgres SET work_mem TO '2MB';`); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, c.URI("from db"))
	settings, err := schema.ReadSettings(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(settings) != 5 || settings[4].Role != "Bob" {
		t.Fatalf("settings %+v, want the database's 4 then Bob's", settings)
	}
	var sql strings.Builder
	for _, s := range settings {
		sql.WriteString(s.SQL("to") + "\n")
	}
	if _, err := conn.Exec(ctx, sql.String()); err != nil {
		t.Fatalf("%v\n%s", err, sql.String())
	}
	read := func(db string) []string {
		rows, err := conn.Query(ctx, `SELECT coalesce(r.rolname, '-') || ' ' || s.setconfig::text
			FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
			WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY 1`, db)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	from, to := read("from db"), read("to")
	if len(from) != 2 || !slices.Equal(from, to) {
		t.Errorf("settings of the source database:\n  %s\nof the copy:\n  %s", strings.Join(from, "\n  "), strings.Join(to, "\n  "))
	}
}

// TestScriptRun: a script runs in one transaction; a failing statement
// rolls all of it back, and the error names the file, the statement and
// its line.
func TestScriptRun(t *testing.T) {
	ctx := t.Context()
	c := pgtest.Start(t, pgtest.Options{})
	conn := connect(t, c.URI("postgres"))
	s, err := schema.ParseScript("after.sql", "CREATE TABLE a (x int);\n\nINSERT INTO a VALUES (1);\nINSERT INTO missing\n  VALUES (1);\n")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(ctx, conn)
	if err == nil {
		t.Fatal("a script with a failing statement ran")
	}
	for _, want := range []string{"after.sql: statement 3 (line 4) failed", `relation "missing" does not exist`, "INSERT INTO missing VALUES (1)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = 'a'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("table a of the failed script: %d, %v; want it rolled back", n, err)
	}
	s, err = schema.ParseScript("after.sql", "CREATE TABLE a (x int);\nSET search_path = nowhere;\nINSERT INTO public.a VALUES (1);")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM public.a`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows of a: %d, %v; want 1", n, err)
	}
}
