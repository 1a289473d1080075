package plan

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

const (
	// DefaultCopyJobs is the fleet's copy concurrency the derived split size
	// assumes when Options.CopyJobs is 0 (a coordinator does not know how
	// many workers will come).
	DefaultCopyJobs = 4
	// DefaultSplitMaxParts caps the units of one table.
	DefaultSplitMaxParts = 256
	// partsPerJob is k in the derived split size total / (k * jobs).
	partsPerJob = 4
	// MinSplitBytes floors the derived split size. A split table loses COPY
	// FREEZE: it pays a VACUUM pass and hint-bit writes (in its index
	// builds) instead, and its parts compete for the same cores. On a
	// 2-core machine running both servers, a 1.3 GB pgbench_accounts cloned
	// 20-35% slower in 2 or 7 parts than whole; a unit under 2 GiB makes a
	// tail of seconds, not worth that.
	MinSplitBytes = 2 << 30
	// MaxSplitBytes caps the derived split size, so a failed unit never
	// redoes more than this and no target transaction writes more.
	MaxSplitBytes = 16 << 30
)

// SplitThreshold is the heap + TOAST size above which a table is split, and
// about the size of each part; 0 means no table is split.
//
// When --split-tables-larger-than is not given it is
//
//	clamp(total / (4 * jobs), MinSplitBytes, MaxSplitBytes)
//
// where total is the heap + TOAST bytes of every table copied and jobs the
// copy units the fleet runs at once. Ready units go out largest first, and
// for that greedy order the copy phase ends at most (largest unit) * (1 -
// 1/jobs) after the ideal total / jobs; a largest unit of total / (4 * jobs)
// keeps the tail under a quarter of the ideal, whatever the table sizes. A
// table cut this way has at most 4 * jobs parts.
func SplitThreshold(tables []Table, opts Options) int64 {
	switch {
	case opts.SplitTablesLargerThan > 0:
		return opts.SplitTablesLargerThan
	case opts.SplitTablesLargerThan < 0:
		return 0
	}
	var total int64
	for _, t := range tables {
		if t.HasData() && !t.NoData {
			total += t.Bytes
		}
	}
	jobs := opts.CopyJobs
	if jobs <= 0 {
		jobs = DefaultCopyJobs
	}
	return min(max(total/int64(partsPerJob*jobs), MinSplitBytes), MaxSplitBytes)
}

// part is one copy unit of a table.
type part struct {
	desc  string
	size  int64
	start uint32 // CTID range
	end   uint32
	key   *KeyRange
}

// split cuts a table into parts of about threshold bytes, or returns nil
// when it stays whole: key ranges at quantiles of a key that follows the
// physical order, else CTID block ranges. The number of parts comes from
// heap + TOAST bytes, so TOAST-heavy tables get as many as their size asks
// for, not as few as their heap alone would.
func split(t Table, threshold int64, maxParts int) []part {
	if threshold <= 0 || t.Bytes <= threshold {
		return nil
	}
	if maxParts <= 0 {
		maxParts = DefaultSplitMaxParts
	}
	n := int(min(int64(maxParts), (t.Bytes+threshold-1)/threshold))
	if n < 2 {
		return nil
	}
	if k := t.SplitKey; k != nil && len(k.Bounds) >= 2 && (keyFollowsHeap(k.Correlation, n) || t.HeapPages == 0) {
		if cuts := quantileCuts(k.Bounds, n); len(cuts) > 0 {
			return keyParts(t, k.Column, cuts)
		}
	}
	if t.HeapPages >= 2 {
		return blockParts(t, n)
	}
	return nil
}

// keyFollowsHeap says whether n key ranges read about the table once. Where
// a fraction f of the rows sits away from its key's neighbours (updated
// rows that moved to the end of the heap, say), the correlation is about
// 1 - 2f and each part also reads the pages those rows are on: n parts read
// the table 1 + n*f times. Key ranges are used while that extra stays under
// half a table, n * (1 - |correlation|) / 2 <= 1/2; past it, a part of a key
// in random order would read pages all over the table, and CTID ranges read
// each page once.
func keyFollowsHeap(correlation float64, n int) bool {
	return float64(n)*(1-math.Abs(correlation)) <= 1
}

// quantileCuts returns up to n-1 strictly ascending values that cut an
// equi-depth histogram's rows into n groups of about equal counts,
// interpolating inside a bucket when n is larger than the bucket count.
// Equal-width cuts between the minimum and the maximum would give skewed
// keys parts of very different sizes.
func quantileCuts(bounds []int64, n int) []int64 {
	buckets := len(bounds) - 1
	var cuts []int64
	for i := 1; i < n; i++ {
		x := float64(i) * float64(buckets) / float64(n)
		j := min(int(x), buckets-1)
		c := interpolate(bounds[j], bounds[j+1], x-float64(j))
		if c <= bounds[0] || (len(cuts) > 0 && c <= cuts[len(cuts)-1]) {
			continue
		}
		cuts = append(cuts, c)
	}
	return cuts
}

// interpolate is lo + (hi-lo)*f without overflow for any int64 lo <= hi.
func interpolate(lo, hi int64, f float64) int64 {
	if hi <= lo {
		return lo
	}
	width := uint64(hi) - uint64(lo)
	off := width
	if v := math.Round(float64(width) * f); v < float64(width) {
		off = uint64(v)
	}
	return int64(uint64(lo) + off)
}

func keyParts(t Table, column string, cuts []int64) []part {
	n := len(cuts) + 1
	parts := make([]part, n)
	for i := range parts {
		r := &KeyRange{Column: column}
		if i == 0 {
			r.LowerUnbounded = true
		} else {
			r.Lower = cuts[i-1]
		}
		if i == n-1 {
			r.UpperUnbounded = true
		} else {
			r.Upper = cuts[i]
		}
		var where string
		switch {
		case r.LowerUnbounded:
			where = fmt.Sprintf("%s < %d", column, r.Upper)
		case r.UpperUnbounded:
			where = fmt.Sprintf("%s >= %d", column, r.Lower)
		default:
			where = fmt.Sprintf("%s in [%d, %d)", column, r.Lower, r.Upper)
		}
		parts[i] = part{desc: fmt.Sprintf("part %d/%d: %s", i+1, n, where), size: t.Bytes / int64(n), key: r}
	}
	return parts
}

// blockParts cuts the heap into n ranges of equal block counts. The first
// starts at block 0 and the last is open-ended, so rows in blocks added
// after the catalog was read are copied too.
func blockParts(t Table, n int) []part {
	pages := t.HeapPages
	n = int(min(int64(n), pages))
	step := (pages + int64(n) - 1) / int64(n)
	n = int((pages + step - 1) / step)
	parts := make([]part, n)
	for i := range parts {
		start := int64(i) * step
		end := start + step
		p := part{start: uint32(start), end: uint32(end)}
		if i == n-1 {
			p.end = 0
			end = pages
		}
		upper := strconv.FormatInt(int64(p.end), 10)
		if p.end == 0 {
			upper = "end"
		}
		p.desc = fmt.Sprintf("part %d/%d: blocks [%d, %s)", i+1, n, start, upper)
		p.size = t.Bytes * (end - start) / pages
		parts[i] = p
	}
	return parts
}

// ParseSplitSize reads --split-tables-larger-than: "auto" (0: derived, see
// SplitThreshold), "off" (-1: never split), bytes, or a number with kB, MB,
// GB or TB (powers of 1024, as PostgreSQL counts).
func ParseSplitSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "auto":
		return 0, nil
	case "off":
		return -1, nil
	}
	units := []struct {
		suffix string
		factor float64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}
	factor := 1.0
	num := s
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			factor, num = u.factor, strings.TrimSpace(rest)
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v*factor >= 1 && v*factor < math.MaxInt64) {
		return 0, fmt.Errorf("size %q: want auto, off, bytes, or a number with kB, MB, GB or TB, such as 512MB", s)
	}
	return int64(v * factor), nil
}
