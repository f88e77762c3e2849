package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/reconcile"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// kill -9 of payments, inventory and orders in the middle of a batch of sagas: the
// supervisor restarts each, every saga finishes, and nothing is charged twice (the
// ledger checks include "at most one authorization" and "exactly one capture"); then
// every order in the lab's databases reconciles to the zero-loss figures.
func TestKill9MidSaga(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			l := startLab(t, labOptions{heavy: true, settings: map[string]string{control.SagaMode: mode}})
			duringFault(t, l, 2*time.Minute, func() {
				for _, victim := range []string{"payments", "inventory", "orders"} {
					time.Sleep(400 * time.Millisecond)
					if err := l.sup.Kill(victim); err != nil {
						t.Errorf("kill -9 %s: %v", victim, err)
					}
					t.Logf("killed %s (SIGKILL)", victim)
				}
			})
		})
	}
}

// RabbitMQ stopped and restarted during a batch: services reconnect by themselves,
// nothing is lost (events wait in the outbox), every saga finishes consistently. The
// node has no management API: the reconciliation lists its DLQs with rabbitmqctl.
func TestBrokerRestartMidBatch(t *testing.T) {
	t.Parallel()
	broker := testenv.PrivateBroker(t)
	l := startLab(t, labOptions{heavy: true, amqpURL: broker.URL(),
		queues: func(ctx context.Context) (map[string]int, error) { return broker.Queues(ctx, "/") }})
	duringFault(t, l, 3*time.Minute, func() {
		time.Sleep(500 * time.Millisecond)
		broker.Stop()
		t.Log("broker stopped")
		time.Sleep(2 * time.Second) // orders keep being accepted: their events wait in the outboxes
		broker.Start()
		t.Log("broker started again")
	})
}

// PostgreSQL stopped for 10 s under traffic, in choreography, where no saga times out:
// every message in flight when the databases went away is retried until they are back
// (a dependency outage is not poison), so every order reaches its final state and no
// DLQ holds anything. Before, the retry policy's 4.25 s ran out and the messages were
// dead-lettered, leaving their orders pending with an authorization or reservation held.
func TestPostgresRestartMidBatch(t *testing.T) {
	t.Parallel()
	db := testenv.PrivatePostgres(t)
	l := startLab(t, labOptions{heavy: true, adminDB: db.AdminURL(),
		settings: map[string]string{control.SagaMode: contracts.ModeChoreography}})
	duringFault(t, l, 4*time.Minute, func() {
		time.Sleep(500 * time.Millisecond)
		db.Stop()
		t.Log("postgres stopped")
		time.Sleep(10 * time.Second) // the outage under test: longer than every retry delay together
		db.Start()
		t.Log("postgres started again")
	})
}

// reconciled holds every order in the lab's databases — the accepted ones must all be
// there — and its vhost's DLQs to the zero-loss figures, as lab chaos does: 0 lost, 0
// double charges, 0 double reservations, 0 unreleased reservations, 0 missing refunds,
// 0 other ledger mismatches, 0 DLQ messages. A compensation may still be on its way
// when the last order turns final, so it reconciles again until clean or within.
func (l *lab) reconciled(t *testing.T, accepted []string, within time.Duration) *reconcile.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := reconcile.Run(ctx, l.cfg, reconcile.Options{Accepted: accepted, ManagementURL: l.mgmt, ListQueues: l.queues})
		cancel()
		if err == nil && r.Clean() && len(r.DLQ) > 0 {
			var b strings.Builder
			r.Table(&b)
			t.Logf("%s", b.String())
			return r
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			for _, k := range reconcile.Kinds {
				if n := r.Count(k); n != 0 {
					t.Errorf("%s: %d, want 0", reconcile.Label(k), n)
				}
			}
			if n := r.DLQMessages(); n != 0 {
				t.Errorf("%d messages in DLQs, want 0: %v", n, r.DLQ)
			}
			if len(r.DLQ) == 0 {
				t.Errorf("no dead-letter queue in the lab's vhost: the lab's consumers declare one each")
			}
			var b strings.Builder
			r.Table(&b)
			t.Fatalf("not clean %s after the last order ended:\n%s", within, b.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// duringFault keeps four shoppers placing a mix of orders while fault runs (and until
// at least 20 were placed), so the fault always hits a busy shop; then every order placed
// must reach its expected final state with consistent ledgers within the given time, and
// every order in the lab's databases reconcile to the zero-loss figures.
func duringFault(t *testing.T, l *lab, within time.Duration, fault func()) {
	t.Helper()
	const minOrders = 20
	tokens := users(t, l, 4)
	stop := make(chan struct{})
	type result struct {
		b    placedBatch
		errs []error
	}
	placed := make(chan result, 1)
	go func() {
		b, errs := placeUntil(l, stop, 4, minOrders, tokens, time.Now().Add(within))
		placed <- result{b, errs}
	}()
	fault()
	close(stop)
	r := <-placed
	for _, err := range r.errs {
		t.Errorf("placing an order: %v", err)
	}
	if len(r.b.ids) < minOrders {
		t.Fatalf("only %d orders placed: too few to prove anything", len(r.b.ids))
	}
	t.Logf("%d orders placed during and after the fault", len(r.b.ids))
	awaitBatch(t, l, r.b.batch, r.b.ids, r.b.tokens, within)
	rep := l.reconciled(t, r.b.ids, 30*time.Second)
	if rep.InDatabase < len(r.b.ids) || rep.Final() != rep.InDatabase {
		t.Errorf("%d orders in the database (%d final), %d accepted", rep.InDatabase, rep.Final(), len(r.b.ids))
	}
}

// The same message delivered twice: with the inbox on its effect applies once; with the
// inbox off it applies twice — the lab must be able to show that bug.
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	token := l.api.login(t, "bob@example.com", "bob-secret")
	tap := l.tap(t, contracts.OrderPlaced)

	for _, tc := range []struct {
		inbox bool
		want  int
	}{{true, 1}, {false, 2}} {
		l.set(control.InboxEnabled, map[bool]string{true: "true", false: "false"}[tc.inbox])
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
		if err != nil {
			t.Fatal(err)
		}
		o, err := l.api.waitFinal(ctx, token, id)
		if err != nil || o.Status != "confirmed" {
			t.Fatalf("order %s: %+v %v", id, o, err)
		}
		// Deliver the very same order.placed (same message id) a second time, then wait
		// for evidence that payments handled it: with the inbox on, its duplicate counter
		// moves; with it off, a second authorization appears.
		dupsBefore := l.metric(t, "payments", "inbox_duplicates_total", `queue="payments.events"`, `type="order.placed"`)
		msg := tap.find(t, id)
		l.republish(t, msg)
		deadline := time.Now().Add(time.Minute)
		for {
			handled := false
			if tc.inbox {
				handled = l.metric(t, "payments", "inbox_duplicates_total", `queue="payments.events"`, `type="order.placed"`) > dupsBefore
			} else if p, err := l.payments(ctx, id); err == nil && p.Authorizations >= 2 {
				handled = true
			}
			if handled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("inbox=%v: payments never handled the duplicate delivery", tc.inbox)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if p, err := l.payments(ctx, id); err != nil || p.Authorizations != tc.want {
			t.Fatalf("inbox=%v: %d authorizations after a duplicate delivery, want %d (%v)", tc.inbox, p.Authorizations, tc.want, err)
		}
		cancel()
	}
}

// A malformed message is retried, then parked in the DLQ, and never blocks the queue:
// orders placed right after it complete normally.
func testMalformedMessageIsDeadLettered(t *testing.T, l *lab) {
	token := l.api.login(t, "alice@example.com", "alice-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, body := range []string{`{not json`, `{"eventId":"x1","eventType":"order.placed","data":{"orderId":""}}`} {
		l.republish(t, amqp.Delivery{Exchange: contracts.ExchangeEvents, RoutingKey: contracts.OrderPlaced,
			MessageId: "poison-" + body[:3], Type: contracts.OrderPlaced, Body: []byte(body)})
	}
	id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" {
		t.Fatalf("an order behind poison messages did not complete: %+v %v", o, err)
	}
	// payments consumes order.placed; both poison messages end in its DLQ.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := l.queueDepth(t, "payments.dlq")
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("payments.dlq holds %d messages, want 2", n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// tap is a test queue bound to some routing keys of shop.events in the lab's vhost.
type tap struct {
	l    *lab
	name string
}

func (l *lab) conn(t *testing.T) *bus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bus.Dial(ctx, l.cfg.AMQPURL, "e2e", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (l *lab) tap(t *testing.T, keys ...string) *tap {
	t.Helper()
	ch, err := l.conn(t).Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	name := "e2e.tap." + testenv.Name("")
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := ch.QueueBind(name, k, contracts.ExchangeEvents, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return &tap{l: l, name: name}
}

// find returns the tapped message whose correlation id is corr.
func (tp *tap) find(t *testing.T, corr string) amqp.Delivery {
	t.Helper()
	ch, err := tp.l.conn(t).Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		d, ok, err := ch.Get(tp.name, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var env contracts.Envelope
		if json.Unmarshal(d.Body, &env) == nil && env.CorrelationID == corr {
			return d
		}
	}
	t.Fatalf("no tapped message for %s", corr)
	return amqp.Delivery{}
}

// republish publishes a copy of d (same message id, body and headers) where it came from.
func (l *lab) republish(t *testing.T, d amqp.Delivery) {
	t.Helper()
	conn := l.conn(t)
	pub := bus.NewPublisher(conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	err := pub.Publish(context.Background(), d.Exchange, d.RoutingKey, amqp.Publishing{
		Headers: d.Headers, ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, CorrelationId: d.CorrelationId, Type: d.Type, AppId: d.AppId, Body: d.Body,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (l *lab) consumers(t *testing.T, queue string) int {
	t.Helper()
	ch, err := l.conn(t).Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect %s: %v", queue, err)
	}
	return q.Consumers
}

func (l *lab) queueDepth(t *testing.T, queue string) int {
	t.Helper()
	ch, err := l.conn(t).Channel(context.Background())
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
