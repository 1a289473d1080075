package schema

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Statement is one SQL statement of a script and the line it starts on.
type Statement struct {
	Line int
	SQL  string
}

// Script is SQL that pgcaravan runs on the target in one transaction: an
// --after-schema file, or the roles of pg_dumpall --roles-only.
type Script struct {
	// Name says where the SQL came from, in errors: a file name, or the
	// tool that printed it.
	Name       string
	Statements []Statement
}

// ParseScript cuts text into statements the way psql does: at semicolons
// outside quotes, dollar quotes, comments and parentheses. psql
// meta-commands (\i, \set, ...) are refused, and so are BEGIN, COMMIT and
// their kin: the whole script already runs in one transaction.
func ParseScript(name, text string) (Script, error) {
	s := Script{Name: name}
	var cur strings.Builder
	start, line, depth := 0, 1, 0
	empty, atLineStart := true, true
	// write adds to the statement; comments before one are dropped, so a
	// statement's line is that of its first word.
	write := func(part string, comment bool) {
		if empty && comment {
			return
		}
		if empty && strings.TrimSpace(part) == "" {
			return
		}
		if empty {
			start, empty = line, false
		}
		cur.WriteString(part)
	}
	flush := func() error {
		sql := strings.TrimSpace(cur.String())
		cur.Reset()
		empty = true
		if sql == "" {
			return nil
		}
		if w := transactionControl(sql); w != "" {
			return fmt.Errorf("%s: line %d: %s: the file already runs in one transaction; remove BEGIN, COMMIT and the like", name, start, w)
		}
		s.Statements = append(s.Statements, Statement{Line: start, SQL: sql})
		return nil
	}
	for i := 0; i < len(text); {
		c := text[i]
		n := 1
		switch {
		case c == '\\' && atLineStart:
			end := strings.IndexAny(text[i:], " \t\r\n")
			if end < 0 {
				end = len(text) - i
			}
			return s, fmt.Errorf("%s: line %d: psql meta-command %s is not supported: the file is run as SQL, not by psql", name, line, text[i:i+end])
		case strings.HasPrefix(text[i:], "--"):
			n = strings.IndexByte(text[i:], '\n')
			if n < 0 {
				n = len(text) - i
			}
			write(text[i:i+n], true)
		case strings.HasPrefix(text[i:], "/*"):
			var ok bool
			if n, ok = blockComment(text[i:]); !ok {
				return s, fmt.Errorf("%s: line %d: unterminated /* comment", name, line)
			}
			write(text[i:i+n], true)
		case c == '\'' || c == '"':
			escapes := c == '\'' && i > 0 && (text[i-1] == 'E' || text[i-1] == 'e') && (i < 2 || !identChar(text[i-2]))
			var ok bool
			if n, ok = quoted(text[i:], c, escapes); !ok {
				return s, fmt.Errorf("%s: line %d: unterminated %c quote", name, line, c)
			}
			write(text[i:i+n], false)
		case c == '$' && (i == 0 || !identChar(text[i-1])) && dollarTagRE.MatchString(text[i:]):
			tag := dollarTagRE.FindString(text[i:])
			end := strings.Index(text[i+len(tag):], tag)
			if end < 0 {
				return s, fmt.Errorf("%s: line %d: unterminated %s quote", name, line, tag)
			}
			n = len(tag) + end + len(tag)
			write(text[i:i+n], false)
		case c == ';' && depth == 0:
			if err := flush(); err != nil {
				return s, err
			}
		default:
			if c == '(' {
				depth++
			} else if c == ')' && depth > 0 {
				depth--
			}
			write(text[i:i+1], false)
		}
		if c == '\n' {
			atLineStart = true
		} else if c != ' ' && c != '\t' && c != '\r' {
			atLineStart = false
		}
		line += strings.Count(text[i:i+n], "\n")
		i += n
	}
	if err := flush(); err != nil {
		return s, err
	}
	return s, nil
}

func identChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// quoted is the length of the quoted string or identifier at the start of
// s; a doubled quote stands for the quote, and escapes says backslashes
// escape too (an E-string).
func quoted(s string, q byte, escapes bool) (int, bool) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if escapes {
				i++
			}
		case q:
			if i+1 < len(s) && s[i+1] == q {
				i++
				continue
			}
			return i + 1, true
		}
	}
	return 0, false
}

// blockComment is the length of the (nesting) /* comment at the start of s.
func blockComment(s string) (int, bool) {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case strings.HasPrefix(s[i:], "/*"):
			depth++
			i++
		case strings.HasPrefix(s[i:], "*/"):
			depth--
			i++
			if depth == 0 {
				return i + 1, true
			}
		}
	}
	return 0, false
}

var dollarTagRE = regexp.MustCompile(`^\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$`)

var txControlRE = regexp.MustCompile(`(?i)^(BEGIN|COMMIT|ROLLBACK|ABORT|END|START\s+TRANSACTION|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION|COMMIT\s+PREPARED|ROLLBACK\s+PREPARED)\b`)

// transactionControl is the transaction-control command sql starts with,
// or "". A BEGIN ... END block inside a function body is in a dollar quote,
// so it never reaches here.
func transactionControl(sql string) string {
	m := txControlRE.FindString(sql)
	return strings.ToUpper(strings.Join(strings.Fields(m), " "))
}

// Run runs the script on conn in one transaction, statement by statement
// over the simple protocol, as psql would. On an error the transaction is
// rolled back and the error names the script, the statement and its line.
func (s Script) Run(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", s.Name, err)
	}
	defer tx.Rollback(context.Background())
	for i, st := range s.Statements {
		if _, err := tx.Exec(ctx, st.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("%s: statement %d (line %d) failed, nothing of the file was applied: %s\n  %s",
				s.Name, i+1, st.Line, describe(err), st.Excerpt())
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%s: commit: %w", s.Name, err)
	}
	return nil
}

// describe is a server error with its detail and hint.
func describe(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err.Error()
	}
	msg := pgErr.Error()
	if pgErr.Detail != "" {
		msg += "; " + pgErr.Detail
	}
	if pgErr.Hint != "" {
		msg += "; hint: " + pgErr.Hint
	}
	return msg
}

var passwordRE = regexp.MustCompile(`(?i)(PASSWORD\s+)'(?:[^']|'')*'`)

// Excerpt is the statement on one line, shortened, for errors, with any
// password literal replaced: passwords never appear in errors.
func (st Statement) Excerpt() string {
	s := strings.Join(strings.Fields(st.SQL), " ")
	s = passwordRE.ReplaceAllString(s, "${1}'xxxxx'")
	if len(s) > 300 {
		s = s[:300] + " …"
	}
	return s
}
