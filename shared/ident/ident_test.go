package ident

import "testing"

func TestQuote(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", `"plain"`},
		{`we"ird`, `"we""ird"`},
		{"Mixed Case.Tbl", `"Mixed Case.Tbl"`},
		{"bıgınt", `"bıgınt"`},
		{"", `""`},
	}
	for _, c := range cases {
		if got := Quote(c.in); got != c.want {
			t.Errorf("Quote(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	if got := Qualified("s.x", `t"`); got != `"s.x"."t"""` {
		t.Errorf("Qualified = %s", got)
	}
	if got := QuoteList([]string{"a", "B"}); got != `"a", "B"` {
		t.Errorf("QuoteList = %s", got)
	}
	if got := Literal("it's"); got != `'it''s'` {
		t.Errorf("Literal = %s", got)
	}
}
