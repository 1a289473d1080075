package filter

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Parse reads a filter file in pgcopydb's INI format: [section] lines, then
// one entry a line; blank lines and lines starting with # or ; are
// ignored, and so is a # comment after an entry. Table and index entries
// are schema.name, schema-only and extension entries a single name; either
// part may be double-quoted with PostgreSQL's rules ("My Schema"."Odd.Name",
// "a""b"). Unquoted names are taken as written, without case folding, as
// pgcopydb does. A "= value" after an entry is ignored (pgcopydb reads only
// the keys). name is the file's name, for errors.
func Parse(name string, data []byte) (*Filter, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("filters %s: not UTF-8 text", name)
	}
	f := &Filter{}
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if i == 0 {
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 || strings.TrimSpace(stripComment(line[end+1:])) != "" {
				return nil, fmt.Errorf("filters %s line %d: %q: want a section header like [exclude-table]", name, lineNo, line)
			}
			section = strings.ToLower(strings.TrimSpace(line[1:end]))
			if !isSection(section) {
				return nil, fmt.Errorf("filters %s line %d: unknown section [%s]: want one of [%s]", name, lineNo, section, strings.Join(Sections, "], ["))
			}
			continue
		}
		entry := strings.TrimSpace(stripValue(stripComment(line)))
		if section == "" {
			return nil, fmt.Errorf("filters %s line %d: %q is not in a section: put it under a header like [exclude-table]", name, lineNo, entry)
		}
		if err := f.add(section, entry); err != nil {
			return nil, fmt.Errorf("filters %s line %d: [%s] %q: %w", name, lineNo, section, entry, err)
		}
	}
	return f, nil
}

func isSection(s string) bool {
	for _, v := range Sections {
		if v == s {
			return true
		}
	}
	return false
}

// add parses one entry of section into f.
func (f *Filter) add(section, entry string) error {
	switch section {
	case SectionIncludeOnlySchema, SectionExcludeSchema, SectionExcludeExtension:
		id, err := ParseIdent(entry)
		if err != nil {
			return err
		}
		switch section {
		case SectionIncludeOnlySchema:
			f.IncludeOnlySchemas = appendNew(f.IncludeOnlySchemas, id)
		case SectionExcludeSchema:
			f.ExcludeSchemas = appendNew(f.ExcludeSchemas, id)
		default:
			f.ExcludeExtensions = appendNew(f.ExcludeExtensions, id)
		}
	default:
		n, err := ParseName(entry)
		if err != nil {
			return err
		}
		switch section {
		case SectionIncludeOnlyTable:
			f.IncludeOnlyTables = appendNew(f.IncludeOnlyTables, n)
		case SectionExcludeTable:
			f.ExcludeTables = appendNew(f.ExcludeTables, n)
		case SectionExcludeIndex:
			f.ExcludeIndexes = appendNew(f.ExcludeIndexes, n)
		case SectionExcludeTableData:
			f.ExcludeTableData = appendNew(f.ExcludeTableData, n)
		}
	}
	return nil
}

// AddFlag adds the value of a command-line flag to section, with the same
// syntax as a file entry.
func (f *Filter) AddFlag(section, value string) error {
	if !isSection(section) {
		return fmt.Errorf("unknown filter section %q", section)
	}
	return f.add(section, strings.TrimSpace(value))
}

// ParseName parses schema.name, either part optionally double-quoted.
func ParseName(s string) (Name, error) {
	parts, err := splitIdents(s)
	if err != nil {
		return Name{}, err
	}
	if len(parts) != 2 {
		return Name{}, errors.New(`want schema.name (quote a name that has a dot: "my.schema"."my.table")`)
	}
	return Name{Schema: parts[0], Name: parts[1]}, nil
}

// ParseIdent parses a single, optionally double-quoted, identifier.
func ParseIdent(s string) (string, error) {
	parts, err := splitIdents(s)
	if err != nil {
		return "", err
	}
	if len(parts) != 1 {
		return "", errors.New(`want a single name (quote a name that has a dot: "my.schema")`)
	}
	return parts[0], nil
}

// splitIdents splits a dotted list of identifiers, unquoting quoted ones.
func splitIdents(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("empty name")
	}
	var parts []string
	i := 0
	for {
		var part string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, errors.New("unterminated quoted name: close it with \"")
			}
			part = b.String()
		} else {
			start := i
			for i < len(s) && s[i] != '.' {
				if s[i] == '"' {
					return nil, errors.New(`a quote inside an unquoted name: quote the whole name ("a""b")`)
				}
				if s[i] == ' ' || s[i] == '\t' {
					return nil, errors.New(`a space in an unquoted name: quote it ("my table")`)
				}
				i++
			}
			part = s[start:i]
		}
		if part == "" {
			return nil, errors.New("empty name part")
		}
		parts = append(parts, part)
		if i == len(s) {
			return parts, nil
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("unexpected %q after a quoted name", s[i:])
		}
		i++
		if i == len(s) {
			return nil, errors.New("empty name after the dot")
		}
	}
}

// stripComment cuts a # comment that starts outside double quotes.
func stripComment(line string) string {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '"':
			quoted = !quoted
		case '#':
			if !quoted {
				return line[:i]
			}
		}
	}
	return line
}

// stripValue cuts an INI "= value" that starts outside double quotes.
func stripValue(line string) string {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '"':
			quoted = !quoted
		case '=':
			if !quoted {
				return line[:i]
			}
		}
	}
	return line
}
