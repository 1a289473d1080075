// Package ident quotes PostgreSQL identifiers and literals. Every name that
// pgcaravan puts into SQL goes through this package, so names with quotes,
// dots, spaces, upper case or non-ASCII characters are always safe. It must
// not import any other pgcaravan package.
package ident

import "strings"

// Quote returns name as a quoted identifier: "na""me".
func Quote(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// Qualified returns schema.name with both parts quoted.
func Qualified(schema, name string) string {
	return Quote(schema) + "." + Quote(name)
}

// QuoteList quotes each name and joins them with ", ".
func QuoteList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = Quote(n)
	}
	return strings.Join(quoted, ", ")
}

// Literal returns s as a standard-conforming string literal: 'it”s'.
// It is for values that cannot be bind parameters (SET TRANSACTION SNAPSHOT,
// utility statements).
func Literal(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
