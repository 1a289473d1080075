package apply

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Config tunes batching.
type Config struct {
	// Origin is the replication origin's name on the target.
	Origin string
	// MaxTxns and MaxChanges bound one target transaction.
	MaxTxns    int
	MaxChanges int
	// MaxDelay is how long an open target transaction waits for more
	// source transactions before it commits.
	MaxDelay time.Duration
	// Chunk is how many statements go to the server per round trip.
	Chunk int
}

// DefaultConfig is what the cdcnode runs with.
func DefaultConfig() Config {
	return Config{MaxTxns: 2000, MaxChanges: 20000, MaxDelay: 50 * time.Millisecond, Chunk: 2000}
}

// Record is one spooled pgoutput message.
type Record struct {
	LSN     uint64
	Payload []byte
}

// Source yields spooled records in order; Next blocks until one is durable.
type Source interface {
	Next(ctx context.Context) (Record, error)
}

// Hooks connect the applier to the node.
type Hooks struct {
	// EpochLSN is the LSN from which changes to a table are applied (its
	// snapshot epoch); older ones are already in its copied rows.
	EpochLSN func(schema, name string) pglogrepl.LSN
	// Endpos is the cutover's end (0: none yet).
	Endpos func() pglogrepl.LSN
	// Received is how far the stream has received.
	Received func() pglogrepl.LSN
	// Settled says whether every transaction received is durable in the
	// spool (so an idle reader has seen them all).
	Settled func() bool
	// Resumed is told the origin's position when a session starts: every
	// source transaction ending at or before it is already applied.
	Resumed func(origin pglogrepl.LSN)
	// Applied is called after every target commit.
	Applied func(Progress)
	// Reached is called once every transaction up to the endpos is applied.
	Reached func()
	// Relation returns a Relation message seen before the spool's oldest
	// record (the spool drops applied segments), or nil.
	Relation func(id uint32) *pglogrepl.RelationMessage
}

// Progress is what one target commit applied.
type Progress struct {
	// End is the end LSN of the last source transaction applied: the
	// origin's new position.
	End pglogrepl.LSN
	// RecordLSN is the spool LSN of that transaction's commit record.
	RecordLSN  uint64
	CommitTime time.Time
	Changes    int64
	Txns       int64
}

// errIdle ends a wait for more records.
var errIdle = errors.New("apply: idle")

// applier holds one target session's state.
type applier struct {
	cfg   Config
	conn  *pgx.Conn
	hooks Hooks

	origin    pglogrepl.LSN
	relations map[uint32]*relation
	raw       map[uint32]*pglogrepl.RelationMessage
	prepared  map[string]string

	// The open target transaction.
	open     bool
	batch    *pgconn.Batch
	queued   int
	changes  int
	txns     int
	last     Progress
	run      *insertRun
	skipping bool
	curFinal pglogrepl.LSN
	reached  bool

	// The batch the target is executing while the next one is built
	// (send), and the commit it ends with, reported once confirmed.
	inflight  *pgconn.MultiResultReader
	confirmed *Progress

	// The current wait for records (next).
	waitCtx    context.Context
	waitCancel context.CancelFunc
	waitFor    time.Duration

	// Held updates (coalesce.go).
	held      map[heldKey]*heldUpdate
	heldOrder []heldKey
	heldRels  map[uint32]int
}

// insertRun collects consecutive inserts into one relation.
type insertRun struct {
	rel    *relation
	values [][]byte
	rows   int
}

// Run applies from src on conn until ctx ends or an error. The session is
// set up here: replica role (no user triggers, no FK checks), fixed
// output settings, and the origin. It resumes after the origin's position.
func Run(ctx context.Context, conn *pgx.Conn, src Source, cfg Config, hooks Hooks) error {
	for _, s := range []string{
		"SET session_replication_role = replica",
		"SET synchronous_commit = on",
		"SET DateStyle = ISO", "SET IntervalStyle = postgres", "SET TimeZone = 'UTC'", "SET extra_float_digits = 3",
		"SET bytea_output = hex",
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("target: %s: %w", s, err)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, cfg.Origin); err != nil {
		return fmt.Errorf("target: set up replication origin %s: %w", cfg.Origin, err)
	}
	var origin *string
	if err := conn.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, true)::text`, cfg.Origin).Scan(&origin); err != nil {
		return fmt.Errorf("target: read replication origin %s: %w", cfg.Origin, err)
	}
	a := &applier{cfg: cfg, conn: conn, hooks: hooks, relations: map[uint32]*relation{},
		raw: map[uint32]*pglogrepl.RelationMessage{}, prepared: map[string]string{},
		held: map[heldKey]*heldUpdate{}, heldRels: map[uint32]int{}}
	if origin != nil {
		a.origin, _ = pglogrepl.ParseLSN(*origin)
	}
	if hooks.Resumed != nil {
		hooks.Resumed(a.origin)
	}
	defer a.stopWait()
	return a.loop(ctx, src)
}

func (a *applier) loop(ctx context.Context, src Source) error {
	for {
		// Read before waiting: if the source had sent past the endpos and
		// all of it was durable, an idle wait means all of it was read.
		end, settled := a.settled()
		rec, err := a.next(ctx, src)
		if errors.Is(err, errIdle) {
			if err := a.commit(ctx); err != nil {
				return err
			}
			if err := a.drain(ctx); err != nil {
				return err
			}
			a.checkReached(end, settled)
			continue
		}
		if err != nil {
			return err
		}
		msg, err := pglogrepl.Parse(rec.Payload)
		if err != nil {
			return fmt.Errorf("apply: spool record at %s: %w", pglogrepl.LSN(rec.LSN), err)
		}
		if err := a.handle(ctx, rec, msg); err != nil {
			return err
		}
	}
}

// next waits for a record; with a transaction open, only MaxDelay. The
// wait's context is kept across calls until it expires, since one per
// record was a tenth of the node's CPU: the source hands out a record it
// has before it looks at the context, so a deadline that passed while
// records kept coming only means the first gap ends the wait at once.
func (a *applier) next(ctx context.Context, src Source) (Record, error) {
	wait := a.cfg.MaxDelay
	if !a.open {
		wait = time.Second // wake up now and then to check the endpos
	}
	if a.waitCtx == nil || a.waitFor != wait {
		a.stopWait()
		a.waitCtx, a.waitCancel = context.WithTimeoutCause(ctx, wait, errIdle)
		a.waitFor = wait
	}
	rec, err := src.Next(a.waitCtx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(a.waitCtx), errIdle) {
		a.stopWait()
		return rec, errIdle
	}
	return rec, err
}

func (a *applier) stopWait() {
	if a.waitCancel != nil {
		a.waitCancel()
	}
	a.waitCtx, a.waitCancel = nil, nil
}

// settled says whether the source has sent past the endpos and every
// transaction received is durable in the spool.
func (a *applier) settled() (pglogrepl.LSN, bool) {
	end := a.hooks.Endpos()
	return end, end != 0 && a.hooks.Received() >= end && a.hooks.Settled()
}

// checkReached runs when the reader has been idle (everything durable when
// the wait began has been read) and reports the endpos once everything up
// to it is applied: settled held before the wait, for the same endpos, and
// no transaction is open.
func (a *applier) checkReached(end pglogrepl.LSN, settled bool) {
	if a.reached || !settled || a.open || a.hooks.Endpos() != end {
		return
	}
	a.reached = true
	a.hooks.Reached()
}

func (a *applier) handle(ctx context.Context, rec Record, msg pglogrepl.Message) error {
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		a.raw[m.RelationID] = m
		delete(a.relations, m.RelationID)
	case *pglogrepl.BeginMessage:
		a.curFinal = m.FinalLSN
		end := a.hooks.Endpos()
		switch {
		case m.FinalLSN < a.origin:
			a.skipping = true // applied before a restart
		case end != 0 && m.FinalLSN > end:
			// Past the cutover: apply nothing more.
			if err := a.commit(ctx); err != nil {
				return err
			}
			if err := a.drain(ctx); err != nil {
				return err
			}
			if !a.reached {
				a.reached = true
				a.hooks.Reached()
			}
			a.skipping = true
		default:
			a.skipping = false
		}
	case *pglogrepl.CommitMessage:
		if a.skipping {
			return nil
		}
		a.txns++
		a.last = Progress{End: m.TransactionEndLSN, RecordLSN: rec.LSN, CommitTime: m.CommitTime}
		if !a.open {
			// An empty transaction (all its changes were before their
			// table's epoch): still move the origin on.
			a.begin()
		}
		if a.txns >= a.cfg.MaxTxns || a.changes >= a.cfg.MaxChanges {
			return a.commit(ctx)
		}
	case *pglogrepl.InsertMessage:
		r, ok, err := a.target(ctx, m.RelationID)
		if err != nil || !ok {
			return err
		}
		return a.insert(ctx, r, m.Tuple)
	case *pglogrepl.UpdateMessage:
		r, ok, err := a.target(ctx, m.RelationID)
		if err != nil || !ok {
			return err
		}
		return a.update(ctx, r, m)
	case *pglogrepl.DeleteMessage:
		r, ok, err := a.target(ctx, m.RelationID)
		if err != nil || !ok {
			return err
		}
		mt, params, err := matchFrom(r, m.OldTuple, r.identity == 'f')
		if err != nil {
			return err
		}
		if err := a.flushHeldFor(ctx, r); err != nil {
			return err
		}
		return a.queue(ctx, deleteSQL(r, mt), params)
	case *pglogrepl.TruncateMessage:
		if a.skipping {
			return nil
		}
		var rels []*relation
		for _, id := range m.RelationIDs {
			r, ok, err := a.target(ctx, id)
			if err != nil {
				return err
			}
			if ok {
				rels = append(rels, r)
			}
		}
		if len(rels) > 0 {
			if err := a.flushHeldFor(ctx, nil); err != nil {
				return err
			}
			return a.queue(ctx, truncateSQL(rels, m.Option), nil)
		}
	}
	return nil
}

// target returns the relation a change applies to, and false when the
// change is to be skipped: its transaction was applied before, or it is
// older than its table's epoch.
func (a *applier) target(ctx context.Context, id uint32) (*relation, bool, error) {
	if a.skipping {
		return nil, false, nil
	}
	r, ok := a.relations[id]
	if !ok {
		m := a.raw[id]
		if m == nil && a.hooks.Relation != nil {
			m = a.hooks.Relation(id)
		}
		if m == nil {
			return nil, false, fmt.Errorf("apply: change to relation %d whose description was never received", id)
		}
		if err := a.drain(ctx); err != nil {
			return nil, false, err
		}
		var err error
		if r, err = describe(ctx, a.conn, m); err != nil {
			return nil, false, err
		}
		a.relations[id] = r
	}
	if a.hooks.EpochLSN != nil && a.curFinal < a.hooks.EpochLSN(r.schema, r.name) {
		return nil, false, nil // already in the rows copied under the table's epoch
	}
	return r, true, nil
}

func (a *applier) begin() {
	a.open = true
	a.batch = &pgconn.Batch{}
	a.batch.ExecParams("BEGIN", nil, nil, nil, nil)
	a.queued = 0
}

func (a *applier) insert(ctx context.Context, r *relation, t *pglogrepl.TupleData) error {
	if err := a.flushHeldFor(ctx, r); err != nil {
		return err
	}
	if a.run != nil && a.run.rel != r {
		if err := a.flushRun(ctx); err != nil {
			return err
		}
	}
	if a.run == nil {
		a.run = &insertRun{rel: r}
	}
	for i := range r.columns {
		var v []byte
		if i < len(t.Columns) && t.Columns[i].DataType != valNull {
			v = t.Columns[i].Data
		}
		a.run.values = append(a.run.values, v)
	}
	a.run.rows++
	a.changes++
	if a.run.rows >= a.maxRows(r) {
		return a.flushRun(ctx)
	}
	return nil
}

// maxRows keeps a multi-row INSERT under the protocol's 65535 parameters.
func (a *applier) maxRows(r *relation) int {
	return max(1, min(100, 65535/max(1, len(r.columns))))
}

// flushRun turns the pending inserts into multi-row INSERTs of 100, 10 and
// 1 rows, so few statements need preparing.
func (a *applier) flushRun(ctx context.Context) error {
	run := a.run
	if run == nil {
		return nil
	}
	a.run = nil
	n := len(run.rel.columns)
	off := 0
	for _, size := range []int{a.maxRows(run.rel), 10, 1} {
		for run.rows-off/n >= size && size > 0 {
			if err := a.queueStmt(ctx, insertSQL(run.rel, size), run.values[off:off+size*n]); err != nil {
				return err
			}
			off += size * n
		}
	}
	return nil
}

func (a *applier) update(ctx context.Context, r *relation, m *pglogrepl.UpdateMessage) error {
	full := r.identity == 'f'
	old := m.OldTuple
	if old == nil && r.coalesce {
		return a.hold(ctx, r, m.NewTuple)
	}
	if err := a.flushHeldFor(ctx, r); err != nil {
		return err
	}
	if old == nil {
		old = m.NewTuple // key unchanged: the new tuple's key finds the row
	}
	mt, where, err := matchFrom(r, old, full)
	if err != nil {
		return err
	}
	var set []int
	var params [][]byte
	for i, c := range r.columns {
		if i >= len(m.NewTuple.Columns) {
			break
		}
		v := m.NewTuple.Columns[i]
		if v.DataType == valUnchanged || c.identityAlways {
			// Unchanged TOAST is not sent; GENERATED ALWAYS identity
			// columns cannot be SET (and only change by a key change).
			continue
		}
		set = append(set, i)
		if v.DataType == valNull {
			params = append(params, nil)
		} else {
			params = append(params, v.Data)
		}
	}
	if len(set) == 0 {
		return nil
	}
	return a.queue(ctx, updateSQL(r, set, mt), append(params, where...))
}

// queue adds one change's statement to the open transaction.
func (a *applier) queue(ctx context.Context, sql string, params [][]byte) error {
	if err := a.flushRun(ctx); err != nil {
		return err
	}
	a.changes++
	return a.queueStmt(ctx, sql, params)
}

func (a *applier) queueStmt(ctx context.Context, sql string, params [][]byte) error {
	if !a.open {
		a.begin()
	}
	name, ok := a.prepared[sql]
	if !ok {
		name = "pgcaravan_" + strconv.Itoa(len(a.prepared)+1)
		if err := a.drain(ctx); err != nil {
			return err
		}
		if _, err := a.conn.PgConn().Prepare(ctx, name, sql, nil); err != nil {
			return fmt.Errorf("target: prepare %s: %w", sql, err)
		}
		a.prepared[sql] = name
	}
	a.batch.ExecPrepared(name, params, nil, nil)
	a.queued++
	if a.queued >= a.cfg.Chunk {
		return a.send(ctx)
	}
	return nil
}

// send ships the queued statements inside the open transaction, so a huge
// source transaction never sits whole in memory. It does not wait for
// them: the target executes one batch while the next is built, and drain
// reads its results before the session is used again.
func (a *applier) send(ctx context.Context) error {
	if a.queued == 0 && a.batch == nil {
		return nil
	}
	if err := a.drain(ctx); err != nil {
		return err
	}
	a.inflight = a.conn.PgConn().ExecBatch(ctx, a.batch)
	a.batch, a.queued = &pgconn.Batch{}, 0
	return nil
}

// drain waits for the batch in flight, then reports the commit it ended
// with: only a commit the target confirmed is ever reported applied. On an
// error the transaction is rolled back and the applier must start over from
// the origin (Run returns).
func (a *applier) drain(ctx context.Context) error {
	if a.inflight == nil {
		return nil
	}
	results, err := a.inflight.ReadAll()
	a.inflight = nil
	if err == nil {
		for _, r := range results {
			if r.Err != nil {
				err = r.Err
				break
			}
		}
	}
	if err != nil {
		a.confirmed = nil
		_, _ = a.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		a.open = false
		return fmt.Errorf("target: apply transaction ending before %s: %w", a.curFinal, err)
	}
	if p := a.confirmed; p != nil {
		a.confirmed = nil
		a.hooks.Applied(*p)
	}
	return nil
}

// commit ends the open target transaction, advancing the origin to the
// last source transaction in it.
func (a *applier) commit(ctx context.Context) error {
	if !a.open {
		return nil
	}
	if a.txns == 0 {
		// Only part of a source transaction so far: it stays open until
		// its commit arrives.
		return nil
	}
	if err := a.flushHeld(ctx); err != nil {
		return err
	}
	if err := a.flushRun(ctx); err != nil {
		return err
	}
	a.batch.ExecParams(`SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)`,
		[][]byte{[]byte(a.last.End.String()), []byte(a.last.CommitTime.UTC().Format(time.RFC3339Nano))}, nil, nil, nil)
	a.batch.ExecParams("COMMIT", nil, nil, nil, nil)
	a.queued += 2
	if err := a.send(ctx); err != nil {
		return err
	}
	a.open = false
	p := a.last
	p.Changes, p.Txns = int64(a.changes), int64(a.txns)
	a.origin = p.End
	a.changes, a.txns = 0, 0
	a.confirmed = &p // reported by drain once the target confirms it
	return nil
}
