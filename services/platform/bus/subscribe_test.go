package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// subscribe runs bus.Subscribe in the background and returns what it reports: the queue
// name at each (re)subscription, each delivery, each lost subscription, and a channel
// closed when Subscribe returns.
func subscribe(ctx context.Context, conn *bus.Conn, s bus.Subscription) (subscribed <-chan string, got <-chan bus.Delivery, lost <-chan error, done <-chan struct{}) {
	sub, del, lo, fin := make(chan string, 10), make(chan bus.Delivery, 10), make(chan error, 10), make(chan struct{})
	s.OnSubscribed = func(q string) { sub <- q }
	s.OnLost = func(err error) { lo <- err }
	go func() {
		defer close(fin)
		_ = bus.Subscribe(ctx, conn, s, func(_ context.Context, d bus.Delivery) { del <- d })
	}()
	return sub, del, lo, fin
}

func receive[T any](t *testing.T, what string, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("no %s within a minute", what)
	}
	var zero T
	return zero
}

// passive declares queue passively on a channel of its own and returns the broker's
// refusal, if any (a refusal closes the channel).
func passive(t *testing.T, conn *bus.Conn, queue string) error {
	t.Helper()
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(queue, false, true, true, false, nil)
	return err
}

func amqpCode(err error) int {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// A subscription's queue is its listener's alone: bound to what it asked for, named as
// asked (or by the broker), exclusive (another connection cannot even look at it), and
// gone when the listener stops.
func TestSubscriptionIsTheListenersOwn(t *testing.T) {
	t.Parallel()
	conn, url := dial(t)
	other, err := bus.Dial(context.Background(), url, t.Name()+"/other", quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	pub := bus.NewPublisher(other, quiet())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	named, namedGot, _, namedDone := subscribe(ctx, conn, bus.Subscription{Queue: "sub.test-1",
		Exchange: contracts.ExchangeEvents, Keys: []string{contracts.ProductPriceChanged}})
	if q := receive(t, "subscription", named); q != "sub.test-1" {
		t.Fatalf("subscribed to %q, want sub.test-1", q)
	}
	fanout, fanoutGot, _, _ := subscribe(ctx, conn, bus.Subscription{Exchange: contracts.ExchangeControl})
	generated := receive(t, "subscription", fanout)
	if !strings.HasPrefix(generated, "amq.gen-") {
		t.Fatalf("a subscription without a name got queue %q, want one the broker named", generated)
	}

	// Only the bound key reaches the named queue.
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, "unbound"), nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.ProductPriceChanged, "bound"), nil); err != nil {
		t.Fatal(err)
	}
	d := receive(t, "delivery", namedGot)
	if d.CorrelationID != "bound" || d.Queue != "sub.test-1" || d.RoutingKey != contracts.ProductPriceChanged || d.Attempt != 1 {
		t.Fatalf("delivery %+v, want the bound event on sub.test-1, attempt 1", d)
	}
	ch, err := other.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx, contracts.ExchangeControl, "", false, false, amqp.Publishing{Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()
	if d := receive(t, "fanout delivery", fanoutGot); d.Queue != generated || string(d.Body) != `{}` {
		t.Fatalf("fanout delivery %+v, want {} on %s", d, generated)
	}

	if err := passive(t, other, "sub.test-1"); amqpCode(err) != amqp.ResourceLocked {
		t.Fatalf("another connection looking at the queue: %v, want %d RESOURCE_LOCKED (exclusive)", err, amqp.ResourceLocked)
	}
	cancel()
	select {
	case <-namedDone:
	case <-time.After(time.Minute):
		t.Fatal("Subscribe did not return after its context ended")
	}
	eventually(t, "the queue is deleted once its listener stops", func() bool {
		return amqpCode(passive(t, conn, "sub.test-1")) == amqp.NotFound
	})
	select {
	case d := <-namedGot:
		t.Fatalf("the unbound event was delivered: %+v", d)
	default:
	}
}

// The broker restarts: the subscription is lost (and said so), the queue with it (it is
// not durable), and Subscribe declares, binds and subscribes again by itself once the
// broker is back, so the next message arrives. OnSubscribed runs again, which is where
// a listener catches up on what it missed.
func TestSubscriptionResumesAfterBrokerRestart(t *testing.T) {
	t.Parallel()
	broker := testenv.PrivateBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := bus.Dial(ctx, broker.URL(), "subscribe-restart/consume", quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pconn, err := bus.Dial(ctx, broker.URL(), "subscribe-restart/publish", quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pconn.Close() })
	pub := bus.NewPublisher(pconn, quiet())

	subscribed, got, lost, _ := subscribe(ctx, conn, bus.Subscription{Queue: "sub.restart",
		Exchange: contracts.ExchangeEvents, Keys: []string{contracts.ProductPriceChanged}})
	receive(t, "first subscription", subscribed)
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.ProductPriceChanged, "before"), nil); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, "delivery before the restart", got); d.CorrelationID != "before" {
		t.Fatalf("got %q, want before", d.CorrelationID)
	}

	broker.Stop()
	if err := receive(t, "report of the lost subscription", lost); err == nil {
		t.Fatal("OnLost was called with a nil error")
	}
	broker.Start()
	if q := receive(t, "subscription after the restart", subscribed); q != "sub.restart" {
		t.Fatalf("resubscribed to %q, want sub.restart", q)
	}
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.ProductPriceChanged, "after"), nil); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, "delivery after the restart", got); d.CorrelationID != "after" {
		t.Fatalf("got %q, want after", d.CorrelationID)
	}
}
