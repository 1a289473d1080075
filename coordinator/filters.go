package coordinator

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgcaravan/pgcaravan/coordinator/catalog"
	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/coordinator/plan"
	"github.com/pgcaravan/pgcaravan/coordinator/schema"
)

// filtered is a filter applied to one source: the selection, and the dump
// entries and catalog facts that are kept.
type filtered struct {
	sel  filter.Selection
	pre  []schema.Entry
	post []schema.Entry
}

// applyFilter decides what the configured filter leaves out of the dump
// whose pre- and post-data entries are pre and post, and cuts in (tables,
// sequences) to what is kept. Without a filter it keeps everything.
func (c *Coordinator) applyFilter(ctx context.Context, q catalog.Querier, in *plan.Input, pre, post []schema.Entry) (filtered, error) {
	out := filtered{pre: pre, post: post}
	if c.cfg.Filter.Empty() {
		return out, nil
	}
	cat, err := catalog.ReadFilterCatalog(ctx, q, in.Tables)
	if err != nil {
		return out, fmt.Errorf("source %s: %w", c.src, err)
	}
	entries := make([]filter.Entry, 0, len(pre)+len(post))
	for _, list := range [][]schema.Entry{pre, post} {
		for _, e := range list {
			entries = append(entries, filter.Entry{DumpID: e.DumpID, Desc: e.Desc, Schema: e.Schema, Tag: e.Tag,
				Names: e.Names, ObjOID: e.ObjOID, Deps: e.Deps})
		}
	}
	out.sel = filter.Select(c.cfg.Filter, entries, cat)
	out.pre, out.post = keptEntries(pre, out.sel), keptEntries(post, out.sel)

	excludedSeq := map[uint32]bool{}
	for _, e := range pre {
		if e.Desc == "SEQUENCE" && out.sel.Excluded[e.DumpID] {
			excludedSeq[e.ObjOID] = true
		}
	}
	var tables []plan.Table
	for _, t := range in.Tables {
		if out.sel.Tables[t.OID] {
			continue
		}
		t.NoData = out.sel.NoData[t.OID]
		tables = append(tables, t)
	}
	in.Tables = tables
	var seqs []plan.Sequence
	for _, s := range in.Sequences {
		if !excludedSeq[s.OID] {
			seqs = append(seqs, s)
		}
	}
	in.Sequences = seqs
	in.Skipped = out.sel.Skipped
	return out, nil
}

func keptEntries(list []schema.Entry, sel filter.Selection) []schema.Entry {
	out := make([]schema.Entry, 0, len(list))
	for _, e := range list {
		if !sel.Excluded[e.DumpID] {
			out = append(out, e)
		}
	}
	return out
}

// publishedTables cuts the tables a --follow publication would carry by
// what the filter says of them alone: the publication is made before the
// snapshot and the dump, so before dependencies are known. Tables whose
// rows are not copied are not published either.
func (c *Coordinator) publishedTables(tables []plan.Table) []plan.Table {
	if c.cfg.Filter.Empty() {
		return tables
	}
	rels := catalog.Relations(tables)
	var out []plan.Table
	for _, t := range tables {
		if c.cfg.Filter.TableExcluded(rels, t.OID) || c.cfg.Filter.TableDataExcluded(rels, t.OID) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// checkPublished refuses a --follow clone whose publication carries a table
// that the dump's dependencies left out (or whose rows are not copied): its
// changes would have nowhere to go on the target.
func checkPublished(published []plan.Table, sel filter.Selection) error {
	var bad []string
	for _, t := range published {
		if sel.Tables[t.OID] || sel.NoData[t.OID] {
			bad = append(bad, filter.Name{Schema: t.Schema, Name: t.Name}.String())
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("filters: with --follow, %s must be named in [exclude-table] (or [exclude-table-data]): "+
		"they are left out because of what they depend on, but the publication was made before that was known",
		strings.Join(bad, ", "))
}

// excludedObjects are the names catalog.Objects gives to the relations the
// filter leaves out, so the target check does not refuse a target for
// objects the clone will not create.
func excludedObjects(ctx context.Context, q catalog.Querier, pre, post []schema.Entry, sel filter.Selection) (map[string]bool, error) {
	var oids []uint32
	for _, list := range [][]schema.Entry{pre, post} {
		for _, e := range list {
			if sel.Excluded[e.DumpID] && e.CatalogOID != 0 && e.ObjOID != 0 {
				oids = append(oids, e.ObjOID)
			}
		}
	}
	names, err := catalog.ObjectNames(ctx, q, oids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}
