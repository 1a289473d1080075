package apply

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/jackc/pglogrepl"
)

// Coalescing: an UPDATE that keeps its row's key is held back instead of
// being sent, and a later UPDATE of the same row in the same target
// transaction is merged into it, so a hot row updated by a thousand source
// transactions costs one statement per target transaction, not a thousand
// (pgbench's branches and tellers are exactly that).
//
// It is done only for tables whose one unique or exclusion index is the
// primary key the changes are matched by: there, the order of UPDATEs of
// different rows cannot matter, since no other index can make one row's
// new value collide with another row's old one. Nothing else about a row
// can be seen before the target transaction commits: triggers and FK checks
// do not fire under session_replication_role = replica. Held updates of a
// table are sent before any other change to that table (INSERT, DELETE, a
// key change, TRUNCATE) and before the commit.

// heldKey names one row: its relation and its key's values.
type heldKey struct {
	rel uint32
	key string
}

// heldUpdate is the merged effect of the held UPDATEs of one row.
type heldUpdate struct {
	rel   *relation
	vals  map[int][]byte // column index -> new value (nil is NULL)
	mt    match
	where [][]byte
}

// hold merges an UPDATE that keeps the key of a row of a coalescing table
// into the row's held update.
func (a *applier) hold(ctx context.Context, r *relation, t *pglogrepl.TupleData) error {
	mt, where, err := matchFrom(r, t, false)
	if err != nil {
		return err
	}
	// The values point into the record, whose buffer the source may reuse
	// once the next record is read: a held update keeps copies.
	for i, v := range where {
		where[i] = slices.Clone(v)
	}
	// Inserts into the same table that came first must reach it first.
	if a.run != nil && a.run.rel == r {
		if err := a.flushRun(ctx); err != nil {
			return err
		}
	}
	if !a.open {
		a.begin()
	}
	k := heldKey{rel: r.id, key: keyString(where)}
	h, ok := a.held[k]
	if !ok {
		h = &heldUpdate{rel: r, vals: map[int][]byte{}, mt: mt, where: where}
		a.held[k] = h
		a.heldOrder = append(a.heldOrder, k)
		a.heldRels[r.id]++
	}
	for i, c := range r.columns {
		if i >= len(t.Columns) {
			break
		}
		v := t.Columns[i]
		if v.DataType == valUnchanged || c.identityAlways {
			continue // unchanged TOAST keeps what an earlier held update set, if any
		}
		if v.DataType == valNull {
			h.vals[i] = nil
		} else {
			h.vals[i] = slices.Clone(v.Data)
		}
	}
	a.changes++
	if len(a.held) >= a.cfg.Chunk {
		return a.flushHeld(ctx)
	}
	return nil
}

// flushHeldFor sends the held updates before a change to r that is not
// held (to every relation when r is nil).
func (a *applier) flushHeldFor(ctx context.Context, r *relation) error {
	if len(a.held) == 0 || (r != nil && a.heldRels[r.id] == 0) {
		return nil
	}
	return a.flushHeld(ctx)
}

// flushHeld queues every held update: the held updates of one table that
// set the same columns go out together, as multi-row UPDATEs of 100, 10
// and 1 rows (few statements to prepare), in the order their first rows
// were first updated. Within one flush every row appears once, so their
// order does not matter.
func (a *applier) flushHeld(ctx context.Context) error {
	order := a.heldOrder
	a.heldOrder = nil
	held := a.held
	a.held, a.heldRels = map[heldKey]*heldUpdate{}, map[uint32]int{}
	type group struct {
		rel  *relation
		set  []int
		mt   match
		rows []*heldUpdate
	}
	var groups []*group
	bySig := map[string]*group{}
	for _, k := range order {
		h := held[k]
		set := make([]int, 0, len(h.vals))
		for i := range h.vals {
			set = append(set, i)
		}
		if len(set) == 0 {
			continue
		}
		slices.Sort(set)
		sig := fmt.Sprint(h.rel.id, set)
		g, ok := bySig[sig]
		if !ok {
			g = &group{rel: h.rel, set: set, mt: h.mt}
			bySig[sig] = g
			groups = append(groups, g)
		}
		g.rows = append(g.rows, h)
	}
	for _, g := range groups {
		per := len(g.set) + len(g.mt.cols)
		sizes := []int{max(1, min(100, 65535/per)), 10, 1}
		for _, i := range g.mt.cols {
			if g.rel.columns[i].noEquality {
				sizes = []int{1} // the join needs = on the key
			}
		}
		off := 0
		for _, size := range sizes {
			for len(g.rows)-off >= size {
				rows := g.rows[off : off+size]
				params := make([][]byte, 0, size*per)
				for _, h := range rows {
					for _, i := range g.set {
						params = append(params, h.vals[i])
					}
					params = append(params, h.where...)
				}
				sql := updateSQL(g.rel, g.set, g.mt)
				if size > 1 {
					sql = updateManySQL(g.rel, g.set, g.mt, size)
				}
				if err := a.queueStmt(ctx, sql, params); err != nil {
					return err
				}
				off += size
			}
		}
	}
	return nil
}

// keyString packs key values into a map key, with lengths so that no two
// keys run together.
func keyString(vals [][]byte) string {
	var b []byte
	for _, v := range vals {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return string(b)
}
