package worker

import (
	"slices"
	"strings"
	"testing"
)

func TestLargeObjectGrants(t *testing.T) {
	tests := []struct {
		name  string
		owner string
		acl   []string
		want  []string
	}{
		{"owner only", "postgres", []string{"postgres=rw/postgres"}, []string{
			`REVOKE ALL ON LARGE OBJECT 42 FROM "postgres"`,
			`GRANT SELECT ON LARGE OBJECT 42 TO "postgres"`,
			`GRANT UPDATE ON LARGE OBJECT 42 TO "postgres"`,
		}},
		{"public, a role and a quoted role with grant option", "postgres",
			[]string{"=r/postgres", "alice=rw/postgres", `"bob smith"=r*/postgres`}, []string{
				`REVOKE ALL ON LARGE OBJECT 42 FROM "postgres"`,
				`GRANT SELECT ON LARGE OBJECT 42 TO PUBLIC`,
				`GRANT SELECT ON LARGE OBJECT 42 TO "alice"`,
				`GRANT UPDATE ON LARGE OBJECT 42 TO "alice"`,
				`GRANT SELECT ON LARGE OBJECT 42 TO "bob smith" WITH GRANT OPTION`,
			}},
		{"grant option on the second privilege only", "Owner", []string{`"Owner"=rw/"Owner"`, "carol=rw*/Owner"}, []string{
			`REVOKE ALL ON LARGE OBJECT 42 FROM "Owner"`,
			`GRANT SELECT ON LARGE OBJECT 42 TO "Owner"`,
			`GRANT UPDATE ON LARGE OBJECT 42 TO "Owner"`,
			`GRANT SELECT ON LARGE OBJECT 42 TO "carol"`,
			`GRANT UPDATE ON LARGE OBJECT 42 TO "carol" WITH GRANT OPTION`,
		}},
		// The owner revoked its own rights: only the revoke and the grants
		// that remain.
		{"owner without rights", "o", []string{"reader=r/o"}, []string{
			`REVOKE ALL ON LARGE OBJECT 42 FROM "o"`,
			`GRANT SELECT ON LARGE OBJECT 42 TO "reader"`,
		}},
		{"everything revoked", "o", nil, []string{`REVOKE ALL ON LARGE OBJECT 42 FROM "o"`}},
		{"an item without a grantee separator is skipped", "o", []string{"garbage", "x=r/o"}, []string{
			`REVOKE ALL ON LARGE OBJECT 42 FROM "o"`,
			`GRANT SELECT ON LARGE OBJECT 42 TO "x"`,
		}},
		{"unknown privilege letters are skipped", "o", []string{"x=rwU/o"}, []string{
			`REVOKE ALL ON LARGE OBJECT 42 FROM "o"`,
			`GRANT SELECT ON LARGE OBJECT 42 TO "x"`,
			`GRANT UPDATE ON LARGE OBJECT 42 TO "x"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := largeObjectGrants(42, tt.owner, tt.acl)
			if !slices.Equal(got, tt.want) {
				t.Errorf("largeObjectGrants(42, %q, %q) =\n  %q\nwant\n  %q", tt.owner, tt.acl, got, tt.want)
			}
		})
	}
}

// Quoted grantees: a "=" or a doubled quote inside the name must not
// misdirect the grant.
func TestLargeObjectGrantsQuotedGrantees(t *testing.T) {
	got := largeObjectGrants(7, "o", []string{`"a=b"=r/postgres`, `"q""r"=w/postgres`, `"bad`})
	want := []string{
		`REVOKE ALL ON LARGE OBJECT 7 FROM "o"`,
		`GRANT SELECT ON LARGE OBJECT 7 TO "a=b"`,
		`GRANT UPDATE ON LARGE OBJECT 7 TO "q""r"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
