package worker

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	pb "github.com/pgcaravan/pgcaravan/proto/pgcaravan/v1"
	vchecksum "github.com/pgcaravan/pgcaravan/shared/checksum"
	"github.com/pgcaravan/pgcaravan/shared/pguri"
)

// verifyRange runs a verify unit: it counts and checksums one range of one
// table on the source and on the target at the same time, each side in a
// read-only transaction under the Verify's exported snapshot when the unit
// carries one. It writes nothing (no done-marker either): delivering it
// again only reads again.
func (w *Worker) verifyRange(ctx context.Context, l *pb.Lease) (result, error) {
	u := l.GetUnit()
	v := u.GetVerify()
	if v == nil {
		return result{}, fmt.Errorf("verify unit %d has no range", u.GetId())
	}
	var from, to *int64
	if !v.GetKeyLowerUnbounded() {
		k := v.GetKeyLower()
		from = &k
	}
	if !v.GetKeyUpperUnbounded() {
		k := v.GetKeyUpper()
		to = &k
	}
	where := vchecksum.Where(v.GetKeyColumn(), from, to)
	var res result
	sides := []struct {
		uri      pguri.URI
		snapshot string
		sum      **pb.RangeSum
	}{{w.src, v.GetSourceSnapshot(), &res.verifySource}, {w.dst, v.GetTargetSnapshot(), &res.verifyTarget}}
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range sides {
		g.Go(func() error {
			sum, err := sumRange(gctx, s.uri, pguri.UnitApplication(u.GetId(), l.GetToken()), s.snapshot, v.GetSchema(), v.GetTable(), where)
			if err != nil {
				return fmt.Errorf("%s: checksum %s: %w", s.uri.Role(), u.GetDescription(), err)
			}
			*s.sum = &pb.RangeSum{Rows: sum.Rows, Sum: sum.Sum}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return result{}, err
	}
	res.rows = res.verifySource.GetRows()
	return res, nil
}

// sumRange opens a session with vchecksum.SessionParams, named after the
// lease so an expired one can be fenced, and sums the range in it.
func sumRange(ctx context.Context, uri pguri.URI, application, snapshot, schema, table, where string) (vchecksum.Sum, error) {
	cfg := uri.ConnConfig(application)
	for k, v := range vchecksum.SessionParams {
		if k != "application_name" {
			cfg.RuntimeParams[k] = v
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return vchecksum.Sum{}, fmt.Errorf("cannot connect: %s", pguri.RedactError(err, uri))
	}
	defer conn.Close(context.Background())
	tx, err := vchecksum.Begin(ctx, conn, snapshot)
	if err != nil {
		return vchecksum.Sum{}, err
	}
	defer tx.Rollback(context.Background())
	return vchecksum.Range(ctx, tx, schema, table, where)
}
