package outbox_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform"
	"microlab/services/platform/bus"
	"microlab/services/platform/outbox"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func kitDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_outbox_")))
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

func sinkQueue(t *testing.T, conn *bus.Conn) {
	t.Helper()
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := bus.DeclareExchanges(ch); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("sink", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("sink", "#", contracts.ExchangeEvents, false, nil); err != nil {
		t.Fatal(err)
	}
}

// drain reads everything in the sink until want distinct event ids arrived (or timeout)
// and returns how many times it saw each id.
func drain(t *testing.T, conn *bus.Conn, want int, within time.Duration) map[string]int {
	t.Helper()
	seen := map[string]int{}
	drainUntil(t, conn, seen, func() bool { return len(seen) >= want }, within)
	return seen
}

// drainUntil reads the sink into seen (id → times seen) until done() holds or within
// has passed, and reports whether done() held. It reads whatever is in the sink before
// it checks done() for the first time.
func drainUntil(t *testing.T, conn *bus.Conn, seen map[string]int, done func() bool, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ch, err := conn.Channel(ctx)
		cancel()
		if err == nil {
			for {
				d, ok, err := ch.Get("sink", true)
				if err != nil || !ok {
					break
				}
				seen[d.MessageId]++
			}
			_ = ch.Close()
		}
		if done() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// awaitNoBacklog waits until every outbox row is marked sent. The relay marks rows in
// the transaction it commits after the broker confirmed them, so an event can be in the
// sink while its row is not marked yet.
func awaitNoBacklog(t *testing.T, ob *outbox.Outbox, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, _, err := ob.Backlog(context.Background())
		if err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d (%v), want 0", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func emit(t *testing.T, pool *pgxpool.Pool, ob *outbox.Outbox, n int, fail bool) []string {
	t.Helper()
	var ids []string
	for i := range n {
		env, err := contracts.NewEnvelope(contracts.OrderPlaced, "test", "order", "", map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		err = pg.InTx(context.Background(), pool, func(ctx context.Context) error {
			if err := ob.Emit(ctx, env); err != nil {
				return err
			}
			if fail {
				return errors.New("the state change failed")
			}
			return nil
		})
		if fail != (err != nil) {
			t.Fatalf("emit: %v", err)
		}
		ids = append(ids, env.EventID)
	}
	return ids
}

// Rolled-back transactions publish nothing; committed ones publish exactly their events.
func TestOutboxPublishesOnlyCommitted(t *testing.T) {
	t.Parallel()
	pool := kitDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := bus.Dial(ctx, testenv.VHost(t), "outbox-test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sinkQueue(t, conn)
	ob := outbox.New(pool, bus.NewPublisher(conn, quiet()), func() bool { return true }, quiet())
	go func() { _ = ob.Run(ctx) }()

	emit(t, pool, ob, 5, true)
	ids := emit(t, pool, ob, 20, false)
	seen := drain(t, conn, 20, time.Minute)
	for _, id := range ids {
		if seen[id] == 0 {
			t.Fatalf("committed event %s never published", id)
		}
	}
	// Once no row waits, everything the relay will ever publish has been confirmed, so
	// it is in the sink: read the rest, then count.
	awaitNoBacklog(t, ob, time.Minute)
	drainUntil(t, conn, seen, func() bool { return true }, 0)
	if len(seen) != 20 {
		t.Fatalf("published %d distinct events, want 20 (rolled-back ones must not appear)", len(seen))
	}
}

// The broker goes away and comes back: events written meanwhile wait in the outbox, the
// connection recovers by itself, and every event is delivered. This is the outbox's
// whole point; with the outbox off the same outage loses events (second half).
func TestBrokerRestartLosesNothingWithOutbox(t *testing.T) {
	t.Parallel()
	broker := testenv.PrivateBroker(t)
	pool := kitDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := bus.Dial(ctx, broker.URL(), "outbox-restart", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sinkQueue(t, conn)
	var outboxOff atomic.Bool
	ob := outbox.New(pool, bus.NewPublisher(conn, quiet()), func() bool { return !outboxOff.Load() }, quiet())
	go func() { _ = ob.Run(ctx) }()

	before := emit(t, pool, ob, 10, false)
	broker.Stop()
	during := emit(t, pool, ob, 30, false) // broker down: rows wait in the outbox
	if n, _, _ := ob.Backlog(ctx); n == 0 {
		t.Fatal("expected a backlog while the broker is down")
	}
	broker.Start()
	seen := drain(t, conn, 40, 2*time.Minute)
	for _, id := range append(before, during...) {
		if seen[id] == 0 {
			t.Fatalf("event %s lost across the broker restart", id)
		}
	}

	// Outbox off: publish-after-commit during an outage loses the events — the bug the
	// lab demonstrates.
	outboxOff.Store(true)
	broker.Stop()
	lost := emit(t, pool, ob, 5, false)
	broker.Start()
	// Then a marker through the outbox again, which the relay retries until the broker is
	// back. Had the lost events become outbox rows after all, the relay would publish them
	// (lower ids, in order) before the marker; once the marker is in the sink, everything
	// that was going to arrive has.
	outboxOff.Store(false)
	marker := emit(t, pool, ob, 1, false)[0]
	seen = map[string]int{}
	if !drainUntil(t, conn, seen, func() bool { return seen[marker] > 0 }, 2*time.Minute) {
		t.Fatal("the marker event published through the outbox after the outage never arrived")
	}
	awaitNoBacklog(t, ob, time.Minute)
	drainUntil(t, conn, seen, func() bool { return true }, 0)
	for _, id := range lost {
		if seen[id] != 0 {
			t.Fatalf("event %s survived an outage with the outbox off; the demo of the dual-write bug is broken", id)
		}
	}
}

// slowProxy forwards TCP connections to target, holding every read from target for delay
// before passing it on: a broker whose answers (publisher confirms among them) are slow,
// as on a slow disk, under load or right after an outage. It returns its address.
func slowProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	closed := false
	// track keeps c to be closed when the test ends (at once if it has ended).
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			_ = c.Close()
			return false
		}
		conns = append(conns, c)
		return true
	}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			if !track(client) {
				return
			}
			upstream, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			if !track(upstream) {
				return
			}
			go func() {
				_, _ = io.Copy(upstream, client)
				_ = upstream.Close()
			}()
			go func() {
				defer client.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := upstream.Read(buf)
					if n > 0 {
						time.Sleep(delay) // the simulated latency, not a wait for anything
						if _, werr := client.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// With confirms slow enough that a whole batch cannot be confirmed inside one batch's
// time, the relay still drains the backlog and publishes every event once. (It used to
// publish rows until the batch's deadline expired mid-batch, fail to mark the confirmed
// ones sent with the same expired context, roll back, and publish the same rows again,
// forever.)
func TestRelayProgressesUnderSlowConfirms(t *testing.T) {
	t.Parallel()
	// Publishing one row at a time costs at least one delayed read (its confirm) a row:
	// 200 rows take at least 12 s, more than the 10 s the relay used to give a batch.
	const rows = 200
	pool := kitDB(t)
	vhost := testenv.VHost(t)
	u, err := url.Parse(vhost)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = slowProxy(t, u.Host, 60*time.Millisecond)

	// The tap reads straight from the broker; only the relay's publisher is slowed down.
	tap := testenv.Dial(t, vhost).Tap(t, contracts.ExchangeEvents, "#")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := bus.Dial(ctx, u.String(), "outbox-slow-confirms", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ob := outbox.New(pool, bus.NewPublisher(conn, quiet()), func() bool { return true }, quiet())
	// One batch claims the whole backlog, so at 60 ms or more a confirm it cannot be
	// confirmed inside one batch's time.
	ob.BatchSize = 1000

	// The backlog is there before the relay starts, as after an outage.
	ids := emit(t, pool, ob, rows, false)
	relayDone := make(chan error, 1)
	go func() { relayDone <- ob.Run(ctx) }()
	defer func() {
		cancel()
		<-relayDone
	}()

	seen := map[string]int{}
	receive := func(d amqp.Delivery) {
		seen[d.MessageId]++
		if seen[d.MessageId] > 1 {
			n, _, _ := ob.Backlog(context.Background())
			t.Fatalf("event %s published %d times (%d distinct of %d seen, backlog %d): the relay re-publishes confirmed rows",
				d.MessageId, seen[d.MessageId], len(seen), rows, n)
		}
	}
	deadline := time.After(3 * time.Minute)
	for backlog := int64(-1); backlog != 0; {
		select {
		case d := <-tap:
			receive(d)
		case <-time.After(100 * time.Millisecond):
			if backlog, _, err = ob.Backlog(ctx); err != nil {
				backlog = -1
			}
		case <-deadline:
			n, _, err := ob.Backlog(ctx)
			t.Fatalf("backlog still %d (%v) after 3 minutes; %d of %d events seen", n, err, len(seen), rows)
		}
	}
	// Nothing more to come: a marker through the same relay is published after every
	// earlier row (the relay keeps order), so once it is here, every re-publish of an
	// earlier row would be too.
	marker := emit(t, pool, ob, 1, false)[0]
	for seen[marker] == 0 {
		select {
		case d := <-tap:
			receive(d)
		case <-deadline:
			t.Fatalf("the marker event never arrived; %d of %d events seen", len(seen), rows)
		}
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("event %s published %d times, want once", id, seen[id])
		}
	}
	if len(seen) != rows+1 {
		t.Fatalf("saw %d distinct events, want %d", len(seen), rows+1)
	}
}

// Events committed while the relay's LISTEN connection is gone (a PostgreSQL restart
// kills it; here its backend is terminated) notify no one. The listener wakes the relay
// when it is back, so they go out at once, not at the next fallback poll: this test
// makes that poll an hour away.
func TestListenerReconnectWakesTheRelay(t *testing.T) {
	t.Parallel()
	pool := kitDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := bus.Dial(ctx, testenv.VHost(t), "outbox-test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sinkQueue(t, conn)
	ob := outbox.New(pool, bus.NewPublisher(conn, quiet()), func() bool { return true }, quiet())
	ob.PollInterval = time.Hour
	go func() { _ = ob.Run(ctx) }()

	listeners := func() int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN '||$1`, outbox.Channel).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := emit(t, pool, ob, 3, false)
	if seen := drain(t, conn, 3, 30*time.Second); len(seen) != 3 {
		t.Fatalf("notified events: %d of %v published", len(seen), first)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN '||$1`, outbox.Channel); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); listeners() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the listener's session is still there after pg_terminate_backend")
		}
	}
	// Nobody listens now (the listener waits a second before it reconnects).
	missed := emit(t, pool, ob, 3, false)
	seen := map[string]int{}
	drainUntil(t, conn, seen, func() bool {
		for _, id := range missed {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	}, 15*time.Second)
	for _, id := range missed {
		if seen[id] == 0 {
			t.Fatalf("an event committed while the listener was away was not published within 15 s (poll in an hour); seen %v", seen)
		}
	}
}
