// Package schema runs pg_dump, pg_restore and pg_dumpall for the
// coordinator: a schema-only dump under the exported snapshot, the pre-data
// restore on the target, the table of contents, and the SQL of chosen
// post-data entries, which become units. It also carries what the schema
// options add around the dump: the roles (pg_dumpall --roles-only), the
// database's settings (pg_db_role_setting), and SQL scripts run on the
// target in one transaction (--after-schema). Connection strings reach the
// tools through the environment, never the command line. It does not plan
// and does not touch the store.
package schema

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// ErrToolMissing means pg_dump, pg_restore or pg_dumpall is not installed.
var ErrToolMissing = errors.New("schema: PostgreSQL client tool not found")

// Tools are the paths of the client programs.
type Tools struct {
	PgDump    string
	PgRestore string
	// PgDumpAll is empty when pg_dumpall is not installed; only --roles
	// needs it, and DumpRoles says so.
	PgDumpAll string
}

// FindTools looks the programs up on PATH.
func FindTools() (Tools, error) {
	var t Tools
	if p, err := exec.LookPath("pg_dumpall"); err == nil {
		t.PgDumpAll = p
	}
	for name, dst := range map[string]*string{"pg_dump": &t.PgDump, "pg_restore": &t.PgRestore} {
		p, err := exec.LookPath(name)
		if err != nil {
			return t, fmt.Errorf("%w: %s is not on PATH (install the PostgreSQL client package, version at least the source's)", ErrToolMissing, name)
		}
		*dst = p
	}
	return t, nil
}

// DumpOptions shape the schema dump.
type DumpOptions struct {
	// Snapshot is the exported snapshot the dump reads under.
	Snapshot string
	// ExcludeSchemas are left out of the dump (pgcaravan's own schema).
	ExcludeSchemas []string
}

// Dump writes a custom-format schema-only dump of src to file.
func (t Tools) Dump(ctx context.Context, src pguri.URI, file string, opts DumpOptions) error {
	args := []string{"--schema-only", "--format=custom", "--file=" + file, "--no-subscriptions"}
	if opts.Snapshot != "" {
		args = append(args, "--snapshot="+opts.Snapshot)
	}
	for _, s := range opts.ExcludeSchemas {
		args = append(args, "--exclude-schema="+s)
	}
	if _, err := run(ctx, t.PgDump, args, src.LibpqEnv()); err != nil {
		return fmt.Errorf("pg_dump of source %s: %w", src, err)
	}
	return nil
}

// RestoreOptions shape what pg_restore writes on the target.
type RestoreOptions struct {
	NoOwner bool
	NoACL   bool
	// NoComments leaves out COMMENT entries (--no-comments).
	NoComments bool
	// Clean drops objects before creating them (--drop-if-exists).
	Clean bool
	// Only, when not nil, restricts RestorePreData to these entries (a
	// filtered clone), through a pg_restore -L list.
	Only []Entry
}

func (o RestoreOptions) args() []string {
	var args []string
	if o.NoOwner {
		args = append(args, "--no-owner")
	}
	if o.NoACL {
		args = append(args, "--no-acl")
	}
	if o.NoComments {
		args = append(args, "--no-comments")
	}
	return args
}

// RestorePreData restores the pre-data section on the target in one
// transaction, stopping at the first error.
func (t Tools) RestorePreData(ctx context.Context, file string, dst pguri.URI, opts RestoreOptions) error {
	args := append([]string{"--section=pre-data", "--exit-on-error", "--single-transaction", "--dbname=" + conninfoDB(dst.Database())}, opts.args()...)
	if opts.Clean {
		args = append(args, "--clean", "--if-exists")
	}
	if opts.Only != nil {
		listFile, cleanup, err := writeList(opts.Only)
		if err != nil {
			return fmt.Errorf("restore pre-data on target %s: %w", dst, err)
		}
		defer cleanup()
		args = append(args, "--use-list="+listFile)
	}
	args = append(args, file)
	if _, err := run(ctx, t.PgRestore, args, dst.LibpqEnv()); err != nil {
		return fmt.Errorf("restore pre-data on target %s: %w%s", dst, err, hint(err))
	}
	return nil
}

// writeList writes entries as a pg_restore -L list in a temporary file.
func writeList(entries []Entry) (string, func(), error) {
	f, err := os.CreateTemp("", "pgcaravan-pre-data-*.list")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.Remove(f.Name()) }
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Line + "\n")
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		cleanup()
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}

// conninfoDB is a conninfo string naming only the database, so a name with
// "=" or spaces is not taken for a connection string; the rest comes from
// the environment.
func conninfoDB(name string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "dbname='" + r.Replace(name) + "'"
}

// hint says what to do about the pg_restore errors people meet most.
func hint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "role") && strings.Contains(msg, "does not exist"):
		return " (create the missing role on the target, pass --roles to copy the source's roles first, or pass --no-owner and --no-acl)"
	case strings.Contains(msg, "already exists"):
		return " (the target is not empty: drop the objects, or pass --drop-if-exists)"
	case strings.Contains(msg, "extension") || strings.Contains(msg, "could not open extension control file"):
		return " (install the extension's package on the target server, or pass --skip-extensions if the target has it already)"
	}
	return ""
}

// Entry is one line of the dump's table of contents.
type Entry struct {
	DumpID     int
	CatalogOID uint32
	ObjOID     uint32
	// Desc is the entry type: TABLE, INDEX, FK CONSTRAINT, ...
	Desc   string
	Schema string
	// Tag is the object name; for constraints and triggers "table name".
	Tag   string
	Owner string
	// Names is the "schema tag owner" part of the line as printed. Names
	// with spaces make its split ambiguous; see plan.Entry.Names.
	Names string
	// Line is the entry as pg_restore -l printed it, for a -L list.
	Line string
	// Deps are the dump ids of the entries this one depends on, as pg_dump
	// recorded them (pg_restore --list --verbose).
	Deps []int `json:"Deps,omitempty"`
}

// Section is a part of the dump.
type Section string

const (
	PreData  Section = "pre-data"
	PostData Section = "post-data"
)

// List returns the entries of one section of the dump, in restore order.
func (t Tools) List(ctx context.Context, file string, section Section) ([]Entry, error) {
	out, err := run(ctx, t.PgRestore, []string{"--list", "--section=" + string(section), file}, nil)
	if err != nil {
		return nil, fmt.Errorf("list %s of %s: %w", section, file, err)
	}
	entries, err := parseList(out)
	if err != nil {
		return nil, err
	}
	// With --verbose, pg_restore prints every entry's dependencies, but
	// also every entry whatever --section says: take the dependencies from
	// there and the section's entries from the plain list.
	out, err = run(ctx, t.PgRestore, []string{"--list", "--verbose", file}, nil)
	if err != nil {
		return nil, fmt.Errorf("list dependencies of %s: %w", file, err)
	}
	all, err := parseList(out)
	if err != nil {
		return nil, err
	}
	deps := make(map[int][]int, len(all))
	for _, e := range all {
		deps[e.DumpID] = e.Deps
	}
	for i := range entries {
		entries[i].Deps = deps[entries[i].DumpID]
	}
	return entries, nil
}

// descs are the entry types pg_dump writes; an entry type has spaces, so the
// line is split by matching the longest known one.
var descs = []string{
	"FK CONSTRAINT", "CHECK CONSTRAINT", "INDEX ATTACH", "TABLE ATTACH", "MATERIALIZED VIEW DATA",
	"MATERIALIZED VIEW", "DEFAULT ACL", "EVENT TRIGGER", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA",
	"ROW SECURITY", "SEQUENCE OWNED BY", "SEQUENCE SET", "TABLE DATA", "SECURITY LABEL", "FOREIGN TABLE",
	"SERVER", "USER MAPPING", "FOREIGN DATA WRAPPER", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
	"TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "ACCESS METHOD", "OPERATOR CLASS", "OPERATOR FAMILY",
	"LARGE OBJECT", "BLOB METADATA", "BLOB", "BLOBS", "CONSTRAINT", "INDEX", "TRIGGER", "RULE", "POLICY", "COMMENT",
	"ACL", "STATISTICS", "PUBLICATION", "SUBSCRIPTION", "TABLE", "VIEW", "SEQUENCE", "SCHEMA",
	"EXTENSION", "FUNCTION", "PROCEDURE", "AGGREGATE", "TYPE", "DOMAIN", "DEFAULT", "OPERATOR", "CAST",
	"COLLATION", "CONVERSION", "LANGUAGE", "PROCEDURAL LANGUAGE", "SHELL TYPE", "TRANSFORM", "ENCODING",
	"STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES",
}

var lineHead = regexp.MustCompile(`^(\d+); (\d+) (\d+) (.*)$`)

func parseList(out []byte) ([]Entry, error) {
	var entries []Entry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if deps, ok := strings.CutPrefix(line, ";\tdepends on:"); ok && len(entries) > 0 {
			last := &entries[len(entries)-1]
			for _, f := range strings.Fields(deps) {
				if id, err := strconv.Atoi(f); err == nil {
					last.Deps = append(last.Deps, id)
				}
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		m := lineHead.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("schema: unexpected pg_restore --list line %q", line)
		}
		id, _ := strconv.Atoi(m[1])
		catOID, _ := strconv.ParseUint(m[2], 10, 32)
		objOID, _ := strconv.ParseUint(m[3], 10, 32)
		e := Entry{DumpID: id, CatalogOID: uint32(catOID), ObjOID: uint32(objOID), Line: line}
		rest := m[4]
		best := ""
		for _, d := range descs {
			if strings.HasPrefix(rest, d+" ") && len(d) > len(best) {
				best = d
			}
		}
		if best == "" {
			return nil, fmt.Errorf("schema: unknown entry type in pg_restore --list line %q", line)
		}
		e.Desc = best
		rest = strings.TrimPrefix(rest, best+" ")
		e.Names = rest
		// rest is "schema tag owner"; schema is "-" when none. Names with
		// spaces make the split ambiguous, so the catalog resolves objects by
		// OID wherever it can; schema and tag are best effort.
		schema, rest, _ := strings.Cut(rest, " ")
		if schema != "-" {
			e.Schema = schema
		}
		if i := strings.LastIndex(rest, " "); i >= 0 {
			e.Tag, e.Owner = rest[:i], rest[i+1:]
		} else {
			e.Tag = rest
		}
		entries = append(entries, e)
	}
	return entries, sc.Err()
}

// EntrySQL returns the SQL pg_restore writes for each group of entries, in
// the order given, with options applied. Groups are restored in parallel.
func (t Tools) EntrySQL(ctx context.Context, file string, entries map[int]Entry, groups [][]int, opts RestoreOptions) ([]string, error) {
	dir, err := os.MkdirTemp("", "pgcaravan-toc-")
	if err != nil {
		return nil, fmt.Errorf("entry sql: %w", err)
	}
	defer os.RemoveAll(dir)
	out := make([]string, len(groups))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, ids := range groups {
		g.Go(func() error {
			var list strings.Builder
			for _, id := range ids {
				e, ok := entries[id]
				if !ok {
					return fmt.Errorf("entry sql: dump id %d not in the table of contents", id)
				}
				list.WriteString(e.Line + "\n")
			}
			listFile := filepath.Join(dir, strconv.Itoa(i)+".list")
			if err := os.WriteFile(listFile, []byte(list.String()), 0o600); err != nil {
				return err
			}
			args := append([]string{"--file=-", "--use-list=" + listFile}, opts.args()...)
			sql, err := run(ctx, t.PgRestore, append(args, file), nil)
			if err != nil {
				return fmt.Errorf("entry sql for dump ids %v: %w", ids, err)
			}
			out[i] = StripMetaCommands(string(sql))
			return nil
		})
	}
	return out, g.Wait()
}

// StripMetaCommands removes the psql meta-commands (\restrict, \unrestrict)
// that pg_dump 15.14 and later put in plain-text output; pgcaravan runs the
// SQL through the protocol, not psql.
func StripMetaCommands(sql string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(sql, "\n") {
		if strings.HasPrefix(line, `\restrict `) || strings.HasPrefix(line, `\unrestrict `) {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// run executes a client program and returns its stdout; the error carries
// its stderr. env, when not nil, replaces the PG* part of the environment.
func run(ctx context.Context, bin string, args []string, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 4000 {
			msg = msg[:4000] + " …"
		}
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s: %s", filepath.Base(bin), msg)
	}
	return stdout.Bytes(), nil
}

// childEnv is the process environment without PG* variables, plus env.
func childEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}
