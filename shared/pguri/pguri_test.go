package pguri

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://u:s3cret@h:5432/db?sslmode=disable", "postgres://u:xxxxx@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"host=h user=u password=s3cret dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"postgres://u:s3cret@h/db?password=s3cret", "postgres://u:xxxxx@h/db?password=xxxxx"},
	}
	for _, c := range cases {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse("source", ""); err == nil || !strings.Contains(err.Error(), "--source") {
		t.Fatalf("empty: %v", err)
	}
	_, err := Parse("target", "postgres://u:s3cret@h:notaport/db")
	if err == nil {
		t.Fatal("bad port parsed")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "target") {
		t.Fatalf("error leaks password or misses role: %v", err)
	}
}

func TestLibpqEnv(t *testing.T) {
	u, err := Parse("source", "postgres://alice:pw@db.example:6543/app?sslmode=require&application_name=x")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(u.LibpqEnv(), " ")
	for _, want := range []string{"PGHOST=db.example", "PGPORT=6543", "PGDATABASE=app", "PGUSER=alice", "PGPASSWORD=pw", "PGSSLMODE=require", "PGAPPNAME=x"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %q lacks %s", env, want)
		}
	}
	if u.Database() != "app" || strings.Contains(u.String(), "pw@") {
		t.Errorf("Database=%q String=%q", u.Database(), u.String())
	}
}
