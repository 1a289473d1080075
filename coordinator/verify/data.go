package verify

import (
	"cmp"
	"context"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgcaravan/pgcaravan/shared/checksum"
	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// tableSum is one side's row count and checksum of a table or a range.
type tableSum struct {
	Rows int64  `json:"rows"`
	Sum  string `json:"sum"`
}

// add returns the count and checksum of both.
func (s tableSum) add(o tableSum) tableSum {
	a, ok1 := new(big.Int).SetString(cmp.Or(s.Sum, "0"), 10)
	b, ok2 := new(big.Int).SetString(cmp.Or(o.Sum, "0"), 10)
	if !ok1 || !ok2 {
		return tableSum{Rows: s.Rows + o.Rows, Sum: "(unreadable)"}
	}
	return tableSum{Rows: s.Rows + o.Rows, Sum: a.Add(a, b).String()}
}

// Change is how a row differs.
type Change int

const (
	// Changed: the key is on both sides with different contents.
	Changed Change = iota + 1
	// MissingOnTarget: the key is on the source only (deleted on the target).
	MissingOnTarget
	// ExtraOnTarget: the key is on the target only (added on the target).
	ExtraOnTarget
)

func (c Change) String() string {
	switch c {
	case Changed:
		return "changed"
	case MissingOnTarget:
		return "missing on target"
	case ExtraOnTarget:
		return "extra on target"
	}
	return "change " + strconv.Itoa(int(c))
}

// RowDiff is one differing row, named by its key.
type RowDiff struct {
	Key    int64
	Change Change
}

// UnsearchedRange is a differing range whose rows were not listed, because
// the table's MaxKeys was reached first.
type UnsearchedRange struct {
	Range                  KeyRange
	SourceRows, TargetRows int64
}

// TableResult is how one table's rows were compared.
type TableResult struct {
	Table string
	// Key is the integer key the table was cut and searched on; "" when the
	// table has none (on both sides) and was compared whole.
	Key string
	// Ranges the table was cut into; Compared of them were read in this
	// run, Resumed were found equal by an earlier run on the same
	// Options.Dir and not read again. Differ is how many differ.
	Ranges, Compared, Resumed, Differ int
	// Rows are the differing keys found, in key order, at most
	// Options.MaxKeys; MoreRows more were found but not listed.
	Rows     []RowDiff
	MoreRows int
	// Unsearched are the differing ranges not searched for keys once
	// MaxKeys was reached.
	Unsearched []UnsearchedRange
}

// tableRun is a table being compared: its plan, its stored results, and
// what its ranges found, shared by the jobs comparing them.
type tableRun struct {
	name     string
	src, tgt table
	plan     tablePlan
	ranges   []KeyRange
	stored   map[int]rangeResult

	mu        sync.Mutex
	sums      []rangeResult
	result    TableResult
	remaining int
	started   time.Time
}

func (r *tableRun) full(maxKeys int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.result.Rows)+r.result.MoreRows >= maxKeys
}

func (r *tableRun) addRows(diffs []RowDiff, maxKeys int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range diffs {
		if len(r.result.Rows) < maxKeys {
			r.result.Rows = append(r.result.Rows, d)
		} else {
			r.result.MoreRows++
		}
	}
}

func (r *tableRun) addUnsearched(u UnsearchedRange) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.result.Unsearched = append(r.result.Unsearched, u)
}

// compareData counts and checksums, on both sides, every table that holds
// rows on both sides, but those in skip (a filter's exclude-table-data,
// checked by compareNoData), range by range, and searches differing ranges
// for the keys that differ.
func compareData(ctx context.Context, src, tgt *side, opts Options, st *state, skip map[string]bool) ([]Check, []TableResult, error) {
	var names []string
	for n, s := range src.tables {
		if skip[n] {
			continue
		}
		t, ok := tgt.tables[n]
		// A table missing on one side, or of another kind, is reported by
		// the "table" check, and an unpopulated materialized view, which
		// cannot be read, by the "matview" check.
		if !ok || !s.hasRows() || (s.kind != t.kind && !t.tree) || !s.populated || !t.populated {
			continue
		}
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(src.tables[b].size, src.tables[a].size), strings.Compare(a, b))
	})
	if len(names) == 0 {
		return nil, nil, nil
	}

	// 1. Open opts.Jobs pairs of sessions under the sides' snapshots.
	pairs := make([]sessionPair, min(opts.Jobs, len(names)))
	defer func() {
		for _, p := range pairs {
			p.close()
		}
	}()
	for i := range pairs {
		var err error
		if pairs[i].src, err = src.session(ctx); err != nil {
			return nil, nil, err
		}
		if pairs[i].tgt, err = tgt.session(ctx); err != nil {
			return nil, nil, err
		}
	}

	// 2. Plan each table: its key and ranges, kept from an earlier run on
	// the same Dir or cut now from a sample of the source's keys.
	runs := make([]*tableRun, len(names))
	err := parallel(ctx, pairs, len(names), func(ctx context.Context, p sessionPair, i int) error {
		r := &tableRun{name: names[i], src: src.tables[names[i]], tgt: tgt.tables[names[i]], started: time.Now()}
		r.result.Table = r.name
		plan, ok, err := st.plan(r.name)
		if err != nil {
			return fmt.Errorf("verify: read the stored plan of %s: %w", r.name, err)
		}
		if ok {
			r.stored, err = st.results(r.name)
			if err != nil {
				return fmt.Errorf("verify: read the stored results of %s: %w", r.name, err)
			}
		} else {
			if plan, err = planTable(ctx, p.src, p.tgt, r.src, r.tgt, opts.RangeRows); err != nil {
				return fmt.Errorf("verify: cut table %s into ranges: %w", r.name, err)
			}
			if err := st.putPlan(r.name, plan); err != nil {
				return fmt.Errorf("verify: store the plan of %s: %w", r.name, err)
			}
		}
		r.plan, r.ranges = plan, plan.ranges()
		r.sums = make([]rangeResult, len(r.ranges))
		r.result.Key, r.result.Ranges = plan.Key, len(r.ranges)
		runs[i] = r
		return nil
	})
	if err != nil {
		return nil, nil, err
	}

	// 3. Compare every range not already found equal, largest table first;
	// a differing range of a keyed table is searched for its keys by the
	// job that found it.
	type job struct {
		run *tableRun
		i   int
	}
	var jobs []job
	for _, r := range runs {
		for i := range r.ranges {
			if res, ok := r.stored[i]; ok && res.equal() {
				r.sums[i] = res
				r.result.Resumed++
				continue
			}
			jobs = append(jobs, job{r, i})
			r.remaining++
		}
		if r.remaining == 0 {
			opts.Logger.Info("table equal in an earlier run", "table", r.name, "ranges", len(r.ranges))
		}
	}
	// finish keeps a range's result and searches it if it differs.
	finish := func(ctx context.Context, p sessionPair, j int, res rangeResult, keep bool) error {
		r, i := jobs[j].run, jobs[j].i
		kr := r.ranges[i]
		if keep {
			res.At = time.Now().UTC()
			if err := st.putResult(r.name, i, res); err != nil {
				return fmt.Errorf("verify: store the result of %s range %d: %w", r.name, i, err)
			}
		}
		opts.Logger.Debug("range compared", "table", r.name, "range", kr.String(), "rows", res.Source.Rows, "equal", res.equal())
		if !res.equal() && r.plan.Key != "" {
			s := &search{p: p, run: r, key: r.plan.Key, leafRows: opts.LeafRows, maxKeys: opts.MaxKeys}
			if err := s.search(ctx, kr, res.Source.Rows, res.Target.Rows); err != nil {
				return fmt.Errorf("verify: search %s range %s for differing keys: %w", r.name, kr, err)
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.sums[i] = res
		r.result.Compared++
		if !res.equal() {
			r.result.Differ++
		}
		if r.remaining--; r.remaining == 0 {
			opts.Logger.Info("table compared", "table", r.name, "ranges", len(r.ranges), "compared", r.result.Compared,
				"resumed", r.result.Resumed, "differ", r.result.Differ, "elapsed", time.Since(r.started).Round(time.Millisecond))
		}
		return nil
	}
	if opts.Spread != nil {
		// 3a. The ranges are counted and checksummed elsewhere, under this
		// run's snapshots; each result is kept as it arrives, so an
		// interrupted run resumes from those already in. Only the
		// differing ranges are searched here. A Range reads a table ONLY,
		// so those of a target tree are compared here, on the sessions.
		var ranges []Range
		var spread, local []int // indexes into jobs
		for j, jb := range jobs {
			if jb.run.tgt.tree {
				local = append(local, j)
				continue
			}
			t := jb.run.src
			spread = append(spread, j)
			ranges = append(ranges, Range{Table: jb.run.name, Schema: t.schema, Name: t.name, Key: jb.run.plan.Key,
				KeyRange: jb.run.ranges[jb.i], Size: t.size / int64(len(jb.run.ranges))})
		}
		results := make([]rangeResult, len(jobs))
		err = opts.Spread(ctx, ranges, Snapshots{Source: src.snapshot, Target: tgt.snapshot}, func(done []RangeDone) error {
			kept := make([]keptResult, 0, len(done))
			for _, d := range done {
				j := spread[d.Index]
				res := rangeResult{Source: tableSum(d.Source), Target: tableSum(d.Target), At: time.Now().UTC()}
				results[j] = res
				kept = append(kept, keptResult{table: jobs[j].run.name, i: jobs[j].i, res: res})
			}
			if err := st.putResults(kept); err != nil {
				return fmt.Errorf("verify: store the results of %d ranges: %w", len(kept), err)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		err = parallel(ctx, pairs, len(spread), func(ctx context.Context, p sessionPair, k int) error {
			return finish(ctx, p, spread[k], results[spread[k]], false)
		})
		if err == nil {
			err = parallel(ctx, pairs, len(local), func(ctx context.Context, p sessionPair, k int) error {
				j := local[k]
				res, err := p.sum(ctx, jobs[j].run, jobs[j].run.plan.Key, jobs[j].run.ranges[jobs[j].i])
				if err != nil {
					return err
				}
				return finish(ctx, p, j, res, true)
			})
		}
	} else {
		err = parallel(ctx, pairs, len(jobs), func(ctx context.Context, p sessionPair, j int) error {
			r, i := jobs[j].run, jobs[j].i
			res, err := p.sum(ctx, r, r.plan.Key, r.ranges[i])
			if err != nil {
				return err
			}
			return finish(ctx, p, j, res, true)
		})
	}
	if err != nil {
		return nil, nil, err
	}

	// 4. Each table's count and checksum is the sum of its ranges'.
	slices.SortFunc(runs, func(a, b *tableRun) int { return strings.Compare(a.name, b.name) })
	checks := make([]Check, 0, 2*len(runs))
	results := make([]TableResult, 0, len(runs))
	for _, r := range runs {
		var s, t tableSum
		for _, res := range r.sums {
			s, t = s.add(res.Source), t.add(res.Target)
		}
		checks = append(checks,
			Check{Kind: "rows", Object: r.name,
				Source: strconv.FormatInt(s.Rows, 10), Target: strconv.FormatInt(t.Rows, 10), OK: s.Rows == t.Rows},
			Check{Kind: "checksum", Object: r.name, Source: s.Sum, Target: t.Sum, OK: s.Sum == t.Sum})
		sortRows(r.result.Rows)
		slices.SortFunc(r.result.Unsearched, func(a, b UnsearchedRange) int {
			return cmp.Compare(deref(a.Range.From), deref(b.Range.From))
		})
		results = append(results, r.result)
	}
	return checks, results, nil
}

func deref(p *int64) int64 {
	if p == nil {
		return -1 << 63
	}
	return *p
}

// parallel runs fn for 0..n-1, each on one of pairs, one call per pair at a
// time; it returns the first error.
func parallel(ctx context.Context, pairs []sessionPair, n int, fn func(context.Context, sessionPair, int) error) error {
	work := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(work)
		for i := range n {
			select {
			case work <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for _, p := range pairs {
		g.Go(func() error {
			for i := range work {
				if err := fn(gctx, p, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// sessionPair is a session on each side; a job's queries run on both at once.
type sessionPair struct {
	src, tgt *session
}

func (p sessionPair) close() {
	if p.src != nil {
		p.src.close()
	}
	if p.tgt != nil {
		p.tgt.close()
	}
}

// both runs fs on the source session and ft on the target's at the same
// time, and returns the first error, naming its side.
func (p sessionPair) both(fs, ft func() error) error {
	var terr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		terr = ft()
	}()
	serr := fs()
	<-done
	if serr != nil {
		return fmt.Errorf("source: %w", serr)
	}
	if terr != nil {
		return fmt.Errorf("target: %w", terr)
	}
	return nil
}

// sum counts and checksums one range of a table (the whole table with an
// empty key) on both sides.
func (p sessionPair) sum(ctx context.Context, r *tableRun, key string, kr KeyRange) (rangeResult, error) {
	var res rangeResult
	where := ""
	if key != "" {
		where = kr.where(key)
	}
	err := p.both(
		func() (err error) { res.Source, err = p.src.sum(ctx, r.src, where); return err },
		func() (err error) { res.Target, err = p.tgt.sum(ctx, r.tgt, where); return err })
	if err != nil {
		return res, fmt.Errorf("verify: checksum %s range %s: %w", r.name, kr, err)
	}
	return res, nil
}

// session is an extra connection of a side, reading under the side's
// exported snapshot.
type session struct {
	conn *pgx.Conn
	tx   pgx.Tx
}

func (s *side) session(ctx context.Context) (*session, error) {
	conn, err := connect(ctx, s.name, s.uri)
	if err != nil {
		return nil, err
	}
	ses := &session{conn: conn}
	ses.tx, err = beginSnapshot(ctx, conn)
	if err == nil {
		_, err = ses.tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+ident.Literal(s.snapshot))
	}
	if err != nil {
		ses.close()
		return nil, fmt.Errorf("verify: import %s snapshot: %w", s.name, err)
	}
	return ses, nil
}

// sum counts and checksums the rows of t that match where.
func (s *session) sum(ctx context.Context, t table, where string) (tableSum, error) {
	rangeOf := checksum.Range
	if t.tree {
		rangeOf = checksum.RangeTree
	}
	ts, err := rangeOf(ctx, s.tx, t.schema, t.name, where)
	return tableSum(ts), err
}

func (s *session) close() {
	closeConn(s.conn, s.tx)
}

// nullLogger is the logger of a Compare given none.
var nullLogger = hclog.NewNullLogger()
