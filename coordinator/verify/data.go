package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgcaravan/pgcaravan/shared/ident"
)

// sumQuery counts a table's rows and adds up a 64-bit hash of each row's
// text: a sum does not depend on row order, and numeric does not overflow.
// t.* is the whole row even when the table has a column named t. ONLY
// keeps an inheritance parent from counting its children's rows, which
// are compared as tables of their own.
const sumQuery = `SELECT count(*), coalesce(sum(('x' || substr(md5(t.*::text), 1, 16))::bit(64)::bigint::numeric), 0)::text
FROM ONLY %s t`

// tableSum is one side's row count and checksum of one table.
type tableSum struct {
	rows int64
	sum  string
}

// compareData counts and checksums, on both sides, every table that holds
// rows on both sides, but those in skip (a filter's exclude-table-data,
// checked by compareNoData). jobs tables are done at a time, largest first,
// each on a pair of sessions that imported the sides' snapshots.
func compareData(ctx context.Context, src, tgt *side, jobs int, skip map[string]bool) ([]Check, error) {
	var names []string
	for n, st := range src.tables {
		if skip[n] {
			continue
		}
		tt, ok := tgt.tables[n]
		// A table missing on one side, or of another kind, is reported by
		// the "table" check, and an unpopulated materialized view, which
		// cannot be read, by the "matview" check.
		if !ok || !st.hasRows() || st.kind != tt.kind || !st.populated || !tt.populated {
			continue
		}
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(src.tables[b].size, src.tables[a].size), strings.Compare(a, b))
	})

	srcSums := make([]tableSum, len(names))
	tgtSums := make([]tableSum, len(names))
	work := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(work)
		for i := range names {
			select {
			case work <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range min(jobs, len(names)) {
		g.Go(func() error {
			ss, err := src.session(gctx)
			if err != nil {
				return err
			}
			defer ss.close()
			ts, err := tgt.session(gctx)
			if err != nil {
				return err
			}
			defer ts.close()
			for i := range work {
				t := src.tables[names[i]]
				var terr error
				done := make(chan struct{})
				go func() {
					defer close(done)
					tgtSums[i], terr = ts.sum(gctx, t.schema, t.name)
				}()
				var serr error
				srcSums[i], serr = ss.sum(gctx, t.schema, t.name)
				<-done
				if serr != nil {
					return fmt.Errorf("verify: checksum source table %s: %w", names[i], serr)
				}
				if terr != nil {
					return fmt.Errorf("verify: checksum target table %s: %w", names[i], terr)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	order := make([]int, len(names))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	checks := make([]Check, 0, 2*len(names))
	for _, i := range order {
		s, t := srcSums[i], tgtSums[i]
		checks = append(checks,
			Check{Kind: "rows", Object: names[i],
				Source: strconv.FormatInt(s.rows, 10), Target: strconv.FormatInt(t.rows, 10), OK: s.rows == t.rows},
			Check{Kind: "checksum", Object: names[i], Source: s.sum, Target: t.sum, OK: s.sum == t.sum})
	}
	return checks, nil
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

func (s *session) sum(ctx context.Context, schema, name string) (tableSum, error) {
	var ts tableSum
	err := s.tx.QueryRow(ctx, fmt.Sprintf(sumQuery, ident.Qualified(schema, name))).Scan(&ts.rows, &ts.sum)
	return ts, err
}

func (s *session) close() {
	closeConn(s.conn, s.tx)
}
