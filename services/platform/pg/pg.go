// Package pg is the shop's PostgreSQL kit: a pgx pool, goose migrations from an embedded
// FS (Provider API, no globals, so one process can migrate many databases), and the unit
// of work carried in the context so a message handler's inbox row, its effect and its
// outbox rows commit together.
package pg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// Querier is what store code needs: satisfied by *pgxpool.Pool, pgx.Tx and *Unit.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	// SendBatch sends several statements in one round trip; they run in order.
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// IdleInTxTimeout is the idle_in_transaction_session_timeout of every connection Open
// makes (unless the URL sets its own).
const IdleInTxTimeout = "60s"

// Open connects a pool and waits (bounded by ctx) until the database answers, so a
// service started before PostgreSQL is ready simply waits rather than crashing.
func Open(ctx context.Context, url string, opts ...func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	// The second line behind InTx's rollback on every path: PostgreSQL itself ends a
	// session left idle inside a transaction, so a leaked transaction cannot hold its
	// locks (stock rows, advisory locks, a saga row) and its pooled connection forever.
	// A minute is far longer than any transaction here waits between statements (the
	// outbox relay's, waiting for publisher confirms, is bounded by 10 s).
	if _, set := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = IdleInTxTimeout
	}
	plainOnLoopback(url, &cfg.ConnConfig.Config)
	for _, o := range opts {
		o(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	backoff := 100 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = pool.Ping(pctx)
		cancel()
		if err == nil {
			return pool, nil
		}
		select {
		case <-ctx.Done():
			pool.Close()
			return nil, fmt.Errorf("ping %s: %w", cfg.ConnConfig.Database, errors.Join(err, ctx.Err()))
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// plainOnLoopback drops TLS from a connection to this machine's PostgreSQL when the URL
// does not ask for it: libpq's default, sslmode=prefer, encrypts whenever the server
// can (Debian's PostgreSQL can), and over loopback that protects nothing — the bytes
// never leave the machine — while it cost a tenth of orders' CPU (TLS writes in pgx's
// Exec, measured in the first profile). A URL that says sslmode=… is left as it is, and
// so is any other host.
func plainOnLoopback(url string, cc *pgconn.Config) {
	if strings.Contains(url, "sslmode=") || cc.TLSConfig == nil {
		return
	}
	if cc.Host != "localhost" && !strings.HasPrefix(cc.Host, "/") {
		if ip := net.ParseIP(cc.Host); ip == nil || !ip.IsLoopback() {
			return
		}
	}
	cc.TLSConfig = nil
	var fallbacks []*pgconn.FallbackConfig
	for _, f := range cc.Fallbacks {
		if f.TLSConfig == nil && f.Host == cc.Host {
			continue // the plain twin of the TLS attempt: now the primary itself
		}
		fallbacks = append(fallbacks, f)
	}
	cc.Fallbacks = fallbacks
}

// Migrate applies every pending goose migration in fsys (the *.sql files at its root),
// recording versions in table (different kits can share a database with different tables).
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, table string) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	store, err := database.NewStore(database.DialectPostgres, table)
	if err != nil {
		return fmt.Errorf("goose store: %w", err)
	}
	// Several processes may migrate one database at once (every service migrates the
	// shared lab database; N instances of a service share theirs): a session-level
	// advisory lock makes them take turns instead of colliding on CREATE TABLE.
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("goose locker: %w", err)
	}
	p, err := goose.NewProvider("", db, fsys, goose.WithStore(store), goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("goose provider: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

type txKey struct{}

// InTx runs fn inside one transaction carried in the context: store code that calls Q
// with that context joins it. A nested InTx joins the outer transaction. The transaction
// commits when fn returns nil and rolls back otherwise, a panic too (it rolls back, then
// goes on unwinding); functions registered with AfterCommit run only after a successful
// commit. Statements queued with Later are sent with COMMIT, in one round trip, after
// fn returns nil; if one fails, nothing commits. The transaction is a Unit: its BEGIN
// travels with its first statement.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txKey{}).(*Unit); ok {
		return fn(ctx)
	}
	u := Begin(pool)
	// Every path ends the transaction, a panic in fn included: without this a panic
	// unwound through here (to bus.Recover, outside) with the transaction open, and its
	// pooled connection stayed "idle in transaction" holding every lock fn had taken.
	// After a commit, Rollback does nothing.
	defer u.Rollback(context.WithoutCancel(ctx))
	if err := fn(u.Context(ctx)); err != nil {
		return err
	}
	return u.Commit(ctx)
}

// Q returns the transaction in ctx, or the pool when there is none.
func Q(ctx context.Context, pool *pgxpool.Pool) Querier {
	if u, ok := ctx.Value(txKey{}).(*Unit); ok {
		return u
	}
	return pool
}

// InTxNow reports whether ctx carries a transaction.
func InTxNow(ctx context.Context) bool {
	_, ok := ctx.Value(txKey{}).(*Unit)
	return ok
}

// Later queues a write whose result the caller does not need (an insert, an update
// whose row count does not matter) to be sent with the COMMIT of the transaction in
// ctx, together with every other queued statement, in one round trip (a pgx.Batch)
// instead of one each. A handler that records its effect, its step and its outgoing
// events this way waits for the database once for all of them and the commit.
//
// The statement still commits or rolls back with the transaction: if it fails, InTx
// returns its error and nothing commits, exactly as if it had failed at once; only the
// error arrives later, from InTx. Queued statements run in the order queued, after every
// statement sent directly, so a read later in the same transaction does not see their
// effect: use Later only for writes nothing in the transaction reads back. Without a
// transaction in ctx the statement runs at once.
func Later(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) error {
	if u, ok := ctx.Value(txKey{}).(*Unit); ok {
		u.Later(sql, args...)
		return nil
	}
	_, err := pool.Exec(ctx, sql, args...)
	return err
}

// AfterCommit registers f to run after the transaction in ctx commits. Without a
// transaction f runs at once. This is how "publish after commit" (outbox off) is built:
// the dual write the outbox exists to remove.
func AfterCommit(ctx context.Context, f func(context.Context)) {
	if u, ok := ctx.Value(txKey{}).(*Unit); ok {
		u.AfterCommit(f)
		return
	}
	f(ctx)
}

// IsUniqueViolation reports whether err is a unique-constraint violation.
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// LockKeySQL is LockKey's statement ($1: the key), for a store that sends it in a batch
// with the read the lock guards (one round trip instead of two).
const LockKeySQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`

// LockKey takes a transaction-scoped advisory lock on a hash of key, serialising every
// transaction that locks the same key until it commits or rolls back. It needs no extra
// table; a hash collision only makes two unrelated keys wait for each other, it never
// mixes them up. It must be called inside InTx: outside a transaction the lock would be
// released as soon as it is taken.
func LockKey(ctx context.Context, pool *pgxpool.Pool, key string) error {
	if !InTxNow(ctx) {
		return fmt.Errorf("lock %s: not in a transaction", key)
	}
	if _, err := Q(ctx, pool).Exec(ctx, LockKeySQL, key); err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	return nil
}
