package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Unit is one transaction on one pooled connection, shaped to wait for the database as
// few times as it can (each wait is a round trip: a context switch in PostgreSQL and in
// the service, the main cost of a small transaction on this lab — see DESIGN §12):
//
//   - BEGIN is not sent on its own: it goes in the same round trip as the transaction's
//     first statement (a pgx.Batch of the two);
//   - statements queued with Later go with COMMIT, in one round trip, and a transaction
//     that only queued writes is BEGIN, its writes and COMMIT in a single one;
//   - nothing is sent, and no connection taken, until there is something to send.
//
// A handler that claims its inbox row, reads, and queues its effect and its outbox rows
// waits three times, where BEGIN, each statement and COMMIT apart waited five times.
// The guarantees are the same: every statement runs in the one transaction, in the order
// sent, and a failure anywhere commits nothing.
//
// Why not a pgx.Tx: pgx's Batch.BeginTx saves the BEGIN round trip, but a pgx.Tx cannot
// send its COMMIT in a batch with other statements (its Rollback would then send a
// needless ROLLBACK), so the Unit drives the connection itself and asks PostgreSQL
// (the connection's transaction status) whether a transaction is still open.
//
// A Unit is used by one goroutine at a time (as a pgx.Tx is). InTx is the usual way in;
// Begin is for code that must commit with a context of its own (the outbox relay).
type Unit struct {
	pool        *pgxpool.Pool
	conn        *pgxpool.Conn // nil until the first statement
	begun       bool          // BEGIN has been sent
	done        bool          // committed or rolled back: the connection is back in the pool
	afterCommit []func(context.Context)
	later       pgx.Batch // Later's statements, sent with COMMIT
}

// Begin starts a unit of work on pool; nothing is sent yet. End it with Commit or
// Rollback (Rollback after Commit does nothing, so `defer u.Rollback(ctx)` is safe).
func Begin(pool *pgxpool.Pool) *Unit { return &Unit{pool: pool} }

// Context returns ctx carrying u: Q, Later, AfterCommit and InTx join u through it.
func (u *Unit) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, txKey{}, u)
}

var errEnded = errors.New("pg: the transaction has ended")

// acquire takes the unit's connection the first time it needs one.
func (u *Unit) acquire(ctx context.Context) error {
	if u.done {
		return errEnded
	}
	if u.conn != nil {
		return nil
	}
	c, err := u.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	u.conn = c
	return nil
}

// withBegin sends BEGIN and b's statements in one batch and returns the results of b's
// statements (BEGIN's is read here). The unit counts as begun from the moment BEGIN is
// sent: if the batch fails, Rollback asks the connection whether a transaction is open.
func (u *Unit) withBegin(ctx context.Context, queued []*pgx.QueuedQuery) pgx.BatchResults {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(queued)+1)}
	b.Queue("BEGIN")
	b.QueuedQueries = append(b.QueuedQueries, queued...)
	u.begun = true
	br := u.conn.SendBatch(ctx, b)
	_, _ = br.Exec() // BEGIN; an error sticks to br and is what its next result returns
	return br
}

// Exec runs sql in the transaction.
func (u *Unit) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := u.acquire(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	if u.begun {
		return u.conn.Exec(ctx, sql, args...)
	}
	br := u.withBegin(ctx, []*pgx.QueuedQuery{{SQL: sql, Arguments: args}})
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query runs sql in the transaction; the rows must be closed (or read to the end) before
// the next statement, as with pgx.
func (u *Unit) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := u.acquire(ctx); err != nil {
		return nil, err
	}
	if u.begun {
		return u.conn.Query(ctx, sql, args...)
	}
	br := u.withBegin(ctx, []*pgx.QueuedQuery{{SQL: sql, Arguments: args}})
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return rows, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs sql in the transaction and scans its first row.
func (u *Unit) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if u.begun && !u.done {
		return u.conn.QueryRow(ctx, sql, args...)
	}
	rows, err := u.Query(ctx, sql, args...)
	return firstRow{rows: rows, err: err}
}

// SendBatch sends b's statements in one round trip, in the transaction.
func (u *Unit) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := u.acquire(ctx); err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	if u.begun {
		return u.conn.SendBatch(ctx, b)
	}
	return u.withBegin(ctx, b.QueuedQueries)
}

// Later queues sql to be sent with COMMIT (see the package's Later).
func (u *Unit) Later(sql string, args ...any) { u.later.Queue(sql, args...) }

// AfterCommit registers f to run once the unit has committed.
func (u *Unit) AfterCommit(f func(context.Context)) { u.afterCommit = append(u.afterCommit, f) }

// Commit sends the queued statements and COMMIT in one round trip (with BEGIN too if
// nothing was sent before), gives the connection back, then runs the AfterCommit
// functions. A unit that sent and queued nothing commits without a word to the database.
// If a queued statement fails, nothing commits and its error is returned.
func (u *Unit) Commit(ctx context.Context) error {
	if u.done {
		return errEnded
	}
	if u.conn == nil && u.later.Len() == 0 {
		u.done = true
		u.runAfterCommit(ctx)
		return nil
	}
	err := u.commit(ctx)
	u.Rollback(context.WithoutCancel(ctx)) // after a failure: end what is open, give the connection back
	if err != nil {
		return err
	}
	u.runAfterCommit(ctx)
	return nil
}

func (u *Unit) commit(ctx context.Context) error {
	if err := u.acquire(ctx); err != nil {
		return err
	}
	queued := u.later.QueuedQueries
	if len(queued) == 0 {
		tag, err := u.conn.Exec(ctx, "COMMIT")
		return commitResult(tag, err)
	}
	all := append(queued[:len(queued):len(queued)], &pgx.QueuedQuery{SQL: "COMMIT"})
	var br pgx.BatchResults
	if u.begun {
		br = u.conn.SendBatch(ctx, &pgx.Batch{QueuedQueries: all})
	} else {
		br = u.withBegin(ctx, all)
	}
	defer br.Close()
	for range queued {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("queued statement: %w", err)
		}
	}
	tag, err := br.Exec()
	if err := commitResult(tag, err); err != nil {
		return err
	}
	return br.Close()
}

// commitResult is COMMIT's outcome: PostgreSQL answers ROLLBACK, not an error, to the
// COMMIT of a transaction a failed statement had aborted.
func commitResult(tag pgconn.CommandTag, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("commit: %w", err)
	case tag.String() == "ROLLBACK":
		return fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback)
	}
	return nil
}

func (u *Unit) runAfterCommit(ctx context.Context) {
	for _, f := range u.afterCommit {
		f(context.WithoutCancel(ctx))
	}
}

// Rollback ends the transaction if one is open and gives the connection back; after
// Commit, or a second time, it does nothing. A connection whose state is in doubt (the
// ROLLBACK failed, a result is unread) is closed by the pool rather than reused.
func (u *Unit) Rollback(ctx context.Context) {
	if u.done {
		return
	}
	u.done = true
	if u.conn == nil {
		return
	}
	pc := u.conn.Conn().PgConn()
	if u.begun && !pc.IsClosed() && !pc.IsBusy() && pc.TxStatus() != 'I' {
		_, _ = u.conn.Exec(ctx, "ROLLBACK")
	}
	u.conn.Release() // pgxpool destroys a connection left busy or inside a transaction
	u.conn = nil
}

// batchRows are the rows of a statement sent in a batch with BEGIN: closing them reads
// the batch's end too, so the connection is free for the next statement.
type batchRows struct {
	pgx.Rows
	br       pgx.BatchResults
	closeErr error
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if r.br != nil {
		r.closeErr = r.br.Close()
		r.br = nil
	}
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.closeErr
}

// firstRow is pgx.Row over rows: the first row, or pgx.ErrNoRows.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r firstRow) Scan(dest ...any) error {
	if r.err != nil {
		if r.rows != nil {
			r.rows.Close()
		}
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
