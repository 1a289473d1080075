package apply

import "testing"

// TestTruncateSQL checks that every relation of a replayed TRUNCATE gets
// its own ONLY, so an inheritance parent listed second does not empty its
// children, and that a table the target has partitioned is truncated with
// its partitions.
func TestTruncateSQL(t *testing.T) {
	plain := &relation{qualified: "public.a"}
	parent := &relation{qualified: "public.b"}
	converted := &relation{qualified: "public.events", partitioned: true}
	for _, tc := range []struct {
		rels   []*relation
		option uint8
		want   string
	}{
		{[]*relation{plain}, 0, "TRUNCATE ONLY public.a"},
		{[]*relation{plain, parent}, 0, "TRUNCATE ONLY public.a, ONLY public.b"},
		{[]*relation{converted, plain}, 2, "TRUNCATE public.events, ONLY public.a RESTART IDENTITY"},
	} {
		if got := truncateSQL(tc.rels, tc.option); got != tc.want {
			t.Errorf("truncateSQL = %q, want %q", got, tc.want)
		}
	}
}
