package datagen

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// Schema is the schema that holds everything but one table; OtherSchema,
// with a non-ASCII name, holds that one.
const (
	Schema      = "caravan"
	OtherSchema = "çarşı"
)

// FirstLargeObject is the OID of the first large object; object i (from 1)
// has OID FirstLargeObject+i-1. Fixed OIDs make two runs equal.
const FirstLargeObject = 900_001

// Options size the generated data.
type Options struct {
	// BigRows is the number of rows in caravan.events; 0 means 1_000_000.
	BigRows int
	// LargeObjects is the number of large objects; 0 means 50, negative
	// means none.
	LargeObjects int
}

// fillChunk is the fewest rows of caravan.events given to one filling
// session; fillSessions is the most sessions that fill it at once.
const (
	fillChunk    = 100_000
	fillSessions = 4
)

// sessionParams keep generated values independent of the server's
// configuration (day arithmetic on timestamptz follows TimeZone) and skip
// waiting for WAL flushes: a failed run is thrown away, not recovered.
var sessionParams = map[string]string{
	"application_name":   "pgcaravan datagen",
	"TimeZone":           "UTC",
	"synchronous_commit": "off",
	"statement_timeout":  "0",
}

// Generate creates the sample schema in the existing, empty database at uri
// and fills it. It refuses a database that already has the schemas.
// A failed Generate leaves a partly filled database: use a fresh one.
func Generate(ctx context.Context, uri string, opts Options) error {
	if opts.BigRows <= 0 {
		opts.BigRows = 1_000_000
	}
	if opts.LargeObjects == 0 {
		opts.LargeObjects = 50
	}
	opts.LargeObjects = max(opts.LargeObjects, 0)

	conn, err := connect(ctx, uri)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()

	// 1. Refuse a database that has our schemas or large objects already.
	var found int
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_namespace WHERE nspname IN ($1, $2))
		+ (SELECT count(*) FROM pg_largeobject_metadata WHERE oid >= $3::bigint::oid AND oid < $4::bigint::oid)`,
		Schema, OtherSchema, FirstLargeObject, FirstLargeObject+opts.LargeObjects).Scan(&found)
	if err != nil {
		return fmt.Errorf("datagen: check that the database is empty: %w", err)
	}
	if found > 0 {
		return fmt.Errorf("datagen: database already has schema %q or %q or large objects from OID %d; Generate needs an empty database (create a new one)",
			Schema, OtherSchema, FirstLargeObject)
	}

	// 2. Everything but the big table's rows, in one transaction.
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, schemaSQL); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		if _, err := tx.Exec(ctx, largeObjectsSQL, FirstLargeObject, opts.LargeObjects); err != nil {
			return fmt.Errorf("create %d large objects: %w", opts.LargeObjects, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("datagen: %w", err)
	}

	// 3. The big table's rows, in ranges filled by parallel sessions.
	if err := fillEvents(ctx, uri, opts.BigRows); err != nil {
		return err
	}

	// 4. What is built on the big table once it is full: its keys and
	// indexes (faster than maintaining them row by row), the materialized
	// view, the comments.
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, afterFillSQL)
		return err
	}); err != nil {
		return fmt.Errorf("datagen: index caravan.events: %w", err)
	}

	// 5. Statistics, so a planner (ours included) sees realistic sizes.
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return fmt.Errorf("datagen: analyze: %w", err)
	}
	return nil
}

func connect(ctx context.Context, uri string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return nil, fmt.Errorf("datagen: connection string is not valid: %w", err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("datagen: connect: %w", err)
	}
	return conn, nil
}

// fillEvents inserts rows 1..rows of caravan.events, split into ranges of
// at least fillChunk rows over at most fillSessions sessions.
func fillEvents(ctx context.Context, uri string, rows int) error {
	sessions := min(fillSessions, (rows+fillChunk-1)/fillChunk)
	per := (rows + sessions - 1) / sessions
	g, gctx := errgroup.WithContext(ctx)
	for first := 1; first <= rows; first += per {
		last := min(first+per-1, rows)
		g.Go(func() error {
			conn, err := connect(gctx, uri)
			if err != nil {
				return err
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = conn.Close(ctx)
			}()
			if _, err := conn.Exec(gctx, eventsSQL, first, last); err != nil {
				return fmt.Errorf("datagen: fill caravan.events rows %d to %d: %w", first, last, err)
			}
			return nil
		})
	}
	return g.Wait()
}
