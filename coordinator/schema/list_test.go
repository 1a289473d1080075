package schema

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// EntrySQL restores groups in goroutines; none may outlive the call.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current output")

// TestParseListGolden parses a canned pg_restore --list (a real pg_dump 15
// header and entries of every shape the coordinator meets) and compares the
// entries with testdata/list.golden.json. Regenerate with
// `go test ./coordinator/schema -run TestParseListGolden -update` and review
// the diff.
func TestParseListGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "list.txt"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := parseList(in)
	if err != nil {
		t.Fatalf("parseList: %v", err)
	}
	got, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "list.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("parseList(testdata/list.txt) differs from %s (run with -update and review the diff):\n%s", golden, got)
	}
}

// TestParseListEntries spells out the lines whose entry type has spaces or
// whose tag is more than one word, so a reader sees the rule without the
// golden file.
func TestParseListEntries(t *testing.T) {
	tests := []struct {
		line string
		want Entry
	}{
		{"5; 2615 2200 SCHEMA - public pg_database_owner",
			Entry{DumpID: 5, CatalogOID: 2615, ObjOID: 2200, Desc: "SCHEMA", Tag: "public", Owner: "pg_database_owner"}},
		{"3691; 0 0 ACL - SCHEMA public pg_database_owner",
			Entry{DumpID: 3691, Desc: "ACL", Tag: "SCHEMA public", Owner: "pg_database_owner"}},
		{"3492; 2606 16683 FK CONSTRAINT public address address_city_id_fkey postgres",
			Entry{DumpID: 3492, CatalogOID: 2606, ObjOID: 16683, Desc: "FK CONSTRAINT", Schema: "public", Tag: "address address_city_id_fkey", Owner: "postgres"}},
		{"3405; 2606 16607 CONSTRAINT public actor actor_pkey postgres",
			Entry{DumpID: 3405, CatalogOID: 2606, ObjOID: 16607, Desc: "CONSTRAINT", Schema: "public", Tag: "actor actor_pkey", Owner: "postgres"}},
		{"3398; 2606 16893 CHECK CONSTRAINT public nv c postgres",
			Entry{DumpID: 3398, CatalogOID: 2606, ObjOID: 16893, Desc: "CHECK CONSTRAINT", Schema: "public", Tag: "nv c", Owner: "postgres"}},
		{"3471; 0 0 INDEX ATTACH public payment_p2022_01_pkey postgres",
			Entry{DumpID: 3471, Desc: "INDEX ATTACH", Schema: "public", Tag: "payment_p2022_01_pkey", Owner: "postgres"}},
		{"3362; 1259 16634 INDEX public idx_title postgres",
			Entry{DumpID: 3362, CatalogOID: 1259, ObjOID: 16634, Desc: "INDEX", Schema: "public", Tag: "idx_title", Owner: "postgres"}},
		{"249; 1259 16555 MATERIALIZED VIEW public rental_by_category postgres",
			Entry{DumpID: 249, CatalogOID: 1259, ObjOID: 16555, Desc: "MATERIALIZED VIEW", Schema: "public", Tag: "rental_by_category", Owner: "postgres"}},
		{"3750; 0 16555 MATERIALIZED VIEW DATA public rental_by_category postgres",
			Entry{DumpID: 3750, ObjOID: 16555, Desc: "MATERIALIZED VIEW DATA", Schema: "public", Tag: "rental_by_category", Owner: "postgres"}},
		{"2187; 826 16889 DEFAULT ACL - DEFAULT PRIVILEGES FOR TABLES postgres",
			Entry{DumpID: 2187, CatalogOID: 826, ObjOID: 16889, Desc: "DEFAULT ACL", Tag: "DEFAULT PRIVILEGES FOR TABLES", Owner: "postgres"}},
		{"3694; 0 0 COMMENT public INDEX idx_title postgres",
			Entry{DumpID: 3694, Desc: "COMMENT", Schema: "public", Tag: "INDEX idx_title", Owner: "postgres"}},
		{"258; 1255 16403 FUNCTION public film_in_stock(integer, integer) postgres",
			Entry{DumpID: 258, CatalogOID: 1255, ObjOID: 16403, Desc: "FUNCTION", Schema: "public", Tag: "film_in_stock(integer, integer)", Owner: "postgres"}},
		{"3739; 0 0 SEQUENCE SET public actor_actor_id_seq postgres",
			Entry{DumpID: 3739, Desc: "SEQUENCE SET", Schema: "public", Tag: "actor_actor_id_seq", Owner: "postgres"}},
		{"3693; 0 16423 TABLE DATA public actor postgres",
			Entry{DumpID: 3693, ObjOID: 16423, Desc: "TABLE DATA", Schema: "public", Tag: "actor", Owner: "postgres"}},
		{"3350; 0 0 TABLE ATTACH public payment_p2022_01 postgres",
			Entry{DumpID: 3350, Desc: "TABLE ATTACH", Schema: "public", Tag: "payment_p2022_01", Owner: "postgres"}},
		// pg_restore prints an empty owner as nothing after the last space.
		{"3728; 0 0 BLOBS - BLOBS ",
			Entry{DumpID: 3728, Desc: "BLOBS", Tag: "BLOBS"}},
		{"3727; 2613 777 BLOB - 777 postgres",
			Entry{DumpID: 3727, CatalogOID: 2613, ObjOID: 777, Desc: "BLOB", Tag: "777", Owner: "postgres"}},
		{"889; 1247 16386 DOMAIN public bıgınt postgres",
			Entry{DumpID: 889, CatalogOID: 1247, ObjOID: 16386, Desc: "DOMAIN", Schema: "public", Tag: "bıgınt", Owner: "postgres"}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := parseList([]byte(tt.line + "\n"))
			if err != nil {
				t.Fatalf("parseList: %v", err)
			}
			if len(got) != 1 {
				t.Fatalf("parseList gave %d entries, want 1: %+v", len(got), got)
			}
			tt.want.Line = tt.line
			// Names is the line after "ID; CATALOG OID DESC ".
			tt.want.Names = strings.TrimPrefix(strings.SplitN(tt.line, " ", 4)[3], tt.want.Desc+" ")
			if !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("parseList(%q)\n got  %+v\n want %+v", tt.line, got[0], tt.want)
			}
		})
	}
}

func TestParseListSkipsCommentsAndBlankLines(t *testing.T) {
	in := ";\n; Archive created at 2026-11-21 14:16:50 UTC\n;     dbname: app\n\n;\n3362; 1259 16634 INDEX public idx_title postgres\n\n"
	got, err := parseList([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].DumpID != 3362 {
		t.Errorf("parseList = %+v, want only dump id 3362", got)
	}
	if got, err := parseList(nil); err != nil || len(got) != 0 {
		t.Errorf("parseList(nil) = %v, %v; want no entries and no error", got, err)
	}
}

func TestParseListRejectsUnknownLines(t *testing.T) {
	for _, line := range []string{
		"garbage",
		"12; 0 0 NO SUCH TYPE public x postgres",
		"12; 0 0 TABLE",                    // an entry type with nothing after it
		"12; 1 2",                          // no entry at all
		"x; 0 0 TABLE public t postgres",   // dump id not a number
		" 12; 0 0 TABLE public t postgres", // leading space
		"TABLE public t postgres",
	} {
		t.Run(line, func(t *testing.T) {
			in := "3362; 1259 16634 INDEX public idx_title postgres\n" + line + "\n"
			got, err := parseList([]byte(in))
			if err == nil {
				t.Fatalf("parseList accepted %q: %+v", line, got)
			}
			if !strings.Contains(err.Error(), line) {
				t.Errorf("error %q does not quote the line %q", err, line)
			}
		})
	}
}

func TestStripMetaCommands(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"none", "CREATE INDEX i ON t (a);\n", "CREATE INDEX i ON t (a);\n"},
		{"restrict and unrestrict",
			"--\n\\restrict AbC123\n\nSET x = 1;\nCREATE INDEX i ON t (a);\n\n\\unrestrict AbC123\n",
			"--\n\nSET x = 1;\nCREATE INDEX i ON t (a);\n\n"},
		{"last line without newline", "SELECT 1;\n\\unrestrict k", "SELECT 1;\n"},
		{"backslash inside SQL", "SELECT E'\\\\restrict x';\nSELECT '\\unrestrict y';\n", "SELECT E'\\\\restrict x';\nSELECT '\\unrestrict y';\n"},
		{"other meta-commands stay", "\\connect app\n\\restrictions\n", "\\connect app\n\\restrictions\n"},
		{"indented is not a meta-command line", "  \\restrict k\n", "  \\restrict k\n"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StripMetaCommands(tt.in); got != tt.want {
				t.Errorf("StripMetaCommands(%q)\n = %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestConninfoDB(t *testing.T) {
	tests := []struct{ name, want string }{
		{"app", `dbname='app'`},
		{"we'ird db=x", `dbname='we\'ird db=x'`},
		{`back\slash`, `dbname='back\\slash'`},
		{"", `dbname=''`},
	}
	for _, tt := range tests {
		if got := conninfoDB(tt.name); got != tt.want {
			t.Errorf("conninfoDB(%q) = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestHint(t *testing.T) {
	tests := []struct{ msg, want string }{
		{`pg_restore: error: could not execute query: ERROR:  role "alice" does not exist`, "--no-owner"},
		{`pg_restore: error: could not execute query: ERROR:  role "alice" does not exist`, "--roles"},
		{`pg_restore: error: could not execute query: ERROR:  relation "actor" already exists`, "--drop-if-exists"},
		{`ERROR:  could not open extension control file "/usr/share/postgresql/15/extension/postgis.control"`, "install the extension"},
		{`pg_restore: error: connection to server failed`, ""},
	}
	for _, tt := range tests {
		got := hint(errors.New(tt.msg))
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("hint(%q) = %q, want it to mention %q", tt.msg, got, tt.want)
		}
	}
}

func TestFindToolsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := FindTools()
	if !errors.Is(err, ErrToolMissing) {
		t.Fatalf("FindTools with an empty PATH: %v, want ErrToolMissing", err)
	}
	if !strings.Contains(err.Error(), "not on PATH") {
		t.Errorf("error %q does not say what is missing", err)
	}
}

func TestChildEnvDropsCallerPGVariables(t *testing.T) {
	t.Setenv("PGDATABASE", "wrong")
	t.Setenv("PGPASSWORD", "leak")
	env := childEnv([]string{"PGDATABASE=right"})
	var pg []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "PG") {
			pg = append(pg, kv)
		}
	}
	if len(pg) != 1 || pg[0] != "PGDATABASE=right" {
		t.Errorf("PG variables in the child environment = %v, want only PGDATABASE=right", pg)
	}
}

// TestParseListDependencies reads the "depends on" lines that
// pg_restore --list --verbose prints under an entry.
func TestParseListDependencies(t *testing.T) {
	in := "217; 1259 16467 TABLE app customers postgres\n;\tdepends on: 7\n" +
		"3288; 2606 16483 FK CONSTRAINT app orders orders_cust_fkey postgres\n;\tdepends on: 217 3279 219\n" +
		"3435; 0 0 ENCODING - ENCODING \n"
	got, err := parseList([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{{7}, {217, 3279, 219}, nil}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i].Deps, want[i]) {
			t.Errorf("entry %d (%s): deps %v, want %v", i, got[i].Desc, got[i].Deps, want[i])
		}
	}
}
