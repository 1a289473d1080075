package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcaravan/pgcaravan/shared/pgtest"
)

// Dataset names; each is a database of the same name on the source cluster.
const (
	datasetPgbench = "pgbench"
	datasetMixed   = "mixed"
	datasetNoPK    = "nopk"
	datasetLobs    = "lobs"
)

var allDatasets = []string{datasetPgbench, datasetMixed, datasetNoPK, datasetLobs}

// datasetMethods are the only methods that run on a dataset, where not all do: the
// physical reference copies tables only, and the lobs dataset measures what copies large
// objects one by one (pgcaravan's embedded clone is enough of pgcaravan for that).
var datasetMethods = map[string][]string{
	datasetLobs: {methodDump, methodPgcopydb, methodPgcaravan},
}

// runsOn says whether method m runs on dataset d.
func runsOn(d, m string) bool {
	only, ok := datasetMethods[d]
	return !ok || slices.Contains(only, m)
}

// sizes are the dataset sizes of a preset.
type sizes struct {
	PgbenchScale int
	MixedRows    int
	NoPKRows     int
	// SmallLobs is the lobs dataset's count of small large objects; it also has
	// bigLobs objects of bigLobMB each.
	SmallLobs int
}

// The lobs dataset's MB-sized large objects, the same in every preset.
const (
	bigLobs  = 4
	bigLobMB = 4
)

// mixedSQL makes the mixed-types table: a bigint key, a text of 180 to 220 bytes, a jsonb
// document, a timestamptz, a numeric and a 100-byte bytea, with two secondary indexes (one
// on an expression over the jsonb). Every value is a function of the row number; rows are
// made on the server.
const mixedSQL = `
CREATE TABLE public.mixed (
    id         bigint PRIMARY KEY,
    label      text NOT NULL,
    doc        jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    amount     numeric(14,2) NOT NULL,
    payload    bytea NOT NULL
);
INSERT INTO public.mixed
SELECT g,
       substr(repeat(md5(g::text), 7), 1, 180 + (g %% 41)::int),
       jsonb_build_object('id', g,
                          'kind', (ARRAY['order', 'refund', 'payment', 'transfer'])[1 + (g %% 4)::int],
                          'tags', jsonb_build_array(g %% 7, g %% 11, g %% 13),
                          'score', (g %% 1000) / 10.0,
                          'active', g %% 2 = 0),
       timestamptz '2020-01-01 00:00:00+00' + g * interval '7 seconds',
       ((g::bigint * 7919) %% 100000000) / 100.0,
       decode(repeat(md5(g::text), 6) || left(md5((g + 1)::text), 8), 'hex')
FROM generate_series(1, %d) AS g;
CREATE INDEX mixed_created_at_idx ON public.mixed (created_at);
CREATE INDEX mixed_kind_amount_idx ON public.mixed ((doc ->> 'kind'), amount);
`

// noPKSQL makes a table without a primary key, or any index.
const noPKSQL = `
CREATE TABLE public.readings (
    device_id integer NOT NULL,
    read_at   timestamptz NOT NULL,
    value     double precision NOT NULL,
    note      text
);
INSERT INTO public.readings
SELECT (g %% 5000)::int,
       timestamptz '2021-01-01 00:00:00+00' + g * interval '1 second',
       sin(g) * 1000,
       'reading ' || md5(g::text)
FROM generate_series(1, %d) AS g;
`

// lobsSQL makes a table of documents whose bodies are large objects: small ones of 32
// to 2,048 bytes of text, then a few MB-sized ones of incompressible bytes (chained
// sha256 digests). Every object is a function of its number; all are made on the server.
const lobsSQL = `
CREATE TABLE public.documents (
    id   bigint PRIMARY KEY,
    name text NOT NULL,
    body oid NOT NULL
);
INSERT INTO public.documents
SELECT g, 'doc-' || g, lo_from_bytea(0, convert_to(repeat(md5(g::text), 1 + (g %% 64)::int), 'UTF8'))
FROM generate_series(1, %[1]d) AS g;
INSERT INTO public.documents
SELECT %[1]d + b, 'big-' || b,
       lo_from_bytea(0, (SELECT string_agg(sha256(int8send(b::bigint * 1000000000 + i)), ''::bytea ORDER BY i)
                         FROM generate_series(1, %[3]d * 1048576 / 32) AS i))
FROM generate_series(1, %[2]d) AS b;
`

// generate creates dataset name on the source cluster and fills it, then VACUUM ANALYZE
// (hint bits set and statistics present, as in a live database) and CHECKPOINT, so that
// no copy pays for the load.
func generate(ctx context.Context, src *pgtest.Cluster, t tools, name string, sz sizes, logDir string) (Dataset, error) {
	d := Dataset{Name: name}
	start := time.Now()
	if err := src.CreateDatabase(ctx, name); err != nil {
		return d, err
	}
	switch name {
	case datasetPgbench:
		d.Description = fmt.Sprintf("pgbench -i -s %d (init steps dtGvp: rows generated on the server)", sz.PgbenchScale)
		// G generates the rows on the server, which is much faster than the default g and
		// gives the same rows.
		p := newProcess(ctx, "pgbench -i", filepath.Join(logDir, "generate-pgbench.log"), t.pgbench,
			"-i", "-s", strconv.Itoa(sz.PgbenchScale), "-I", "dtGvp", "-q",
			"-h", "127.0.0.1", "-p", strconv.Itoa(src.Port()), "-U", "postgres", name)
		if err := p.start(); err != nil {
			return d, err
		}
		if err := p.wait(); err != nil {
			return d, err
		}
	case datasetMixed:
		d.Description = fmt.Sprintf("%d rows of mixed types (bigint key, ~200-byte text, jsonb, timestamptz, numeric, 100-byte bytea), 2 secondary indexes", sz.MixedRows)
		if err := src.Exec(ctx, name, fmt.Sprintf(mixedSQL, sz.MixedRows)); err != nil {
			return d, fmt.Errorf("generate %s: %w", name, err)
		}
	case datasetNoPK:
		d.Description = fmt.Sprintf("%d rows in a table without primary key or index", sz.NoPKRows)
		if err := src.Exec(ctx, name, fmt.Sprintf(noPKSQL, sz.NoPKRows)); err != nil {
			return d, fmt.Errorf("generate %s: %w", name, err)
		}
	case datasetLobs:
		d.Description = fmt.Sprintf("%d large objects of 32 B to 2 KB and %d of %d MB, referenced from a table", sz.SmallLobs, bigLobs, bigLobMB)
		if err := src.Exec(ctx, name, fmt.Sprintf(lobsSQL, sz.SmallLobs, bigLobs, bigLobMB)); err != nil {
			return d, fmt.Errorf("generate %s: %w", name, err)
		}
	default:
		return d, fmt.Errorf("unknown dataset %q", name)
	}
	if err := src.Exec(ctx, name, "VACUUM ANALYZE;\nCHECKPOINT;"); err != nil {
		return d, fmt.Errorf("vacuum %s: %w", name, err)
	}
	d.GenerateSeconds = time.Since(start).Seconds()
	if err := measure(ctx, src.URI(name), &d); err != nil {
		return d, err
	}
	return d, nil
}

// userTables selects the ordinary tables (leaf partitions included) outside the system
// schemas, largest first.
const userTables = `
SELECT format('%I.%I', n.nspname, c.relname), c.reltuples::bigint,
       pg_table_size(c.oid), pg_indexes_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY pg_table_size(c.oid) DESC, 1`

// measure fills d's tables and sizes from the source database.
func measure(ctx context.Context, uri string, d *Dataset) error {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return fmt.Errorf("measure %s: %w", d.Name, err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, userTables)
	if err != nil {
		return fmt.Errorf("measure %s: %w", d.Name, err)
	}
	for rows.Next() {
		var t TableSize
		if err := rows.Scan(&t.Name, &t.Rows, &t.DataBytes, &t.IndexBytes); err != nil {
			return fmt.Errorf("measure %s: %w", d.Name, err)
		}
		d.Tables = append(d.Tables, t)
		d.Rows += t.Rows
		d.DataBytes += t.DataBytes
		d.IndexBytes += t.IndexBytes
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("measure %s: %w", d.Name, err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&d.DatabaseBytes); err != nil {
		return fmt.Errorf("measure %s: %w", d.Name, err)
	}
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_largeobject_metadata),
		(SELECT coalesce(sum(octet_length(data)), 0) FROM pg_largeobject)::bigint`).Scan(&d.LargeObjects, &d.LargeObjectBytes)
	if err != nil {
		return fmt.Errorf("measure %s: large objects: %w", d.Name, err)
	}
	return nil
}

// serverVersion is the source server's version string.
func serverVersion(ctx context.Context, uri string) (string, error) {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, "SELECT version()").Scan(&v)
	return v, err
}
