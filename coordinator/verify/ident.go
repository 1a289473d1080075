package verify

import "strings"

// displayName returns a dotted name for reports, quoting only the parts
// that need it. It is built from the raw names, never from server output,
// so both sides name an object the same way whatever their versions.
func displayName(parts ...string) string {
	q := make([]string, len(parts))
	for i, p := range parts {
		q[i] = displayIdent(p)
	}
	return strings.Join(q, ".")
}

// displayIdent quotes name unless it is a plain lower-case identifier.
// Keywords are not quoted: the result is for people, not for SQL.
func displayIdent(name string) string {
	plain := name != ""
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case (r >= '0' && r <= '9') || r == '$':
			plain = plain && i > 0
		default:
			plain = false
		}
	}
	if plain {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
