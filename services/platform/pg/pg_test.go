package pg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

func open(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_pg_")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Close waits for every acquired connection: a leaked transaction's never comes
		// back, and the test must fail rather than hang.
		closed := make(chan struct{})
		go func() { pool.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			t.Errorf("the pool did not close: a connection is still acquired")
		}
	})
	return pool
}

// A panic inside InTx, after fn has written and locked a row, ends the transaction: the
// write is gone, the connection is back in the pool, and the next transaction on the
// same row is not stuck behind the lock. (Before, the panic unwound with the transaction
// open, and its connection stayed "idle in transaction" holding the lock.)
func TestInTxRollsBackOnPanic(t *testing.T) {
	t.Parallel()
	pool := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pool.Exec(ctx, `CREATE TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL);
		INSERT INTO stock VALUES ('LAB-MUG', 10)`); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	func() {
		defer func() {
			if r := recover(); r != boom {
				t.Fatalf("recovered %v, want the handler's panic", r)
			}
		}()
		_ = pg.InTx(ctx, pool, func(ctx context.Context) error {
			if _, err := pg.Q(ctx, pool).Exec(ctx, `UPDATE stock SET on_hand = on_hand - 1 WHERE sku = 'LAB-MUG'`); err != nil {
				t.Fatal(err)
			}
			panic(boom)
		})
	}()
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Fatalf("%d connection(s) still acquired after the panic", n)
	}
	// The row lock is free: this would wait for the leaked transaction otherwise (the
	// deadline is far shorter than idle_in_transaction_session_timeout).
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	err := pg.InTx(wctx, pool, func(ctx context.Context) error {
		_, err := pg.Q(ctx, pool).Exec(ctx, `UPDATE stock SET on_hand = on_hand - 2 WHERE sku = 'LAB-MUG'`)
		return err
	})
	if err != nil {
		t.Fatalf("the next transaction on the row: %v", err)
	}
	var onHand int
	if err := pool.QueryRow(ctx, `SELECT on_hand FROM stock WHERE sku = 'LAB-MUG'`).Scan(&onHand); err != nil {
		t.Fatal(err)
	}
	if onHand != 8 {
		t.Fatalf("on_hand = %d, want 8: the panicking transaction's write must be rolled back", onHand)
	}
}

// Every connection of a pool PostgreSQL ends if it idles in a transaction: the second
// line behind InTx, for a transaction leaked some other way.
func TestIdleInTransactionTimeout(t *testing.T) {
	t.Parallel()
	pool := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got string
	if err := pool.QueryRow(ctx, `SELECT current_setting('idle_in_transaction_session_timeout')`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1min" { // PostgreSQL's rendering of pg.IdleInTxTimeout
		t.Fatalf("idle_in_transaction_session_timeout = %q, want 1min (%s)", got, pg.IdleInTxTimeout)
	}
}

// A connection to this machine's PostgreSQL is plain unless its URL asks for TLS: over
// loopback, TLS protects nothing and cost a tenth of orders' CPU. An explicit sslmode
// is kept.
func TestNoTLSOnLoopbackUnlessAsked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testenv.DB(t, testenv.Name("t_pg_"))
	ssl := func(url string) bool {
		t.Helper()
		pool, err := pg.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		var on bool
		if err := pool.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&on); err != nil {
			t.Fatal(err)
		}
		return on
	}
	if ssl(url) {
		t.Errorf("%s: the connection uses TLS over loopback", url)
	}
	pool := open(t)
	var serverSSL string
	if err := pool.QueryRow(ctx, `SHOW ssl`).Scan(&serverSSL); err != nil {
		t.Fatal(err)
	}
	if serverSSL != "on" {
		t.Skipf("this PostgreSQL has ssl=%s: the explicit sslmode=require half needs TLS on", serverSSL)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	if !ssl(url + sep + "sslmode=require") {
		t.Errorf("sslmode=require: the connection is plain")
	}
}

// The errors a consumer must retry until the database is back, and those it must not:
// read from a real server where the machine can produce them.
func TestIsTransient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Nothing listens on a port just freed: connection refused.
	down := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?connect_timeout=5", testenv.FreePort(t))
	conn, err := pgx.Connect(ctx, down)
	if err == nil {
		_ = conn.Close(ctx)
		t.Fatal("connected to a port nothing listens on")
	}
	if !pg.IsTransient(err) {
		t.Errorf("connection refused is not transient: %v", err)
	}

	pool := open(t)
	// A session terminated by the server mid-transaction (what a restart does to every
	// open connection): FATAL 57P01.
	victim, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Release()
	var pid int
	if err := victim.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	_, err = victim.Exec(ctx, `SELECT 1`)
	if err == nil {
		t.Fatal("a terminated session still answered")
	}
	if !pg.IsTransient(err) {
		t.Errorf("a session terminated by the server is not transient: %v", err)
	}

	// What a retry can never cure.
	if _, err := pool.Exec(ctx, `CREATE TABLE k (id int PRIMARY KEY); INSERT INTO k VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO k VALUES (1)`)
	if err == nil || pg.IsTransient(err) {
		t.Errorf("a unique violation is transient (or did not happen): %v", err)
	}
	_, err = pool.Exec(ctx, `SELEC 1`)
	if err == nil || pg.IsTransient(err) {
		t.Errorf("a syntax error is transient (or did not happen): %v", err)
	}

	// A real deadlock: two transactions each holding the row the other wants.
	if _, err := pool.Exec(ctx, `INSERT INTO k VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	locked := make(chan struct{}, 2)
	for _, order := range [][2]int{{1, 2}, {2, 1}} {
		go func() {
			errs <- pg.InTx(ctx, pool, func(ctx context.Context) error {
				q := pg.Q(ctx, pool)
				if _, err := q.Exec(ctx, `SELECT 1 FROM k WHERE id = $1 FOR UPDATE`, order[0]); err != nil {
					return err
				}
				locked <- struct{}{}
				for len(locked) < 2 && ctx.Err() == nil { // both hold their first row
					time.Sleep(10 * time.Millisecond)
				}
				_, err := q.Exec(ctx, `SELECT 1 FROM k WHERE id = $1 FOR UPDATE`, order[1])
				return err
			})
		}()
	}
	var deadlocks int
	for range 2 {
		if err := <-errs; err != nil {
			if !pg.IsTransient(err) {
				t.Errorf("a deadlock is not transient: %v", err)
			}
			deadlocks++
		}
	}
	if deadlocks != 1 {
		t.Errorf("%d of the two transactions failed, want the deadlock victim only", deadlocks)
	}
	if pg.IsTransient(nil) || pg.IsTransient(errors.New("no handler for this")) {
		t.Error("nil or a plain error is transient")
	}
}

// Later's statements commit with the transaction, in the order queued, after the ones
// sent directly; one that fails rolls back the whole transaction (the direct ones too)
// and InTx returns its error, still recognisable. A NOTIFY among them reaches listeners
// once the transaction commits, and not if it rolls back. Outside a transaction Later
// acts at once.
func TestLaterCommitsWithTheTransaction(t *testing.T) {
	t.Parallel()
	pool := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pool.Exec(ctx, `CREATE TABLE log (id bigserial PRIMARY KEY, what text UNIQUE NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	listener, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(ctx, `LISTEN wake`); err != nil {
		t.Fatal(err)
	}
	notifications := func() int {
		n := 0
		for {
			wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			_, err := listener.Conn().WaitForNotification(wctx)
			cancel()
			if err != nil {
				return n
			}
			n++
		}
	}
	rows := func() []string {
		r, err := pool.Query(ctx, `SELECT what FROM log ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(r, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	const insert = `INSERT INTO log (what) VALUES ($1) RETURNING pg_notify('wake', '')`

	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		for _, w := range []string{"later 1", "later 2"} {
			if err := pg.Later(ctx, pool, insert, w); err != nil {
				return err
			}
		}
		_, err := pg.Q(ctx, pool).Exec(ctx, `INSERT INTO log (what) VALUES ('direct')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rows()); got != "[direct later 1 later 2]" {
		t.Errorf("committed %s, want [direct later 1 later 2]", got)
	}
	if n := notifications(); n != 1 {
		t.Errorf("%d notifications for one transaction, want 1 (identical ones are delivered once)", n)
	}

	// A queued statement that fails (a duplicate key) fails the commit: nothing of the
	// transaction stays, the direct insert included, and no one is notified.
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		if _, err := pg.Q(ctx, pool).Exec(ctx, `INSERT INTO log (what) VALUES ('direct 2')`); err != nil {
			return err
		}
		_ = pg.Later(ctx, pool, insert, "later 3")
		return pg.Later(ctx, pool, insert, "later 1")
	})
	if !pg.IsUniqueViolation(err) {
		t.Fatalf("InTx returned %v, want the queued insert's unique violation", err)
	}
	if got := fmt.Sprint(rows()); got != "[direct later 1 later 2]" {
		t.Errorf("after the failed commit the table holds %s", got)
	}
	if n := notifications(); n != 0 {
		t.Errorf("%d notifications from a rolled-back transaction", n)
	}

	// Outside a transaction: at once.
	if err := pg.Later(ctx, pool, insert, "now"); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rows()); got != "[direct later 1 later 2 now]" {
		t.Errorf("without a transaction the table holds %s", got)
	}
	if n := notifications(); n != 1 {
		t.Errorf("%d notifications without a transaction, want 1", n)
	}
}
