package catalog_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// dumpPostData takes a schema-only custom-format dump of db with pg_dump,
// reaching the server through the environment as the coordinator does, and
// returns its post-data entries as the coordinator hands them to Annotate.
func dumpPostData(t *testing.T, c *pgtest.Cluster, db string) []plan.Entry {
	t.Helper()
	ctx := t.Context()
	tools, err := schema.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "schema.dump")
	cmd := exec.CommandContext(ctx, tools.PgDump, "--schema-only", "-Fc", "--file="+file)
	cmd.Env = []string{"PGHOST=127.0.0.1", "PGPORT=" + strconv.Itoa(c.Port()), "PGUSER=postgres",
		"PGDATABASE=" + db, "PGSSLMODE=disable"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pg_dump: %v: %s", err, stderr.String())
	}
	list, err := tools.List(ctx, file, schema.PostData)
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]plan.Entry, len(list))
	for i, e := range list {
		entries[i] = plan.Entry{DumpID: e.DumpID, Desc: e.Desc, Schema: e.Schema, Tag: e.Tag, ObjOID: e.ObjOID}
	}
	return entries
}

// TestAnnotatePagila annotates the post-data of pagila, whose payment table
// is partitioned with a primary key that pg_dump attaches partition by
// partition.
func TestAnnotatePagila(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	pgtest.LoadPagila(t, c, "pagila")
	entries := dumpPostData(t, c, "pagila")
	tx := snapshotTx(t, c.URI("pagila"))
	ctx := t.Context()
	if err := catalog.Annotate(ctx, tx, entries); err != nil {
		t.Fatalf("Annotate: %v", err)
	}
	tables, err := catalog.ReadTables(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	relkind := map[uint32]string{}
	for _, tb := range tables {
		relkind[tb.OID] = tb.RelKind
	}
	payment := oidOf(t, tx, "public.payment")

	// The child indexes pg_inherits says are attached to a partitioned index.
	rows, err := tx.Query(ctx, `SELECT h.inhrelid, h.inhparent FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid WHERE c.relkind = 'i'`)
	if err != nil {
		t.Fatal(err)
	}
	attached := map[uint32]uint32{}
	var child, parent uint32
	for rows.Next() {
		if err := rows.Scan(&child, &parent); err != nil {
			t.Fatal(err)
		}
		attached[child] = parent
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	count := map[string]int{}
	for _, e := range entries {
		count[e.Desc]++
		switch e.Desc {
		case "INDEX":
			if e.IndexOID == 0 || e.IndexOID != e.ObjOID || e.TableOID == 0 {
				t.Errorf("INDEX %s: IndexOID %d (ObjOID %d), TableOID %d; want both set", e.Tag, e.IndexOID, e.ObjOID, e.TableOID)
			}
		case "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT":
			if e.ConType == "" || e.ConName == "" || e.TableOID == 0 {
				t.Errorf("%s %s: ConType %q, ConName %q, TableOID %d; want all set", e.Desc, e.Tag, e.ConType, e.ConName, e.TableOID)
			}
			if !strings.HasSuffix(e.Tag, " "+e.ConName) {
				t.Errorf("%s %s: ConName %q is not the constraint of the tag", e.Desc, e.Tag, e.ConName)
			}
			if e.ConType == "p" && relkind[e.TableOID] == "r" {
				if !strings.HasPrefix(e.IndexDef, "CREATE UNIQUE INDEX ") || e.IndexOID == 0 {
					t.Errorf("primary key %s on a plain table: IndexDef %q, IndexOID %d", e.Tag, e.IndexDef, e.IndexOID)
				}
			}
			if e.Desc == "FK CONSTRAINT" && (e.ConType != "f" || e.RefTableOID == 0) {
				t.Errorf("FK CONSTRAINT %s: ConType %q, RefTableOID %d", e.Tag, e.ConType, e.RefTableOID)
			}
			if e.Desc != "FK CONSTRAINT" && e.RefTableOID != 0 {
				t.Errorf("%s %s has RefTableOID %d", e.Desc, e.Tag, e.RefTableOID)
			}
		case "INDEX ATTACH":
			if e.IndexOID == 0 || e.ParentIndexOID == 0 {
				t.Errorf("INDEX ATTACH %s: IndexOID %d, ParentIndexOID %d; want both", e.Tag, e.IndexOID, e.ParentIndexOID)
			}
			if attached[e.IndexOID] != e.ParentIndexOID {
				t.Errorf("INDEX ATTACH %s: parent index %d, pg_inherits says %d", e.Tag, e.ParentIndexOID, attached[e.IndexOID])
			}
			if e.TableOID != payment {
				t.Errorf("INDEX ATTACH %s: TableOID %d, want payment's %d", e.Tag, e.TableOID, payment)
			}
		case "TRIGGER":
			if e.TableOID == 0 {
				t.Errorf("TRIGGER %s has no TableOID", e.Tag)
			}
		}
	}
	if count["INDEX ATTACH"] != len(attached) || len(attached) == 0 {
		t.Errorf("%d INDEX ATTACH entries, pg_inherits has %d attached indexes", count["INDEX ATTACH"], len(attached))
	}
	for _, desc := range []string{"INDEX", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER"} {
		if count[desc] == 0 {
			t.Errorf("pagila's post-data has no %s entry: %v", desc, count)
		}
	}

	// The partitioned table's own primary key is a constraint on payment,
	// which plan builds as pg_dump wrote it.
	var found bool
	for _, e := range entries {
		if e.Desc == "CONSTRAINT" && e.TableOID == payment {
			found = true
			if e.ConType != "p" || e.ConName != "payment_pkey" {
				t.Errorf("constraint on payment: %+v, want primary key payment_pkey", e)
			}
		}
	}
	if !found {
		t.Errorf("no CONSTRAINT entry on payment")
	}
}

// TestAnnotateQuotedNames annotates entries on objects whose names need
// quoting, found by OID; and deferrable constraints.
func TestAnnotateQuotedNames(t *testing.T) {
	c := pgtest.Start(t, pgtest.Options{})
	ctx := t.Context()
	if err := c.CreateDatabase(ctx, "src"); err != nil {
		t.Fatal(err)
	}
	err := c.Exec(ctx, "src", `
CREATE SCHEMA "Sch ema";
CREATE TABLE "Sch ema"."we""ird.T" ("Col ""1""" int PRIMARY KEY, "ü" text);
CREATE INDEX "i x" ON "Sch ema"."we""ird.T" ("ü");
CREATE INDEX "i expr" ON "Sch ema"."we""ird.T" (lower("ü"), "Col ""1""");
CREATE INDEX "i hash" ON "Sch ema"."we""ird.T" USING hash ("ü");
CREATE TABLE ref (id int, w int,
	CONSTRAINT "ref key" UNIQUE (id) DEFERRABLE INITIALLY DEFERRED,
	CONSTRAINT "ref → w" FOREIGN KEY (w) REFERENCES "Sch ema"."we""ird.T" DEFERRABLE);
CREATE TABLE nv (a int);
ALTER TABLE nv ADD CONSTRAINT nv_positive CHECK (a > 0) NOT VALID;`)
	if err != nil {
		t.Fatal(err)
	}
	entries := dumpPostData(t, c, "src")
	tx := snapshotTx(t, c.URI("src"))
	if err := catalog.Annotate(ctx, tx, entries); err != nil {
		t.Fatalf("Annotate: %v", err)
	}
	weird := oidOf(t, tx, `"Sch ema"."we""ird.T"`)
	ref := oidOf(t, tx, "public.ref")
	byCon := map[string]plan.Entry{}
	for _, e := range entries {
		if e.ConName != "" {
			byCon[e.ConName] = e
		}
		if e.Desc == "INDEX" && e.TableOID != weird {
			t.Errorf("INDEX %s: TableOID %d, want %d", e.Tag, e.TableOID, weird)
		}
	}
	shapes := map[uint32]plan.IndexShape{}
	for _, e := range entries {
		if e.Desc == "INDEX" {
			shapes[e.IndexOID] = e.IndexShape
		}
	}
	for name, want := range map[string]plan.IndexShape{
		`"Sch ema"."i x"`:    {Method: "btree", Keys: 1},
		`"Sch ema"."i expr"`: {Method: "btree", Keys: 2, Expressions: true},
		`"Sch ema"."i hash"`: {Method: "hash", Keys: 1},
	} {
		if got := shapes[oidOf(t, tx, name)]; got != want {
			t.Errorf("index %s: shape %+v, want %+v", name, got, want)
		}
	}
	pk := byCon[`we"ird.T_pkey`]
	if want := (plan.IndexShape{Method: "btree", Keys: 1}); pk.IndexShape != want {
		t.Errorf("primary key's index: shape %+v, want %+v", pk.IndexShape, want)
	}
	if pk.ConType != "p" || pk.TableOID != weird || !strings.HasPrefix(pk.IndexDef, `CREATE UNIQUE INDEX "we""ird.T_pkey" ON "Sch ema"."we""ird.T"`) {
		t.Errorf("primary key of the quoted table: %+v", pk)
	}
	uq := byCon["ref key"]
	if uq.ConType != "u" || uq.TableOID != ref || !uq.Deferrable || !uq.Deferred || !strings.HasPrefix(uq.IndexDef, "CREATE UNIQUE INDEX") {
		t.Errorf("deferrable unique constraint: %+v", uq)
	}
	fk := byCon["ref → w"]
	if fk.ConType != "f" || fk.TableOID != ref || fk.RefTableOID != weird || !fk.Deferrable || fk.Deferred {
		t.Errorf("deferrable foreign key: %+v", fk)
	}
	nv := byCon["nv_positive"]
	if nv.Desc != "CHECK CONSTRAINT" || nv.ConType != "c" || nv.IndexDef != "" {
		t.Errorf("NOT VALID check: %+v", nv)
	}
}
