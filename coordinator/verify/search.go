package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// maxFanout bounds how many parts a differing range is cut into at once.
const maxFanout = 16

// search narrows a differing range of a keyed table down to its differing
// keys: a range of at most leafRows rows (on either side) has its rows'
// keys and hashes read on both sides and merged; a bigger one is cut at
// quantiles of its keys and each differing part is searched. Every query
// is an aggregate or at most leafRows keys and hashes: no row's contents
// cross the network.
type search struct {
	p        sessionPair
	run      *tableRun
	key      string
	leafRows int64
	maxKeys  int
}

func (s *search) search(ctx context.Context, kr KeyRange, srcRows, tgtRows int64) error {
	if s.run.full(s.maxKeys) {
		s.run.addUnsearched(UnsearchedRange{Range: kr, SourceRows: srcRows, TargetRows: tgtRows})
		return nil
	}
	// 1. Small enough: list the keys.
	if max(srcRows, tgtRows) <= s.leafRows {
		var sr, tr []rowHash
		err := s.p.both(
			func() (err error) { sr, err = s.p.src.rowHashes(ctx, s.run.src, s.key, kr); return err },
			func() (err error) { tr, err = s.p.tgt.rowHashes(ctx, s.run.tgt, s.key, kr); return err })
		if err != nil {
			return err
		}
		s.run.addRows(diffRows(sr, tr), s.maxKeys)
		return nil
	}

	// 2. Cut at quantiles of the side with more rows (the other may have
	// none in the range) into parts of about leafRows rows.
	n := min(maxFanout, max(2, int((max(srcRows, tgtRows)+s.leafRows-1)/s.leafRows)))
	ses, t := s.p.src, s.run.src
	if tgtRows > srcRows {
		ses, t = s.p.tgt, s.run.tgt
	}
	cuts, err := ses.quantiles(ctx, t, s.key, kr, n)
	if err != nil {
		return err
	}
	parts := kr.split(cuts)
	if parts == nil {
		// Only duplicates of one key (a target without the unique index):
		// no cut narrows the range.
		s.run.addUnsearched(UnsearchedRange{Range: kr, SourceRows: srcRows, TargetRows: tgtRows})
		return nil
	}

	// 3. Search the parts that differ.
	for _, part := range parts {
		res, err := s.p.sum(ctx, s.run, s.key, part)
		if err != nil {
			return err
		}
		if res.equal() {
			continue
		}
		if err := s.search(ctx, part, res.Source.Rows, res.Target.Rows); err != nil {
			return err
		}
	}
	return nil
}

// rowHash is one row's key and the md5 of its text.
type rowHash struct {
	key  int64
	hash string
}

// rowHashes reads the key and hash of each row of a range, in key order.
func (s *session) rowHashes(ctx context.Context, t table, key string, kr KeyRange) ([]rowHash, error) {
	sql := fmt.Sprintf("SELECT t.%s::int8, md5(t.*::text) FROM %s t%s ORDER BY 1",
		ident.Quote(key), t.from(), kr.where(key))
	rows, err := s.tx.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (rowHash, error) {
		var h rowHash
		err := row.Scan(&h.key, &h.hash)
		return h, err
	})
}

// quantiles returns the keys at 1/n, 2/n, ... (n-1)/n of a range's rows.
func (s *session) quantiles(ctx context.Context, t table, key string, kr KeyRange, n int) ([]int64, error) {
	fracs := make([]string, 0, n-1)
	for i := 1; i < n; i++ {
		fracs = append(fracs, strconv.FormatFloat(float64(i)/float64(n), 'f', -1, 64))
	}
	sql := fmt.Sprintf("SELECT percentile_disc(ARRAY[%s]::float8[]) WITHIN GROUP (ORDER BY t.%s)::int8[] FROM %s t%s",
		strings.Join(fracs, ", "), ident.Quote(key), t.from(), kr.where(key))
	var cuts []int64
	if err := s.tx.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&cuts); err != nil {
		return nil, err
	}
	return cuts, nil
}

// diffRows merges the rows of one range on both sides, each sorted by key,
// into the keys that differ. A key the target has more than once
// (it lacks the unique index) is reported once per extra row.
func diffRows(src, tgt []rowHash) []RowDiff {
	var out []RowDiff
	i, j := 0, 0
	for i < len(src) || j < len(tgt) {
		// The rows of the next key on each side.
		k := int64(0)
		switch {
		case j == len(tgt):
			k = src[i].key
		case i == len(src):
			k = tgt[j].key
		default:
			k = min(src[i].key, tgt[j].key)
		}
		var sh, th []string
		for ; i < len(src) && src[i].key == k; i++ {
			sh = append(sh, src[i].hash)
		}
		for ; j < len(tgt) && tgt[j].key == k; j++ {
			th = append(th, tgt[j].hash)
		}
		// Rows equal on both sides cancel out; what is left pairs up as
		// changed, and the rest is missing or extra.
		slices.Sort(sh)
		slices.Sort(th)
		sh, th = cancel(sh, th)
		for n := range max(len(sh), len(th)) {
			c := Changed
			switch {
			case n >= len(th):
				c = MissingOnTarget
			case n >= len(sh):
				c = ExtraOnTarget
			}
			out = append(out, RowDiff{Key: k, Change: c})
		}
	}
	return out
}

// cancel removes the hashes a and b have in common; both are sorted.
func cancel(a, b []string) ([]string, []string) {
	var ra, rb []string
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch cmp.Compare(a[i], b[j]) {
		case 0:
			i++
			j++
		case -1:
			ra = append(ra, a[i])
			i++
		default:
			rb = append(rb, b[j])
			j++
		}
	}
	ra = append(ra, a[i:]...)
	rb = append(rb, b[j:]...)
	return ra, rb
}

// sortRows puts row diffs in key order.
func sortRows(rows []RowDiff) {
	slices.SortStableFunc(rows, func(a, b RowDiff) int { return cmp.Compare(a.Key, b.Key) })
}
