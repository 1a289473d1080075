package precheck

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgcaravan/pgcaravan/report"
)

// forecast sums what the target must hold and samples the source's WAL
// rate, then estimates the WAL written during the copy.
func (r *run) forecast(ctx context.Context) {
	f := &r.report.Forecast
	f.AssumedCopyRate = r.cfg.CopyRate
	var tables int
	err := r.srcConn.QueryRow(ctx, `SELECT count(*),
		  coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
		  + CASE WHEN EXISTS (SELECT 1 FROM pg_largeobject_metadata) THEN pg_total_relation_size('pg_catalog.pg_largeobject') ELSE 0 END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'm') AND `+userRelations).Scan(&tables, &f.DataBytes)
	if err != nil {
		r.failed("forecast_space", r.src, "sum table and index sizes", err)
		return
	}
	f.EstimatedCopy = time.Duration(float64(f.DataBytes) / float64(r.cfg.CopyRate) * float64(time.Second)).Round(time.Second)
	r.space(ctx, tables)
	r.walRate(ctx)
}

// space says how much room the target needs. Free disk space cannot be
// read over SQL (no core function reports it, to any role), so it is
// always a warning with the number to compare against.
func (r *run) space(ctx context.Context, tables int) {
	dataDir, maxWAL := "", "unknown"
	if r.dstConn != nil {
		// data_directory is hidden from roles without pg_read_all_settings:
		// no row.
		_ = r.dstConn.QueryRow(ctx, `SELECT coalesce((SELECT setting FROM pg_settings WHERE name = 'data_directory'), ''),
			current_setting('max_wal_size')`).Scan(&dataDir, &maxWAL)
	}
	where := "the target's data directory (and any tablespace the source's tables use)"
	if dataDir != "" {
		where = fmt.Sprintf("the target's data directory %s (and any tablespace the source's tables use)", dataDir)
	}
	r.add(Check{Name: "forecast_space", Level: Warn,
		Message: fmt.Sprintf("the target needs about %s free for %d table(s) with their TOAST, indexes and large objects (their size on the source); free disk space cannot be read over SQL",
			report.Bytes(r.report.Forecast.DataBytes), tables),
		Hint: fmt.Sprintf("check with df on %s that more than that is free, plus room for WAL (max_wal_size is %s)", where, maxWAL)})
}

// walRate samples pg_current_wal_lsn() twice, WALSample apart.
func (r *run) walRate(ctx context.Context) {
	const name = "forecast_wal"
	f := &r.report.Forecast
	read := func() (pglogrepl.LSN, time.Time, error) {
		var s string
		var standby bool
		err := r.srcConn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
			(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).Scan(&standby, &s)
		if err != nil {
			return 0, time.Time{}, err
		}
		lsn, err := pglogrepl.ParseLSN(s)
		return lsn, time.Now(), err
	}
	a, at, err := read()
	if err != nil {
		r.failed(name, r.src, "read the WAL position", err)
		return
	}
	t := time.NewTimer(r.cfg.WALSample)
	select {
	case <-ctx.Done():
		t.Stop()
		return
	case <-t.C:
	}
	b, bt, err := read()
	if err != nil {
		r.failed(name, r.src, "read the WAL position", err)
		return
	}
	f.WALSample = bt.Sub(at)
	if b > a && f.WALSample > 0 {
		f.WALBytesPerSecond = float64(b-a) / f.WALSample.Seconds()
	}
	f.EstimatedWALBytes = int64(f.WALBytesPerSecond * f.EstimatedCopy.Seconds())
	took := "about " + f.EstimatedCopy.String()
	if f.EstimatedCopy < time.Second {
		took = "under a second"
	}
	msg := fmt.Sprintf("the source wrote %s/s of WAL over %s; at an assumed copy rate of %s/s (not measured) the copy takes %s, during which about %s of WAL is written",
		report.Bytes(int64(f.WALBytesPerSecond)), f.WALSample.Round(time.Millisecond), report.Bytes(f.AssumedCopyRate),
		took, report.Bytes(f.EstimatedWALBytes))
	if r.cfg.Follow {
		msg += "; the cdcnode spools that to its --dir until the target has applied it"
		r.add(Check{Name: name, Level: Pass, Message: msg,
			Hint: fmt.Sprintf("give the cdcnode's --dir well over %s free (writes on the source may peak above the sample)", report.Bytes(f.EstimatedWALBytes))})
		return
	}
	r.add(Check{Name: name, Level: Pass, Message: msg + "; an offline clone keeps none of it (no slot)"})
}
