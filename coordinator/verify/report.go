package verify

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Print writes the report for people: a line per table (rows on each side,
// checksum OK or DIFF), a line per kind of check, every problem in full,
// and a verdict.
func (r *Report) Print(w io.Writer) {
	// 1. Tables: every table that was counted, and every table that exists
	// on one side only.
	type tableLine struct {
		srcRows, tgtRows, checksum string
	}
	var tableNames []string
	lines := make(map[string]*tableLine)
	line := func(name string) *tableLine {
		l, ok := lines[name]
		if !ok {
			l = &tableLine{srcRows: "-", tgtRows: "-", checksum: "-"}
			lines[name] = l
			tableNames = append(tableNames, name)
		}
		return l
	}
	for _, c := range r.Checks {
		switch c.Kind {
		case "table":
			if c.Source == missing || c.Target == missing {
				l := line(c.Object)
				l.checksum = "MISSING ON TARGET"
				if c.Source == missing {
					l.checksum = "EXTRA ON TARGET"
				}
			}
		case "rows":
			l := line(c.Object)
			l.srcRows, l.tgtRows = c.Source, c.Target
		case "checksum":
			l := line(c.Object)
			l.checksum = "OK"
			if !c.OK {
				l.checksum = "DIFF"
			}
		case "matview":
			// An unpopulated materialized view cannot be read, so it has
			// no rows check; say why it has no numbers.
			if !c.OK && c.Source != missing && c.Target != missing {
				line(c.Object).checksum = "NOT COMPARED (not populated)"
			}
		}
	}
	slices.Sort(tableNames)
	if len(tableNames) > 0 {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tSOURCE ROWS\tTARGET ROWS\tCHECKSUM")
		for _, n := range tableNames {
			l := lines[n]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, l.srcRows, l.tgtRows, l.checksum)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}

	// 2. One line per kind, in the order the kinds were checked.
	type tally struct{ checked, failed int }
	var kinds []string
	tallies := make(map[string]*tally)
	for _, c := range r.Checks {
		t, ok := tallies[c.Kind]
		if !ok {
			t = &tally{}
			tallies[c.Kind] = t
			kinds = append(kinds, c.Kind)
		}
		t.checked++
		if !c.OK {
			t.failed++
		}
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tCHECKED\tDIFFER\tRESULT")
	for _, k := range kinds {
		t := tallies[k]
		verdict := "OK"
		if t.failed > 0 {
			verdict = "DIFF"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", k, t.checked, t.failed, verdict)
	}
	_ = tw.Flush()

	r.printRanges(w)

	// 3. Every problem in full, the differing keys, then the verdict.
	problems := r.Problems()
	if len(problems) > 0 {
		fmt.Fprintf(w, "\nPROBLEMS (%d)\n", len(problems))
		for _, p := range problems {
			fmt.Fprintf(w, "  %s %s\n", p.Kind, p.Object)
			fmt.Fprintf(w, "    source: %s\n", indent(p.Source))
			fmt.Fprintf(w, "    target: %s\n", indent(p.Target))
		}
		r.printRows(w)
		fmt.Fprintf(w, "\nverification FAILED: %d of %d checks differ\n", len(problems), len(r.Checks))
		return
	}
	fmt.Fprintf(w, "\nverification OK: %d checks, no differences\n", len(r.Checks))
}

// indent lines up the continuation lines of a multi-line value (view and
// function definitions) under its first line.
func indent(s string) string {
	return strings.ReplaceAll(s, "\n", "\n            ")
}

// printRanges writes one line of totals over the ranges tables were cut
// into, when rows were compared.
func (r *Report) printRanges(w io.Writer) {
	if len(r.Tables) == 0 {
		return
	}
	var ranges, compared, resumed, differ, whole int
	for _, t := range r.Tables {
		ranges += t.Ranges
		compared += t.Compared
		resumed += t.Resumed
		differ += t.Differ
		if t.Key == "" {
			whole++
		}
	}
	fmt.Fprintf(w, "\nranges: %d in %d tables (%d without an integer key, compared whole): %d compared, %d equal in an earlier run (skipped), %d differ\n",
		ranges, len(r.Tables), whole, compared, resumed, differ)
}

// printRows writes, for each table with differing ranges, the keys that
// differ and the ranges that were not searched.
func (r *Report) printRows(w io.Writer) {
	var header bool
	for _, t := range r.Tables {
		if t.Differ == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nDIFFERING ROWS")
			header = true
		}
		if t.Key == "" {
			fmt.Fprintf(w, "  %s: no integer key; the table differs as a whole\n", t.Table)
			continue
		}
		fmt.Fprintf(w, "  %s, by key %s:\n", t.Table, displayIdent(t.Key))
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		for _, d := range t.Rows {
			fmt.Fprintf(tw, "    %s\t%s = %d\n", d.Change, displayIdent(t.Key), d.Key)
		}
		_ = tw.Flush()
		if t.MoreRows > 0 {
			fmt.Fprintf(w, "    and %d more\n", t.MoreRows)
		}
		for _, u := range t.Unsearched {
			fmt.Fprintf(w, "    and range %s: %d source rows, %d target rows, not searched\n", u.Range, u.SourceRows, u.TargetRows)
		}
	}
}
