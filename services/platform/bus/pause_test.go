package bus_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

func queueState(t *testing.T, conn *bus.Conn, name string) (messages, consumers int) {
	t.Helper()
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages, q.Consumers
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// While Paused reports true the consumer takes nothing: the in-flight handler finishes
// and acks, the messages prefetched behind it go back to the queue (none is handled,
// none lost), and when Paused turns false they are all handled.
func TestPausedConsumerReturnsPrefetchedMessages(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	q := bus.Queue{Service: "pausable", Events: []string{contracts.OrderPlaced}}
	var paused atomic.Bool
	started, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	handled := map[string]int{}
	h := func(ctx context.Context, d bus.Delivery) error {
		if d.CorrelationID == "first" {
			close(started)
			<-release
		}
		mu.Lock()
		handled[d.CorrelationID]++
		mu.Unlock()
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(handled) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	opts, subscribed := onSubscribed(bus.ConsumeOptions{Prefetch: 10, Workers: 1, Paused: paused.Load, PauseCheck: 20 * time.Millisecond})
	go func() { defer close(done); _ = bus.Consume(ctx, conn, pub, q, opts, h, quiet()) }()
	defer func() { cancel(); <-done }()
	awaitSubscribed(t, subscribed)

	for _, c := range []string{"first", "m1", "m2", "m3", "m4"} {
		if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, c), nil); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	eventually(t, "all five delivered to the consumer (one in its handler, four prefetched)", func() bool {
		n, _ := queueState(t, conn, q.Name())
		return n == 0
	})
	paused.Store(true)
	close(release)
	eventually(t, "the four prefetched messages back in the queue, no consumer", func() bool {
		n, c := queueState(t, conn, q.Name())
		return n == 4 && c == 0
	})
	if n := count(); n != 1 {
		t.Fatalf("%d messages handled while paused, want only the one in flight", n)
	}
	paused.Store(false)
	eventually(t, "every message handled once resumed", func() bool { return count() == 5 })
	mu.Lock()
	defer mu.Unlock()
	for c, n := range handled {
		if n != 1 {
			t.Errorf("%s handled %d times", c, n)
		}
	}
}

// The Duplicate hook publishes an event a second time with the same message id; retries
// and other non-shop exchanges are never duplicated.
func TestPublisherDuplicateHook(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	var left atomic.Int32
	left.Store(1)
	pub.Duplicate = func(context.Context) bool { return left.Add(-1) >= 0 }
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := bus.DeclareExchanges(ch); err != nil {
		t.Fatal(err)
	}
	tap, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(tap.Name, contracts.OrderPlaced, contracts.ExchangeEvents, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Straight into the tap through the default exchange: never duplicated, and it does
	// not use up the one duplicate.
	if err := pub.Publish(ctx, "", tap.Name, amqp.Publishing{MessageId: "direct", Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	a, b := envelope(t, contracts.OrderPlaced, "a"), envelope(t, contracts.OrderPlaced, "b")
	for _, e := range []contracts.Envelope{a, b} {
		if err := pub.PublishEnvelope(ctx, e, nil); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	eventually(t, "four messages in the tap", func() bool {
		n, _ := queueState(t, conn, tap.Name)
		return n == 4
	})
	for {
		d, ok, err := ch.Get(tap.Name, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got[d.MessageId]++
	}
	if got["direct"] != 1 || got[a.EventID] != 2 || got[b.EventID] != 1 {
		t.Errorf("published: %v; want direct once, the first event twice (%s), the second once (%s)", got, a.EventID, b.EventID)
	}
}
