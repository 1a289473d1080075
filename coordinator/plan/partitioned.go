package plan

import (
	"regexp"
	"strings"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// ReachPartitions rewrites, in the SQL of every unit, each "ALTER TABLE
// ONLY t" of a repartitioned table t (Table.Repartitioned) into "ALTER
// TABLE t". pg_dump writes ONLY in every ALTER TABLE that adds a plain
// table's constraints (PRIMARY KEY, UNIQUE, CHECK, FOREIGN KEY) and in its
// other post-data ALTER TABLEs; on a partitioned table PostgreSQL refuses
// ONLY for a CHECK or a foreign key, and for a PRIMARY KEY or UNIQUE makes
// an invalid index on the parent alone. Without ONLY the constraint is made
// on every partition too. A foreign key of another table that references t
// keeps its ONLY: it names the referencing table. The coordinator calls it
// once the SQL of the units made of dump entries is restored; a plan with
// no repartitioned table is left as it is.
func (p *Plan) ReachPartitions() {
	re := onlyOf(p.Tables)
	if re == nil {
		return
	}
	for i := range p.Units {
		if p.Units[i].SQL != "" {
			p.Units[i].SQL = re.ReplaceAllString(p.Units[i].SQL, "ALTER TABLE $1$2")
		}
	}
}

// onlyOf matches "ALTER TABLE ONLY t" followed by white space, for each
// repartitioned table t, however pg_dump spelled t, or nil when there is no
// such table.
func onlyOf(tables []Table) *regexp.Regexp {
	var names []string
	for _, t := range tables {
		if !t.Repartitioned() {
			continue
		}
		for _, s := range spellings(t.Schema) {
			for _, n := range spellings(t.Name) {
				names = append(names, regexp.QuoteMeta(s+"."+n))
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	return regexp.MustCompile(`ALTER TABLE ONLY (` + strings.Join(names, "|") + `)(\s)`)
}

// plainIdent is a name pg_dump may print without quotes (it quotes it
// anyway when it is a keyword, which the quoted spelling covers).
var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// spellings are the ways pg_dump can print a name: quoted, and bare when
// it needs no quotes.
func spellings(name string) []string {
	out := []string{ident.Quote(name)}
	if plainIdent.MatchString(name) {
		out = append(out, name)
	}
	return out
}
