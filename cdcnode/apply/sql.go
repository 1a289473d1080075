package apply

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
)

// Values in pgoutput tuples: 'n' NULL, 'u' unchanged TOAST (not sent), 't'
// text.
const (
	valNull      = 'n'
	valUnchanged = 'u'
)

// insertSQL is a multi-row INSERT of rows rows.
func insertSQL(r *relation, rows int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(r.qualified)
	b.WriteString(" (")
	for i, c := range r.columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.quote)
	}
	b.WriteString(")")
	if r.anyAlways {
		b.WriteString(" OVERRIDING SYSTEM VALUE")
	}
	b.WriteString(" VALUES ")
	n := 1
	for row := 0; row < rows; row++ {
		if row > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i := range r.columns {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			n++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// match is how a row is found: by its key columns, or (REPLICA IDENTITY
// FULL) by every old column, one row only, since duplicates may exist.
type match struct {
	cols   []int  // column indexes compared
	isNull []bool // per cols: compared with IS NULL (no parameter)
	full   bool
}

// matchFrom builds the match of a change from its old tuple (or, without
// one, the new tuple's key columns).
func matchFrom(r *relation, old *pglogrepl.TupleData, full bool) (match, [][]byte, error) {
	var m match
	var params [][]byte
	m.full = full
	for i, c := range r.columns {
		if !full && !c.key {
			continue
		}
		if old == nil || i >= len(old.Columns) {
			return m, nil, fmt.Errorf("change to %s carries no value for key column %s", r.qualified, c.name)
		}
		v := old.Columns[i]
		switch v.DataType {
		case valUnchanged:
			continue // an unchanged TOAST value of a FULL identity: not compared
		case valNull:
			m.cols = append(m.cols, i)
			m.isNull = append(m.isNull, true)
		default:
			m.cols = append(m.cols, i)
			m.isNull = append(m.isNull, false)
			params = append(params, v.Data)
		}
	}
	if len(m.cols) == 0 {
		return m, nil, fmt.Errorf("change to %s has no replica identity to find the row by", r.qualified)
	}
	return m, params, nil
}

// where writes the WHERE clause, numbering parameters from first.
func (m match) where(r *relation, first int) string {
	var conds []string
	n := first
	for j, i := range m.cols {
		c := r.columns[i]
		switch {
		case m.isNull[j]:
			conds = append(conds, c.quote+" IS NULL")
		case c.noEquality:
			conds = append(conds, fmt.Sprintf("%s::text = ($%d::%s)::text", c.quote, n, c.typ))
			n++
		default:
			conds = append(conds, fmt.Sprintf("%s = $%d", c.quote, n))
			n++
		}
	}
	w := strings.Join(conds, " AND ")
	if m.full {
		// Without a key, rows can be identical: change exactly one.
		return fmt.Sprintf(" WHERE ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", r.qualified, w)
	}
	return " WHERE " + w
}

// updateSQL sets the columns in set (indexes) and finds the row by m.
func updateSQL(r *relation, set []int, m match) string {
	var b strings.Builder
	b.WriteString("UPDATE ")
	b.WriteString(r.qualified)
	b.WriteString(" SET ")
	for j, i := range set {
		if j > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s = $%d", r.columns[i].quote, j+1)
	}
	b.WriteString(m.where(r, len(set)+1))
	return b.String()
}

// updateManySQL updates rows rows of r, each found by its key (the key
// columns, in m.cols) and given the columns in set, from one VALUES list:
// (set values..., key values...) per row, each cast to its column's type.
func updateManySQL(r *relation, set []int, m match, rows int) string {
	var b strings.Builder
	b.WriteString("UPDATE ")
	b.WriteString(r.qualified)
	b.WriteString(" AS t SET ")
	for j, i := range set {
		if j > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s = v.s%d", r.columns[i].quote, j)
	}
	b.WriteString(" FROM (VALUES ")
	n := 1
	for row := range rows {
		if row > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j, i := range append(slices.Clone(set), m.cols...) {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d::%s", n, r.columns[i].typ)
			n++
		}
		b.WriteByte(')')
	}
	b.WriteString(") AS v(")
	for j := range set {
		fmt.Fprintf(&b, "s%d, ", j)
	}
	for j := range m.cols {
		if j > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "k%d", j)
	}
	b.WriteString(") WHERE ")
	for j, i := range m.cols {
		if j > 0 {
			b.WriteString(" AND ")
		}
		fmt.Fprintf(&b, "t.%s = v.k%d", r.columns[i].quote, j)
	}
	return b.String()
}

func deleteSQL(r *relation, m match) string {
	return "DELETE FROM " + r.qualified + m.where(r, 1)
}

// truncateSQL replays a TRUNCATE of the relations; option bit 2 is
// RESTART IDENTITY (bit 1, CASCADE, needs nothing: pgoutput lists every
// relation the cascade reached). ONLY is written before each name, since
// pgoutput lists inheritance children it truncated on their own, but not
// before a table the target has partitioned, whose rows are in its
// partitions.
func truncateSQL(rels []*relation, option uint8) string {
	names := make([]string, len(rels))
	for i, r := range rels {
		names[i] = "ONLY " + r.qualified
		if r.partitioned {
			names[i] = r.qualified
		}
	}
	sql := "TRUNCATE " + strings.Join(names, ", ")
	if option&2 != 0 {
		sql += " RESTART IDENTITY"
	}
	return sql
}
