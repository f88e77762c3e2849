package bus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dial(t *testing.T) (*bus.Conn, string) {
	t.Helper()
	url := testenv.VHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := bus.Dial(ctx, url, t.Name(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, url
}

func envelope(t *testing.T, typ, corr string) contracts.Envelope {
	t.Helper()
	env, err := contracts.NewEnvelope(typ, "test", corr, "", contracts.Saga{OrderID: corr, SagaMode: contracts.ModeChoreography})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// A poison message is retried through the retry queues, then parked in the DLQ with the
// error, and it never blocks the good message published after it.
func TestPoisonMessageGoesToDLQWithoutBlocking(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	q := bus.Queue{Service: "svc", Events: []string{contracts.OrderPlaced}, Retries: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}}

	var attempts atomic.Int32
	good := make(chan string, 1)
	h := bus.Chain(func(ctx context.Context, d bus.Delivery) error {
		if d.CorrelationID == "poison" {
			attempts.Add(1)
			return errors.New("cannot handle this")
		}
		good <- d.CorrelationID
		return nil
	}, bus.Recover())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	opts, subscribed := onSubscribed(bus.ConsumeOptions{Prefetch: 1, Workers: 1})
	go func() {
		defer close(done)
		_ = bus.Consume(ctx, conn, pub, q, opts, h, quiet())
	}()

	awaitSubscribed(t, subscribed)
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, "poison"), nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, "good"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-good:
		if c != "good" {
			t.Fatalf("got %q", c)
		}
	case <-time.After(time.Minute):
		t.Fatal("good message blocked behind the poison one")
	}
	d := waitDLQ(t, conn, q.DLQ(), time.Minute)
	if d.CorrelationId != "poison" || d.Headers["x-last-error"] == nil {
		t.Fatalf("unexpected DLQ message: corr=%q headers=%v", d.CorrelationId, d.Headers)
	}
	if n := attempts.Load(); n != 3 {
		t.Fatalf("handled %d times, want 1 + 2 retries", n)
	}
	cancel()
	<-done
}

// A panicking handler is treated like a failing one.
func TestPanicIsRecoveredAndDeadLettered(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	q := bus.Queue{Service: "panicky", Events: []string{contracts.OrderPlaced}, Retries: []time.Duration{10 * time.Millisecond}}
	h := bus.Chain(func(ctx context.Context, d bus.Delivery) error { panic("boom") }, bus.Recover())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts, subscribed := onSubscribed(bus.ConsumeOptions{})
	go func() { _ = bus.Consume(ctx, conn, pub, q, opts, h, quiet()) }()
	awaitSubscribed(t, subscribed)
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, "p"), nil); err != nil {
		t.Fatal(err)
	}
	waitDLQ(t, conn, q.DLQ(), time.Minute)
}

// Graceful stop: a handler in flight when the consumer is cancelled finishes and acks;
// nothing is redelivered afterwards.
func TestShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	q := bus.Queue{Service: "graceful", Events: []string{contracts.OrderPlaced}}
	started := make(chan struct{})
	var finished atomic.Bool
	h := func(ctx context.Context, d bus.Delivery) error {
		close(started)
		time.Sleep(300 * time.Millisecond) // simulated work in flight during shutdown
		finished.Store(true)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	opts, subscribed := onSubscribed(bus.ConsumeOptions{})
	go func() { defer close(done); _ = bus.Consume(ctx, conn, pub, q, opts, h, quiet()) }()
	awaitSubscribed(t, subscribed)
	if err := pub.PublishEnvelope(context.Background(), envelope(t, contracts.OrderPlaced, "x"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(time.Minute):
		cancel()
		t.Fatal("the message never reached the handler")
	}
	cancel()
	<-done
	if !finished.Load() {
		t.Fatal("consumer returned before the in-flight handler finished")
	}
	if n := depth(t, conn, q.Name()); n != 0 {
		t.Fatalf("%d messages back on the queue: the in-flight one was not acked", n)
	}
}

// Concurrent publishes all get confirmed.
func TestConcurrentPublishConfirms(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
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
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pub.PublishEnvelope(context.Background(), envelope(t, contracts.OrderPlaced, string(rune('a'+i%26))), nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := depth(t, conn, "sink"); n != 200 {
		t.Fatalf("sink has %d messages, want 200", n)
	}
}

func depth(t *testing.T, conn *bus.Conn, queue string) int {
	t.Helper()
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect %s: %v", queue, err)
	}
	return q.Messages
}

// onSubscribed returns opts with an OnSubscribed hook, and a channel closed the first
// time the consumer has declared its queue (bindings and retry queues included) and
// subscribed. Publishing before that could go unrouted.
func onSubscribed(opts bus.ConsumeOptions) (bus.ConsumeOptions, <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	opts.OnSubscribed = func() { once.Do(func() { close(ch) }) }
	return opts, ch
}

func awaitSubscribed(t *testing.T, subscribed <-chan struct{}) {
	t.Helper()
	select {
	case <-subscribed:
	case <-time.After(time.Minute):
		t.Fatal("consumer never subscribed")
	}
}

func waitDLQ(t *testing.T, conn *bus.Conn, dlq string, within time.Duration) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ch, err := conn.Channel(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		d, ok, err := ch.Get(dlq, true)
		_ = ch.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return d
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nothing arrived in %s within %s", dlq, within)
	return amqp.Delivery{}
}
