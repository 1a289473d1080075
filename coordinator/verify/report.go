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

	// 3. Every problem in full, then the verdict.
	problems := r.Problems()
	if len(problems) > 0 {
		fmt.Fprintf(w, "\nPROBLEMS (%d)\n", len(problems))
		for _, p := range problems {
			fmt.Fprintf(w, "  %s %s\n", p.Kind, p.Object)
			fmt.Fprintf(w, "    source: %s\n", indent(p.Source))
			fmt.Fprintf(w, "    target: %s\n", indent(p.Target))
		}
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
