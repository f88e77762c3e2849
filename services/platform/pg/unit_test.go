package pg_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// countingConn counts the times the client sends to PostgreSQL. pgx writes everything
// it has to send before it waits for an answer in one Write, so each Write is one round
// trip.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// openCounting is a one-connection pool whose sends are counted.
func openCounting(t *testing.T) (*pgxpool.Pool, *atomic.Int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	writes := &atomic.Int64{}
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_pgunit_")), func(c *pgxpool.Config) {
		c.MaxConns = 1
		d := &net.Dialer{}
		c.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, writes}, nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, writes
}

// A handler's transaction, shaped as the shop's are (claim its inbox row, read, queue
// its effect and its outgoing event), waits for PostgreSQL three times: BEGIN goes with
// the claim, then the read, then the queued writes with COMMIT. A transaction that only queues writes waits once,
// and one that sends nothing never takes a connection. pgx.Tx with the same statements
// waited five times (BEGIN, claim, read, the queued batch, COMMIT).
func TestUnitRoundTrips(t *testing.T) {
	t.Parallel()
	pool, writes := openCounting(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pool.Exec(ctx, `CREATE TABLE inbox (id text PRIMARY KEY);
		CREATE TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL);
		CREATE TABLE outbox (id bigserial PRIMARY KEY, what text NOT NULL);
		INSERT INTO stock VALUES ('LAB-MUG', 10)`); err != nil {
		t.Fatal(err)
	}
	handle := func(id string) error {
		return pg.InTx(ctx, pool, func(ctx context.Context) error {
			q := pg.Q(ctx, pool)
			tag, err := q.Exec(ctx, `INSERT INTO inbox (id) VALUES ($1) ON CONFLICT DO NOTHING`, id)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			var onHand int
			if err := q.QueryRow(ctx, `SELECT on_hand FROM stock WHERE sku = $1 FOR UPDATE`, "LAB-MUG").Scan(&onHand); err != nil {
				return err
			}
			if err := pg.Later(ctx, pool, `UPDATE stock SET on_hand = $2 WHERE sku = $1`, "LAB-MUG", onHand-1); err != nil {
				return err
			}
			return pg.Later(ctx, pool, `INSERT INTO outbox (what) VALUES ($1)`, "reserved "+id)
		})
	}
	measure := func(f func() error) int64 {
		t.Helper()
		before := writes.Load()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		return writes.Load() - before
	}
	// The first run on the connection prepares each statement (pgx's statement cache):
	// one more round trip per batch the first time. Count the second.
	measure(func() error { return handle("m-0") })
	if n := measure(func() error { return handle("m-1") }); n != 3 {
		t.Errorf("a handler's transaction took %d round trips, want 3", n)
	}
	var onHand, events int
	if err := pool.QueryRow(ctx, `SELECT (SELECT on_hand FROM stock), (SELECT count(*) FROM outbox)`).Scan(&onHand, &events); err != nil {
		t.Fatal(err)
	}
	if onHand != 8 || events != 2 {
		t.Errorf("after two handled messages: on hand %d, events %d; want 8 and 2", onHand, events)
	}
	// A duplicate: the claim finds the row, nothing else is sent but the COMMIT.
	if n := measure(func() error { return handle("m-1") }); n != 2 {
		t.Errorf("a duplicate took %d round trips, want 2 (BEGIN with the claim, COMMIT)", n)
	}

	onlyLater := func() error {
		return pg.InTx(ctx, pool, func(ctx context.Context) error {
			return pg.Later(ctx, pool, `INSERT INTO outbox (what) VALUES ($1)`, "queued only")
		})
	}
	measure(onlyLater)
	if n := measure(onlyLater); n != 1 {
		t.Errorf("a transaction of queued writes took %d round trips, want 1", n)
	}
	if n := measure(func() error { return pg.InTx(ctx, pool, func(context.Context) error { return nil }) }); n != 0 {
		t.Errorf("an empty transaction took %d round trips, want 0", n)
	}
	if st := pool.Stat(); st.AcquiredConns() != 0 {
		t.Errorf("%d connections still acquired", st.AcquiredConns())
	}
}

// What can go wrong in a Unit leaves nothing half done and the connection clean for the
// next one: a failed first statement (its BEGIN went with it), a handler error, a
// statement that failed and was ignored (COMMIT then answers ROLLBACK), rows of the
// first statement read only in part, and use after the end.
func TestUnitFailuresCommitNothing(t *testing.T) {
	t.Parallel()
	pool, _ := openCounting(t) // one connection: a dirty one would fail the next step
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pool.Exec(ctx, `CREATE TABLE log (what text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM log`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	insert := `INSERT INTO log (what) VALUES ($1)`

	// The first statement fails: its error is the handler's; nothing commits.
	err := pg.InTx(ctx, pool, func(ctx context.Context) error {
		_, err := pg.Q(ctx, pool).Exec(ctx, `INSERT INTO nowhere VALUES (1)`)
		return err
	})
	if err == nil {
		t.Fatal("a statement on a missing table succeeded")
	}
	// The handler fails after writing.
	boom := errors.New("boom")
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		if _, err := pg.Q(ctx, pool).Exec(ctx, insert, "written then failed"); err != nil {
			return err
		}
		_ = pg.Later(ctx, pool, insert, "queued then failed")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx returned %v, want the handler's error", err)
	}
	// A failed statement the handler ignores: PostgreSQL has aborted the transaction, so
	// COMMIT answers ROLLBACK, which must not pass for a commit.
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		q := pg.Q(ctx, pool)
		if _, err := q.Exec(ctx, insert, "before the ignored error"); err != nil {
			return err
		}
		_, _ = q.Exec(ctx, insert, "before the ignored error") // duplicate key, ignored
		return nil
	})
	if !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("the commit of an aborted transaction returned %v, want pgx.ErrTxCommitRollback", err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d rows committed by failed transactions", n)
	}

	// The first statement's rows, read in part, then more statements and a commit.
	if _, err := pool.Exec(ctx, `INSERT INTO log VALUES ('a'), ('b'), ('c')`); err != nil {
		t.Fatal(err)
	}
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		q := pg.Q(ctx, pool)
		rows, err := q.Query(ctx, `SELECT what FROM log ORDER BY what`)
		if err != nil {
			return err
		}
		if !rows.Next() {
			return errors.New("no first row")
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, insert, "d"); err != nil {
			return err
		}
		var missing string
		if err := q.QueryRow(ctx, `SELECT what FROM log WHERE what = 'zzz'`).Scan(&missing); !errors.Is(err, pgx.ErrNoRows) {
			return errors.New("QueryRow of no row did not say pgx.ErrNoRows")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 4 {
		t.Errorf("%d rows, want 4", n)
	}
	// A first statement by QueryRow finding nothing.
	err = pg.InTx(ctx, pool, func(ctx context.Context) error {
		var w string
		return pg.Q(ctx, pool).QueryRow(ctx, `SELECT what FROM log WHERE what = 'zzz'`).Scan(&w)
	})
	if !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("QueryRow of no row as the first statement returned %v, want pgx.ErrNoRows", err)
	}

	// After its end a unit refuses statements instead of running them outside a
	// transaction.
	u := pg.Begin(pool)
	if _, err := u.Exec(ctx, insert, "e"); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	u.Rollback(ctx)
	if _, err := u.Exec(ctx, insert, "after the end"); err == nil {
		t.Error("a statement after Commit was accepted")
	}
	if err := u.Commit(ctx); err == nil {
		t.Error("a second Commit was accepted")
	}
	if n := count(); n != 5 {
		t.Errorf("%d rows, want 5", n)
	}
	if st := pool.Stat(); st.AcquiredConns() != 0 {
		t.Errorf("%d connections still acquired", st.AcquiredConns())
	}
}
