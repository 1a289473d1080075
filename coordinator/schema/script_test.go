package schema

import (
	"slices"
	"strings"
	"testing"
)

func TestParseScript(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []Statement
	}{
		{"two statements", "SELECT 1;\nSELECT 2;\n", []Statement{{1, "SELECT 1"}, {2, "SELECT 2"}}},
		{"no final semicolon", "SELECT 1", []Statement{{1, "SELECT 1"}}},
		{"leading comments are dropped", "-- a comment; with a semicolon\n/* and; another */\nSELECT 1;",
			[]Statement{{3, "SELECT 1"}}},
		{"semicolons in quotes", "SELECT 'a;b', \"c;d\", E'e\\';f';\nSELECT 'it''s;';",
			[]Statement{{1, `SELECT 'a;b', "c;d", E'e\';f'`}, {2, "SELECT 'it''s;'"}}},
		{"a backslash ends a standard string", "SELECT 'a\\';\nSELECT 2;", []Statement{{1, `SELECT 'a\'`}, {2, "SELECT 2"}}},
		{"dollar quotes", "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$\nBEGIN\n  RETURN 1;\nEND\n$body$;\nDO $$ BEGIN PERFORM 1; END $$;",
			[]Statement{{1, "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$\nBEGIN\n  RETURN 1;\nEND\n$body$"}, {6, "DO $$ BEGIN PERFORM 1; END $$"}}},
		{"parameters are not dollar quotes", "PREPARE p AS SELECT $1;\nSELECT a$b$ FROM t;",
			[]Statement{{1, "PREPARE p AS SELECT $1"}, {2, "SELECT a$b$ FROM t"}}},
		{"nested block comments", "/* a /* b; */ c; */ SELECT 1; SELECT /* x; */ 2;",
			[]Statement{{1, "SELECT 1"}, {1, "SELECT /* x; */ 2"}}},
		{"parentheses", "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); INSERT INTO u VALUES (2));\nSELECT 1;",
			[]Statement{{1, "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); INSERT INTO u VALUES (2))"}, {2, "SELECT 1"}}},
		{"multi-line statements keep their first line", "\n\nALTER TABLE t\n  ADD COLUMN c int;\n\n;\nSELECT\n1;",
			[]Statement{{3, "ALTER TABLE t\n  ADD COLUMN c int"}, {7, "SELECT\n1"}}},
		{"quoted identifiers with newlines", "CREATE TABLE \"a\nb\" (x int);\nSELECT 1;",
			[]Statement{{1, "CREATE TABLE \"a\nb\" (x int)"}, {3, "SELECT 1"}}},
		{"only comments", "-- nothing\n/* here */\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseScript("f.sql", tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Statements, tt.want) {
				t.Errorf("ParseScript(%q) =\n  %+v\nwant\n  %+v", tt.text, s.Statements, tt.want)
			}
		})
	}
}

func TestParseScriptRefuses(t *testing.T) {
	tests := []struct {
		text string
		want string
	}{
		{"SELECT 1;\n\\i other.sql\n", `f.sql: line 2: psql meta-command \i is not supported`},
		{"SELECT 1;\n  \\set x 1\n", `f.sql: line 2: psql meta-command \set`},
		{"BEGIN;\nSELECT 1;\nCOMMIT;", "f.sql: line 1: BEGIN: the file already runs in one transaction"},
		{"SELECT 1;\n-- done\ncommit;", "f.sql: line 3: COMMIT:"},
		{"SELECT 1;\nstart  transaction;", "f.sql: line 2: START TRANSACTION:"},
		{"SELECT 'open;\n", "f.sql: line 1: unterminated ' quote"},
		{"SELECT 1;\nSELECT $x$ open;\n", "f.sql: line 2: unterminated $x$ quote"},
		{"/* open", "f.sql: line 1: unterminated /* comment"},
	}
	for _, tt := range tests {
		_, err := ParseScript("f.sql", tt.text)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseScript(%q) error %v, want it to contain %q", tt.text, err, tt.want)
		}
	}
	// A function body may say BEGIN and END; a DO block too.
	if _, err := ParseScript("f.sql", "DO $$BEGIN PERFORM 1; END$$;\nSELECT 'begin;';"); err != nil {
		t.Errorf("a DO block was refused: %v", err)
	}
}

func TestStatementExcerptHidesPasswords(t *testing.T) {
	st := Statement{SQL: "ALTER ROLE bob WITH LOGIN\n  PASSWORD 'SCRAM-SHA-256$4096:abc''def';"}
	got := st.Excerpt()
	if strings.Contains(got, "SCRAM") || strings.Contains(got, "def") || !strings.Contains(got, "ALTER ROLE bob WITH LOGIN PASSWORD 'xxxxx'") {
		t.Errorf("Excerpt() = %q", got)
	}
}

func TestRolesScript(t *testing.T) {
	dump := `--
-- PostgreSQL database cluster dump
--

\restrict abc

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Odd ""Role""";
ALTER ROLE "Odd ""Role""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:x';
COMMENT ON ROLE app IS 'the; app';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
SECURITY LABEL FOR dummy ON ROLE postgres IS 'x';

--
-- User Configurations
--

ALTER ROLE postgres SET work_mem TO '64MB';
ALTER ROLE app SET search_path TO 'app', 'public';

--
-- Role memberships
--

GRANT "Odd ""Role""" TO app GRANTED BY postgres;

\unrestrict abc

--
-- PostgreSQL database cluster dump complete
--
`
	s, skipped, err := RolesScript(dump, func(r string) bool { return r == "postgres" || r == `Odd "Role"` })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range s.Statements {
		got = append(got, st.SQL)
	}
	want := []string{
		"SET default_transaction_read_only = off",
		"SET standard_conforming_strings = on",
		"CREATE ROLE app",
		"ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:x'",
		"COMMENT ON ROLE app IS 'the; app'",
		"ALTER ROLE app SET search_path TO 'app', 'public'",
		`GRANT "Odd ""Role""" TO app GRANTED BY postgres`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("statements:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if !slices.Equal(skipped, []string{`Odd "Role"`, "postgres"}) {
		t.Errorf("skipped %q", skipped)
	}
}

func TestRoleSubject(t *testing.T) {
	for sql, want := range map[string]string{
		"CREATE ROLE app":                        "app",
		`ALTER ROLE "A b" WITH LOGIN`:            "A b",
		`COMMENT ON ROLE "x""y" IS 'c'`:          `x"y`,
		"SECURITY LABEL FOR p ON ROLE r IS 'l'":  "r",
		"ALTER ROLE app_2$ SET work_mem TO '1'":  "app_2$",
		"GRANT a TO b":                           "",
		"CREATE ROLEX":                           "",
		`ALTER ROLE "unterminated WITH LOGIN`:    "",
		"SET standard_conforming_strings = on":   "",
		"COMMENT ON ROLE postgres IS 'ROLE bob'": "postgres",
	} {
		got, ok := roleSubject(sql)
		if got != want || ok != (want != "") {
			t.Errorf("roleSubject(%q) = %q, %v; want %q", sql, got, ok, want)
		}
	}
}

func TestSettingSQL(t *testing.T) {
	tests := []struct {
		s    Setting
		want string
	}{
		{Setting{Name: "work_mem", Value: "64MB"}, `ALTER DATABASE "my db" SET "work_mem" TO '64MB';`},
		{Setting{Name: "app.note", Value: "it's"}, `ALTER DATABASE "my db" SET "app.note" TO 'it''s';`},
		{Setting{Name: "search_path", Value: `"$user", public, "My Schema"`}, `ALTER DATABASE "my db" SET "search_path" TO '$user', 'public', 'My Schema';`},
		{Setting{Name: "search_path", Value: `""`}, `ALTER DATABASE "my db" SET "search_path" TO '';`},
		{Setting{Name: "DateStyle", Value: "ISO, MDY"}, `ALTER DATABASE "my db" SET "DateStyle" TO 'ISO, MDY';`},
		{Setting{Role: "Bob", Name: "statement_timeout", Value: "5s"}, `ALTER ROLE "Bob" IN DATABASE "my db" SET "statement_timeout" TO '5s';`},
	}
	for _, tt := range tests {
		if got := tt.s.SQL("my db"); got != tt.want {
			t.Errorf("%+v.SQL() = %s, want %s", tt.s, got, tt.want)
		}
	}
}

func TestSplitGUCList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{`"$user", public`, []string{"$user", "public"}, true},
		{`a,b ,  "c ""d"""`, []string{"a", "b", `c "d"`}, true},
		{``, []string{""}, true},
		{`""`, []string{""}, true},
		{`a b`, nil, false},
		{`"open`, nil, false},
		{`a,`, nil, false},
	}
	for _, tt := range tests {
		got, ok := splitGUCList(tt.in)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("splitGUCList(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWithoutExtensions(t *testing.T) {
	list := []Entry{
		{DumpID: 1, Desc: "SCHEMA", Tag: "ext"},
		{DumpID: 2, Desc: "EXTENSION", Tag: "hstore", Deps: []int{1}},
		{DumpID: 3, Desc: "COMMENT", Tag: "EXTENSION hstore", Deps: []int{2}},
		{DumpID: 4, Desc: "TABLE", Tag: "t", Deps: []int{2}},
		{DumpID: 5, Desc: "COMMENT", Tag: "TABLE t", Deps: []int{4}},
	}
	kept, left := WithoutExtensions(list)
	ids := func(es []Entry) (out []int) {
		for _, e := range es {
			out = append(out, e.DumpID)
		}
		return out
	}
	if !slices.Equal(ids(kept), []int{1, 4, 5}) || !slices.Equal(ids(left), []int{2, 3}) {
		t.Errorf("kept %v, left %v", ids(kept), ids(left))
	}
	if got := ids(WithoutComments(list)); !slices.Equal(got, []int{1, 2, 4}) {
		t.Errorf("WithoutComments kept %v", got)
	}
}
