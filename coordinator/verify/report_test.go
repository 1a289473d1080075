package verify

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestDiff(t *testing.T) {
	src := map[string]string{"a": "1", "b": "2", "c": "3"}
	tgt := map[string]string{"b": "2", "c": "4", "d": "5"}
	want := []Check{
		{Kind: "k", Object: "a", Source: "1", Target: missing},
		{Kind: "k", Object: "b", Source: "2", Target: "2", OK: true},
		{Kind: "k", Object: "c", Source: "3", Target: "4"},
		{Kind: "k", Object: "d", Source: missing, Target: "5"},
	}
	got := diff("k", src, tgt)
	if len(got) != len(want) {
		t.Fatalf("diff: %d checks, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("check %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestCompareLargeObjects(t *testing.T) {
	src := []largeObject{{oid: 1, size: 0, md5: "e"}, {oid: 2, size: 3, md5: "x"}, {oid: 4, size: 1, md5: "y"}}
	same := compareLargeObjects(src, src)
	for _, c := range same {
		if !c.OK {
			t.Errorf("equal large objects: %+v", c)
		}
	}
	tgt := []largeObject{{oid: 1, size: 0, md5: "e"}, {oid: 2, size: 3, md5: "z"}, {oid: 3, size: 1, md5: "y"}}
	var got []string
	for _, c := range compareLargeObjects(src, tgt) {
		if !c.OK {
			got = append(got, c.Object)
		}
	}
	want := []string{"oid 2", "oid 3", "oid 4", "data"}
	if len(got) != len(want) {
		t.Fatalf("problems %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("problems %q, want %q", got, want)
		}
	}
}

func TestDisplayName(t *testing.T) {
	for _, tc := range []struct {
		parts []string
		want  string
	}{
		{[]string{"public", "film"}, "public.film"},
		{[]string{"Sch ema", `we.ird "Name"`}, `"Sch ema"."we.ird ""Name"""`},
		{[]string{"public", "bıgınt"}, `public."bıgınt"`},
		{[]string{"s", "1abc"}, `s."1abc"`},
		{[]string{"s", "a1$"}, "s.a1$"},
		{[]string{"s", ""}, `s.""`},
		{[]string{"s", "Upper"}, `s."Upper"`},
	} {
		if got := displayName(tc.parts...); got != tc.want {
			t.Errorf("displayName(%q) = %s, want %s", tc.parts, got, tc.want)
		}
	}
}

// TestPrint pins the printed report: tables, the per-kind summary, the
// problems in full and the verdict.
func TestPrint(t *testing.T) {
	r := &Report{Checks: []Check{
		{Kind: "table", Object: "public.a", Source: "table", Target: "table", OK: true},
		{Kind: "table", Object: "public.gone", Source: "table", Target: missing},
		{Kind: "table", Object: "public.mv", Source: "materialized view", Target: "materialized view", OK: true},
		{Kind: "rows", Object: "public.a", Source: "10", Target: "10", OK: true},
		{Kind: "checksum", Object: "public.a", Source: "123", Target: "124"},
		{Kind: "index", Object: "public.a_pkey", Source: "CREATE UNIQUE INDEX a_pkey ON public.a USING btree (id)", Target: "CREATE UNIQUE INDEX a_pkey ON public.a USING btree (id)", OK: true},
		{Kind: "view", Object: "public.v", Source: "SELECT 1\n  FROM x;", Target: "SELECT 2\n  FROM x;"},
		{Kind: "matview", Object: "public.mv", Source: "populated", Target: "not populated"},
	}}
	var b bytes.Buffer
	r.Print(&b)
	golden(t, "report_problems", b.Bytes())

	ok := &Report{Checks: r.Checks[:1]}
	b.Reset()
	ok.Print(&b)
	golden(t, "report_ok", b.Bytes())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (run go test -run %s -update and review the diff):\n%s", name, path, t.Name(), got)
	}
}
