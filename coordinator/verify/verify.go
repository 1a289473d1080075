package verify

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/pgcaravan/pgcaravan/coordinator/filter"
	"github.com/pgcaravan/pgcaravan/shared/checksum"
)

// ownSchema is where pgcaravan keeps its bookkeeping on the target; it is
// never part of what is compared.
const ownSchema = "pgcaravan"

// missing is the value shown for an object that one side does not have.
const missing = "(missing)"

// Options tune Compare.
type Options struct {
	// ExcludeSchemas are skipped on both sides (pgcaravan always adds "pgcaravan").
	ExcludeSchemas []string
	// Jobs is how many tables are checksummed in parallel; 0 means 2.
	Jobs int
	// Filter, when set, is the filter a clone was run with: the source
	// objects it left out are not expected on the target (see leaveOut),
	// and tables whose data it left out are expected empty.
	Filter *filter.Filter
	// NoComments leaves comments out of the comparison, for a clone made
	// with --no-comments.
	NoComments bool

	// Dir, when set, keeps each range's result in Dir/verify.db: a verify
	// rerun on the same Dir (and the same databases) does not compare
	// again the ranges it found equal, and redoes the rest.
	Dir string
	// Restart forgets the results kept in Dir first.
	Restart bool
	// Snapshot, when set, is an exported snapshot (pg_export_snapshot(),
	// held open by its session) the source side is read under, instead
	// of a snapshot of its own.
	Snapshot string
	// RangeRows is about how many source rows a table with an integer key
	// is cut into ranges of; 0 means 100000.
	RangeRows int64
	// LeafRows: a differing range of at most this many rows on each side
	// has its keys listed; a bigger one is cut again. 0 means 1000.
	LeafRows int64
	// MaxKeys is how many differing keys are listed per table; once as
	// many are found, the table's other differing ranges are named but
	// not searched. 0 means 100.
	MaxKeys int
	// Logger gets a line per table (Info) and per range (Debug); nil logs
	// nothing.
	Logger hclog.Logger
	// Spread, when set, counts and checksums the ranges somewhere else
	// (a fleet's workers) instead of on Jobs sessions here; planning the
	// ranges and searching the differing ones for their keys stay here.
	Spread Spread
}

// Spread counts and checksums every range on both sides, each side read
// under its snapshot in snaps (held open by Compare until Spread returns),
// with checksum.Range on sessions opened with checksum.SessionParams, and
// hands the results to done as they come, in batches, one call at a time.
// It returns when every range is done, or the first error (done's
// included). A range may be computed twice: it only reads.
type Spread func(ctx context.Context, ranges []Range, snaps Snapshots, done func([]RangeDone) error) error

// Range is one range of one table for Spread.
type Range struct {
	// Table is the display name; Schema and Name are unquoted, the same on
	// both sides.
	Table, Schema, Name string
	// Key is the integer key column KeyRange is on; "" is the whole table.
	Key      string
	KeyRange KeyRange
	// Size is about how many source bytes the range holds, to do large
	// ones first.
	Size int64
}

// Snapshots are the exported snapshots each side of a Compare reads under.
type Snapshots struct {
	Source, Target string
}

// RangeDone is the result of ranges[Index] of a Spread.
type RangeDone struct {
	Index          int
	Source, Target checksum.Sum
}

// Defaults of Options.
const (
	DefaultRangeRows = 100000
	DefaultLeafRows  = 1000
	DefaultMaxKeys   = 100
)

// Check is one comparison of one object between source and target.
type Check struct {
	// Kind is what was compared: "table", "rows", "checksum", "schema",
	// "type", "column", "index", "constraint", "sequence", "trigger",
	// "view", "matview", "function", "comment", "extension" or
	// "large objects".
	Kind string
	// Object names what was compared, with identifiers quoted where needed.
	Object string
	// Source and Target are what each side has; "(missing)" when it has
	// nothing of that name.
	Source, Target string
	OK             bool
}

// Report is the result of Compare: every check, passed or not.
type Report struct {
	Checks []Check
	// Tables says, for each table whose rows were compared on both sides,
	// in name order, how it was cut and which keys differ.
	Tables []TableResult
}

// OK reports whether every check passed.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Problems returns the checks that failed, in report order.
func (r *Report) Problems() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// Compare reads sourceURI and targetURI and returns a report with one check
// per compared object. It returns an error only when it cannot read a side;
// differences are reported, not returned.
func Compare(ctx context.Context, sourceURI, targetURI string, opts Options) (*Report, error) {
	if opts.Jobs <= 0 {
		opts.Jobs = 2
	}
	if opts.RangeRows <= 0 {
		opts.RangeRows = DefaultRangeRows
	}
	if opts.LeafRows <= 0 {
		opts.LeafRows = DefaultLeafRows
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultMaxKeys
	}
	if opts.Logger == nil {
		opts.Logger = nullLogger
	}
	exclude := append([]string{ownSchema}, opts.ExcludeSchemas...)
	// The results of an earlier run, kept in opts.Dir; opened first, so a
	// Dir in use is refused before any database is read.
	var st *state
	if opts.Dir != "" {
		var err error
		st, err = openState(opts.Dir, opts.Restart, statePair{Source: pairOf(sourceURI), Target: pairOf(targetURI)})
		if err != nil {
			return nil, err
		}
		defer st.close()
	}

	// 1. Open one snapshot per side and read its catalog under it. Both
	// sides are read at the same time. A filter's schemas are left out on
	// both sides.
	src := &side{name: "source", uri: sourceURI, snapshot: opts.Snapshot}
	tgt := &side{name: "target", uri: targetURI}
	defer src.close()
	defer tgt.close()
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range []*side{src, tgt} {
		g.Go(func() error { return s.open(gctx) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var filtered []string
	if !opts.Filter.Empty() {
		var err error
		if filtered, err = src.filteredSchemas(ctx, opts.Filter); err != nil {
			return nil, fmt.Errorf("verify: read source schemas: %w", err)
		}
		exclude = append(exclude, filtered...)
	}
	g, gctx = errgroup.WithContext(ctx)
	for _, s := range []*side{src, tgt} {
		g.Go(func() error { return s.readCatalog(gctx, exclude) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	matchPartitioned(src, tgt)
	if opts.NoComments {
		delete(src.facts, "comment")
		delete(tgt.facts, "comment")
	}
	var noData map[string]bool
	if !opts.Filter.Empty() {
		var err error
		if noData, err = src.leaveOut(ctx, opts.Filter, filtered); err != nil {
			return nil, fmt.Errorf("verify: apply the filter to the source: %w", err)
		}
	}

	// 2. Count and checksum every table that holds rows on both sides,
	// range by range, skipping the ranges an earlier run on opts.Dir found
	// equal, and search differing ranges for their keys; a table whose data
	// the filter left out must be empty on the target.
	data, tables, err := compareData(ctx, src, tgt, opts, st, noData)
	if err != nil {
		return nil, err
	}
	empty, err := compareNoData(ctx, tgt, noData)
	if err != nil {
		return nil, err
	}
	data = append(data, empty...)

	// 3. Compare the catalogs, and put it all in report order.
	r := &Report{Tables: tables}
	r.Checks = append(r.Checks, diff("table", src.tableFacts(), tgt.tableFacts())...)
	r.Checks = append(r.Checks, data...)
	for _, kind := range factKinds {
		r.Checks = append(r.Checks, diff(kind, src.facts[kind], tgt.facts[kind])...)
	}
	r.Checks = append(r.Checks, compareLargeObjects(src.largeObjects, tgt.largeObjects)...)
	return r, nil
}

// diff compares two name -> value maps and returns one check per name in
// either, sorted by name.
func diff(kind string, src, tgt map[string]string) []Check {
	names := make([]string, 0, len(src)+len(tgt))
	for n := range src {
		names = append(names, n)
	}
	for n := range tgt {
		if _, ok := src[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	checks := make([]Check, 0, len(names))
	for _, n := range names {
		s, sok := src[n]
		t, tok := tgt[n]
		if !sok {
			s = missing
		}
		if !tok {
			t = missing
		}
		checks = append(checks, Check{Kind: kind, Object: n, Source: s, Target: t, OK: sok && tok && s == t})
	}
	return checks
}

// compareLargeObjects checks the number of large objects, each object's
// size and digest, and a digest over all of them.
func compareLargeObjects(src, tgt []largeObject) []Check {
	checks := []Check{{
		Kind:   "large objects",
		Object: "count",
		Source: strconv.Itoa(len(src)),
		Target: strconv.Itoa(len(tgt)),
		OK:     len(src) == len(tgt),
	}}
	var differ int
	i, j := 0, 0
	for i < len(src) || j < len(tgt) {
		var c Check
		switch {
		case j == len(tgt) || (i < len(src) && src[i].oid < tgt[j].oid):
			c = Check{Object: loName(src[i].oid), Source: src[i].String(), Target: missing}
			i++
		case i == len(src) || tgt[j].oid < src[i].oid:
			c = Check{Object: loName(tgt[j].oid), Source: missing, Target: tgt[j].String()}
			j++
		default:
			c = Check{Object: loName(src[i].oid), Source: src[i].String(), Target: tgt[j].String()}
			c.OK = src[i] == tgt[j]
			i++
			j++
		}
		if c.OK {
			continue
		}
		c.Kind = "large objects"
		checks = append(checks, c)
		differ++
	}
	// Matching objects are not listed one by one: a single check stands
	// for them, so a report on a database with many objects stays short.
	checks = append(checks, Check{
		Kind:   "large objects",
		Object: "data",
		Source: fmt.Sprintf("%d objects, %s", len(src), loDigest(src)),
		Target: fmt.Sprintf("%d objects, %s", len(tgt), loDigest(tgt)),
		OK:     differ == 0,
	})
	return checks
}

func loName(oid uint32) string { return "oid " + strconv.FormatUint(uint64(oid), 10) }
