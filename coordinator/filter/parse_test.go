package filter_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
)

func TestParseSections(t *testing.T) {
	in := `# pgcopydb-style filters
[include-only-schema]
app
"Sales Data"

[exclude-index]
app.orders_total_idx   # not needed on the target
"My Schema"."Odd.Name"

[exclude-table-data]
app.audit_log = ignored value
"a""b"."c#d"

[exclude-extension]
pg_stat_statements
; semicolon comment
[INCLUDE-ONLY-TABLE]
app.orders
`
	got, err := filter.Parse("f.ini", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &filter.Filter{
		IncludeOnlySchemas: []string{"app", "Sales Data"},
		IncludeOnlyTables:  []filter.Name{{Schema: "app", Name: "orders"}},
		ExcludeIndexes:     []filter.Name{{Schema: "app", Name: "orders_total_idx"}, {Schema: "My Schema", Name: "Odd.Name"}},
		ExcludeTableData:   []filter.Name{{Schema: "app", Name: "audit_log"}, {Schema: `a"b`, Name: "c#d"}},
		ExcludeExtensions:  []string{"pg_stat_statements"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got  %+v\n want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseEverySection(t *testing.T) {
	for _, tc := range []struct {
		section string
		entry   string
		check   func(*filter.Filter) bool
	}{
		{"include-only-schema", "app", func(f *filter.Filter) bool { return reflect.DeepEqual(f.IncludeOnlySchemas, []string{"app"}) }},
		{"exclude-schema", `"Big Schema"`, func(f *filter.Filter) bool { return reflect.DeepEqual(f.ExcludeSchemas, []string{"Big Schema"}) }},
		{"include-only-table", "app.t", func(f *filter.Filter) bool {
			return reflect.DeepEqual(f.IncludeOnlyTables, []filter.Name{{"app", "t"}})
		}},
		{"exclude-table", `app."T"`, func(f *filter.Filter) bool { return reflect.DeepEqual(f.ExcludeTables, []filter.Name{{"app", "T"}}) }},
		{"exclude-index", "app.i", func(f *filter.Filter) bool { return reflect.DeepEqual(f.ExcludeIndexes, []filter.Name{{"app", "i"}}) }},
		{"exclude-table-data", "app.t", func(f *filter.Filter) bool { return reflect.DeepEqual(f.ExcludeTableData, []filter.Name{{"app", "t"}}) }},
		{"exclude-extension", "postgis", func(f *filter.Filter) bool { return reflect.DeepEqual(f.ExcludeExtensions, []string{"postgis"}) }},
	} {
		t.Run(tc.section, func(t *testing.T) {
			f, err := filter.Parse("f.ini", []byte("["+tc.section+"]\n"+tc.entry+"\n"+tc.entry+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(f) {
				t.Errorf("[%s] %s parsed as %+v", tc.section, tc.entry, f)
			}
			if f.Empty() {
				t.Error("Empty() is true")
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no section", "app.t\n", `filters f.ini line 1: "app.t" is not in a section`},
		{"unknown section", "[exclude-tables]\n", "filters f.ini line 1: unknown section [exclude-tables]"},
		{"bad header", "[exclude-table\n", "line 1: \"[exclude-table\": want a section header"},
		{"not qualified", "\n\n[exclude-table]\nfoo\n", `filters f.ini line 4: [exclude-table] "foo": want schema.name`},
		{"three parts", "[exclude-index]\na.b.c\n", `line 2: [exclude-index] "a.b.c": want schema.name`},
		{"qualified schema", "[exclude-schema]\na.b\n", `[exclude-schema] "a.b": want a single name`},
		{"unterminated", "[exclude-table]\n\"app.t\n", "unterminated quoted name"},
		{"empty part", "[exclude-table]\napp.\n", "empty name after the dot"},
		{"leading dot", "[exclude-table]\n.t\n", "empty name part"},
		{"space", "[exclude-table]\napp.my table\n", "a space in an unquoted name"},
		{"stray quote", "[exclude-table]\napp.a\"b\n", "a quote inside an unquoted name"},
		{"junk after quote", "[exclude-table]\n\"app\"x.t\n", "after a quoted name"},
		{"not utf8", "[exclude-table]\n\xff.t\n", "not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := filter.Parse("f.ini", []byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%q) error %v, want it to contain %q", tc.in, err, tc.want)
			}
		})
	}
}

// TestValidateConflicts follows pgcopydb: include-only sections do not mix
// with exclusions of tables or schemas.
func TestValidateConflicts(t *testing.T) {
	for _, tc := range []struct {
		in       string
		conflict bool
	}{
		{"[include-only-table]\na.t\n[exclude-table]\na.u\n", true},
		{"[include-only-schema]\na\n[exclude-schema]\nb\n", true},
		{"[include-only-table]\na.t\n[exclude-schema]\nb\n", true},
		{"[include-only-schema]\na\n[exclude-table]\na.u\n", true},
		{"[include-only-table]\na.t\n[include-only-schema]\na\n", false},
		{"[include-only-table]\na.t\n[exclude-index]\na.i\n[exclude-table-data]\na.t\n[exclude-extension]\nx\n", false},
		{"[exclude-schema]\nb\n[exclude-table]\na.u\n[exclude-table-data]\na.v\n", false},
	} {
		f, err := filter.Parse("f.ini", []byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		err = f.Validate()
		if got := errors.Is(err, filter.ErrConflict); got != tc.conflict {
			t.Errorf("Validate(%q) = %v, want conflict %t", tc.in, err, tc.conflict)
		}
		if err != nil && !strings.Contains(err.Error(), "cannot be combined with") {
			t.Errorf("Validate(%q) = %v: want the reason", tc.in, err)
		}
	}
}

func TestAddFlagAndMerge(t *testing.T) {
	f := &filter.Filter{}
	if err := f.AddFlag(filter.SectionExcludeTable, `"My Schema".t`); err != nil {
		t.Fatal(err)
	}
	if err := f.AddFlag(filter.SectionExcludeTable, "nodot"); err == nil {
		t.Error("AddFlag accepted a name without a schema")
	}
	file, err := filter.Parse("f.ini", []byte("[exclude-table]\n\"My Schema\".t\napp.u\n"))
	if err != nil {
		t.Fatal(err)
	}
	f.Merge(file)
	want := []filter.Name{{"My Schema", "t"}, {"app", "u"}}
	if !reflect.DeepEqual(f.ExcludeTables, want) {
		t.Errorf("merged %v, want %v", f.ExcludeTables, want)
	}
	var nilFilter *filter.Filter
	if !nilFilter.Empty() || nilFilter.Validate() != nil {
		t.Error("a nil filter must be empty and valid")
	}
}

func TestNameString(t *testing.T) {
	for n, want := range map[filter.Name]string{
		{"app", "orders"}:    "app.orders",
		{"My Schema", "a.b"}: `"My Schema"."a.b"`,
		{"app", `x"y`}:       `app."x""y"`,
		{"app", "Upper"}:     `app."Upper"`,
		{"app", "t1"}:        "app.t1",
		{"app", "1t"}:        `app."1t"`,
	} {
		if got := n.String(); got != want {
			t.Errorf("%#v.String() = %s, want %s", n, got, want)
		}
		back, err := filter.ParseName(n.String())
		if err != nil || back != n {
			t.Errorf("ParseName(%s) = %v, %v: want %v back", n.String(), back, err, n)
		}
	}
}

// FuzzParse checks that Parse never panics, and that every name it accepts
// prints back (Name.String) to something that parses to the same name.
func FuzzParse(f *testing.F) {
	f.Add([]byte("[exclude-table]\napp.t\n\"My Schema\".\"Odd.Name\"\n"))
	f.Add([]byte("[include-only-schema]\n\"a\"\"b\" # c\n[exclude-extension]\nx = y\n"))
	f.Add([]byte("[exclude-index]\n\"unterminated\n"))
	f.Add([]byte("\uFEFF[exclude-table-data]\r\na.b\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := filter.Parse("fuzz.ini", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "filters fuzz.ini") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, list := range [][]filter.Name{got.IncludeOnlyTables, got.ExcludeTables, got.ExcludeIndexes, got.ExcludeTableData} {
			for _, n := range list {
				back, err := filter.ParseName(n.String())
				if err != nil || back != n {
					t.Fatalf("name %#v prints as %s, which parses to %#v, %v", n, n.String(), back, err)
				}
			}
		}
		_ = got.Validate()
	})
}
