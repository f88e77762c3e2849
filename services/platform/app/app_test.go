package app_test

import (
	"context"
	"github.com/jackc/pgx/v5/pgxpool"
	"io"
	"io/fs"
	"log/slog"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform"
	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// A handler that panics after its first write, through the pipeline every service's
// messages go through: the panic ends the transaction (the write and the inbox claim
// roll back, the connection returns to the pool, the row lock is released), so the
// retried delivery of the same message is handled at its next attempt instead of
// waiting behind a transaction nobody will ever end.
func TestHandlerPanicLeaksNoTransaction(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := kitPool(ctx, t, "t_app_")
	if _, err := pool.Exec(ctx, `CREATE TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL);
		INSERT INTO stock VALUES ('LAB-MUG', 10)`); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Dial(ctx, testenv.VHost(t), t.Name(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pub := bus.NewPublisher(conn, log)

	type second struct {
		attempt, acquired, idleInTx int
		err                         error
	}
	handled := make(chan second, 1)
	reserve := func(ctx context.Context, d bus.Delivery) error {
		q := pg.Q(ctx, pool)
		if d.Attempt == 1 {
			if _, err := q.Exec(ctx, `UPDATE stock SET on_hand = on_hand - 1 WHERE sku = 'LAB-MUG'`); err != nil {
				return err
			}
			panic("bug after the first write")
		}
		s := second{attempt: d.Attempt, acquired: int(pool.Stat().AcquiredConns())}
		s.err = q.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()`).Scan(&s.idleInTx)
		if s.err == nil {
			_, s.err = q.Exec(ctx, `UPDATE stock SET on_hand = on_hand - 1 WHERE sku = 'LAB-MUG'`)
		}
		handled <- s
		return s.err
	}
	h := app.Pipeline(bus.Routes{contracts.OrderPlaced: reserve}, pool, "inventory", func() bool { return true }, log, nil, app.Faults{})
	q := bus.Queue{Service: "inventory", Events: []string{contracts.OrderPlaced}, Retries: []time.Duration{20 * time.Millisecond}}
	subscribed := make(chan struct{})
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A bounded handler: a delivery stuck behind a leaked lock fails instead of
		// waiting for idle_in_transaction_session_timeout.
		opts := bus.ConsumeOptions{Workers: 1, HandlerTimeout: 5 * time.Second, Transient: pg.IsTransient,
			OnSubscribed: func() {
				select {
				case <-subscribed:
				default:
					close(subscribed)
				}
			}}
		_ = bus.Consume(cctx, conn, pub, q, opts, h, log)
	}()
	defer func() { stop(); <-done }()
	select {
	case <-subscribed:
	case <-ctx.Done():
		t.Fatal("consumer never subscribed")
	}
	env, err := contracts.NewEnvelope(contracts.OrderPlaced, "test", "o1", "", contracts.Saga{OrderID: "o1", SagaMode: contracts.ModeChoreography})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishEnvelope(ctx, env, nil); err != nil {
		t.Fatal(err)
	}
	var s second
	select {
	case s = <-handled:
	case <-ctx.Done():
		t.Fatal("the message was never handled after the panic")
	}
	if s.err != nil || s.attempt != 2 {
		t.Errorf("after the panic the message was handled at attempt %d (%v), want attempt 2 without error", s.attempt, s.err)
	}
	if s.acquired != 1 || s.idleInTx != 0 {
		t.Errorf("while the retry ran: %d pooled connections acquired (want 1: its own), %d sessions idle in a transaction (want 0)", s.acquired, s.idleInTx)
	}
	// The retry reported before its transaction committed (the handler's send is its
	// last statement, InTx commits after it returns): wait for the commit, not a time.
	onHand := 10
	for deadline := time.Now().Add(10 * time.Second); onHand == 10 && time.Now().Before(deadline); {
		if err := pool.QueryRow(ctx, `SELECT on_hand FROM stock WHERE sku = 'LAB-MUG'`).Scan(&onHand); err != nil {
			t.Fatal(err)
		}
		if onHand == 10 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if onHand != 9 {
		t.Errorf("stock is %d, want 9: the panicking attempt's write must roll back, the retry's commit", onHand)
	}
}

// kitPool is a pool on a new database of the test's with the platform kit's tables
// (inbox, outbox) migrated, closed when the test ends.
func kitPool(ctx context.Context, t *testing.T, prefix string) *pgxpool.Pool {
	t.Helper()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name(prefix)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	kit, _ := fs.Sub(platform.Migrations(), "migrations")
	if err := pg.Migrate(ctx, pool, kit, "goose_platform"); err != nil {
		t.Fatal(err)
	}
	return pool
}
