package worker

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// benchRows rows of mixedSQL's table are about 100 MB of COPY data.
const benchRows = 250_000

// mixedSQL is the bench's mixed-types table: bigint key, ~200-byte text,
// jsonb, timestamptz, numeric, ~100-byte bytea.
const mixedSQL = `CREATE TABLE mixed (id bigint PRIMARY KEY, t text, doc jsonb, at timestamptz, amount numeric, bin bytea);`

const mixedLoad = `INSERT INTO mixed
SELECT g, repeat(md5(g::text), 6) || ' ' || g, jsonb_build_object('g', g, 'tag', 't' || g %% 97, 'ok', g %% 2 = 0),
       '2020-01-01'::timestamptz + g * interval '1 second', g * 1.25, decode(repeat(md5(g::text), 3), 'hex')
FROM generate_series(1, %d) g;
ANALYZE mixed;`

// benchClusters starts a source with the mixed table and an empty target
// with the same table without its primary key (a clone builds indexes after
// the copy), both with durable settings, as the bench runs them.
func benchClusters(b *testing.B) (src, dst string) {
	b.Helper()
	ctx := b.Context()
	s := pgtest.Start(b, pgtest.Options{Durable: true})
	d := pgtest.Start(b, pgtest.Options{Durable: true})
	for _, c := range []*pgtest.Cluster{s, d} {
		if err := c.CreateDatabase(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
		if err := c.Exec(ctx, "bench", mixedSQL); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Exec(ctx, "bench", `ALTER TABLE mixed DROP CONSTRAINT mixed_pkey`); err != nil {
		b.Fatal(err)
	}
	if err := s.Exec(ctx, "bench", fmt.Sprintf(mixedLoad, benchRows)); err != nil {
		b.Fatal(err)
	}
	return s.URI("bench"), d.URI("bench")
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func connect(b *testing.B, uri string) *pgx.Conn {
	b.Helper()
	conn, err := pgx.Connect(b.Context(), uri)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// BenchmarkRelay copies the mixed table from one cluster to another the way
// a whole-table copy unit does (TRUNCATE, COPY FREEZE, binary), with
// several relay buffer sizes. It reports the stream's MB/s, and the CPU this
// process (the worker's side of the data path) spent: as a share of one
// core over the wall time, and per GB moved.
//
//	go test -run '^$' -bench Relay -benchtime 5x ./worker
func BenchmarkRelay(b *testing.B) {
	srcURI, dstURI := benchClusters(b)
	const (
		copyTo   = `COPY (SELECT id, t, doc, at, amount, bin FROM ONLY "public"."mixed") TO STDOUT WITH (FORMAT binary)`
		copyFrom = `COPY "public"."mixed" (id, t, doc, at, amount, bin) FROM STDIN WITH (FORMAT binary, FREEZE)`
	)
	for _, size := range []int{0, 64 << 10, relayBuffer, 1 << 20} {
		b.Run(fmt.Sprintf("buffer=%dKiB", size>>10), func(b *testing.B) {
			ctx := b.Context()
			src, dst := connect(b, srcURI), connect(b, dstURI)
			var bytes int64
			var cpu, wall time.Duration
			for b.Loop() {
				if _, err := src.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
					b.Fatal(err)
				}
				if _, err := dst.Exec(ctx, "BEGIN; TRUNCATE ONLY mixed"); err != nil {
					b.Fatal(err)
				}
				count := &countingWriter{prog: &progress{}, binary: true}
				cpu0, t0 := cpuTime(b), time.Now()
				rows, err := relay(ctx, src.PgConn(), dst.PgConn(), copyTo, copyFrom, count, size)
				cpu, wall = cpu+cpuTime(b)-cpu0, wall+time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				if rows != benchRows {
					b.Fatalf("copied %d rows, want %d", rows, benchRows)
				}
				if _, err := dst.Exec(ctx, "COMMIT"); err != nil {
					b.Fatal(err)
				}
				if _, err := src.Exec(ctx, "COMMIT"); err != nil {
					b.Fatal(err)
				}
				bytes += count.n
			}
			b.SetBytes(bytes / int64(b.N))
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%")
			b.ReportMetric(cpu.Seconds()*1000/(float64(bytes)/(1<<30)), "cpu-ms/GB")
		})
	}
}

// BenchmarkRangeScan reads the mixed table on the source in 4 parts, as the
// units of a split table do, by CTID ranges and by key ranges, against one
// whole-table read: what each way of splitting costs the source.
//
//	go test -run '^$' -bench RangeScan -benchtime 5x ./worker
func BenchmarkRangeScan(b *testing.B) {
	srcURI, _ := benchClusters(b)
	src := connect(b, srcURI)
	var pages int64
	if err := src.QueryRow(b.Context(), `SELECT pg_relation_size('mixed') / current_setting('block_size')::int`).Scan(&pages); err != nil {
		b.Fatal(err)
	}
	const sel = `COPY (SELECT id, t, doc, at, amount, bin FROM ONLY mixed%s) TO STDOUT WITH (FORMAT binary)`
	ranges := map[string][]string{"whole": {""}}
	for i := int64(0); i < 4; i++ {
		lo, hi := i*pages/4, (i+1)*pages/4
		where := fmt.Sprintf(" WHERE ctid >= '(%d,0)'::tid AND ctid < '(%d,0)'::tid", lo, hi)
		if i == 3 {
			where = fmt.Sprintf(" WHERE ctid >= '(%d,0)'::tid", lo)
		}
		ranges["ctid"] = append(ranges["ctid"], where)
		klo, khi := i*benchRows/4, (i+1)*benchRows/4
		where = fmt.Sprintf(" WHERE id >= '%d'::int8 AND id < '%d'::int8", klo, khi)
		if i == 3 {
			where = fmt.Sprintf(" WHERE id >= '%d'::int8", klo)
		}
		ranges["key"] = append(ranges["key"], where)
	}
	for _, name := range []string{"whole", "ctid", "key"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				var rows int64
				for _, where := range ranges[name] {
					tag, err := src.PgConn().CopyTo(b.Context(), io.Discard, fmt.Sprintf(sel, where))
					if err != nil {
						b.Fatal(err)
					}
					rows += tag.RowsAffected()
				}
				if rows != benchRows {
					b.Fatalf("%s: %d rows, want %d", name, rows, benchRows)
				}
			}
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
