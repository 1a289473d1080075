package verify

import "strings"

// matchPartitioned pairs each plain source table with a target table of
// the same name that is partitioned (a clone whose --after-schema made it
// so): the target table becomes a tree, described as a table and read with
// its partitions, and its partitions, at every level, are left out of the
// target with their columns, indexes, constraints, triggers and comments,
// which the source has no counterpart of. What is defined on the
// partitioned table itself is compared by name as usual; an index on it is
// printed ON ONLY, which says nothing about its partitions (its indisvalid
// does), so that is read as the source's plain ON.
func matchPartitioned(src, tgt *side) {
	var trees []uint32
	for n, s := range src.tables {
		t, ok := tgt.tables[n]
		if !ok || s.kind != "r" || t.kind != "p" {
			continue
		}
		t.tree = true
		tgt.tables[n] = t
		trees = append(trees, t.oid)
	}
	if len(trees) == 0 {
		return
	}
	// Everything below the trees: partitions of partitions too.
	under := map[uint32]bool{}
	for _, o := range trees {
		under[o] = true
	}
	partitions := map[uint32]bool{}
	for grew := true; grew; {
		grew = false
		for _, t := range tgt.tables {
			if !t.partition || under[t.oid] {
				continue
			}
			for _, p := range t.parentOIDs {
				if under[p] {
					under[t.oid], partitions[t.oid], grew = true, true, true
					break
				}
			}
		}
	}
	for n, t := range tgt.tables {
		if partitions[t.oid] {
			delete(tgt.tables, n)
		}
	}
	for kind, owners := range tgt.owners {
		for object, owner := range owners {
			if partitions[owner] {
				delete(tgt.facts[kind], object)
				delete(owners, object)
			}
		}
	}
	isTree := map[uint32]bool{}
	for _, o := range trees {
		isTree[o] = true
	}
	for object, owner := range tgt.owners["index"] {
		if isTree[owner] {
			def := tgt.facts["index"][object]
			tgt.facts["index"][object] = strings.Replace(def, " ON ONLY ", " ON ", 1)
		}
	}
}
