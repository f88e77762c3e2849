package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// The order history read model (history.go): kept from events only, it must list what
// the write side lists once it has caught up, whatever the order and the repetitions of
// the events it is sent.

// rawPage is a page of GET /orders as it went over the wire: every field of every item.
type rawPage struct {
	Items      []map[string]any `json:"items"`
	NextCursor string           `json:"nextCursor"`
}

func (l *lab) page(user, query string) rawPage {
	l.t.Helper()
	var p rawPage
	if code := l.do(http.MethodGet, "/orders?"+query, user, nil, nil, &p); code != http.StatusOK {
		l.t.Fatalf("GET /orders?%s: %d", query, code)
	}
	return p
}

// sameHistory compares the write side's page with the read model's field by field, and
// returns "" when they agree: every field, as JSON. Neither lists steps (OrderSummary).
func sameHistory(write, read rawPage) string {
	if len(write.Items) != len(read.Items) {
		return fmt.Sprintf("%d orders on the write side, %d in the read model", len(write.Items), len(read.Items))
	}
	for i := range write.Items {
		w, r := write.Items[i], read.Items[i]
		if _, ok := w["steps"]; ok {
			return fmt.Sprintf("item %d: the write side lists steps %v (a summary has none)", i, w["steps"])
		}
		if !reflect.DeepEqual(w, r) {
			return fmt.Sprintf("item %d differs:\nwrite %v\nread  %v", i, w, r)
		}
	}
	if write.NextCursor != read.NextCursor {
		return fmt.Sprintf("nextCursor %q on the write side, %q in the read model", write.NextCursor, read.NextCursor)
	}
	return ""
}

// awaitHistory polls until the read model's page equals the write side's (the read
// model lags by an event's trip through the outbox and the broker), then returns it.
func (l *lab) awaitHistory(user, query string) rawPage {
	l.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		write, read := l.page(user, query), l.page(user, query+"&view=history")
		diff := sameHistory(write, read)
		if diff == "" {
			return read
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("the read model did not catch up within %s (GET /orders?%s): %s", wait, query, diff)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// handled waits until the read model's inbox holds eventID: it committed its effect (or
// found nothing to do) in that transaction.
func (l *lab) handled(eventID string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, err := pgx.Connect(ctx, l.env["DATABASE_URL"])
	if err != nil {
		l.t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM inbox WHERE consumer = $1 AND event_id = $2`,
			historyQueue.Service, eventID).Scan(&n); err != nil {
			l.t.Fatalf("inbox: %v", err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			l.t.Fatalf("the read model never handled event %s", eventID)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// publish sends an event into the lab's vhost as some service would.
func (l *lab) publish(typ, orderID string, data any) contracts.Envelope {
	l.t.Helper()
	env, err := contracts.NewEnvelope(typ, "test", orderID, "", data)
	if err != nil {
		l.t.Fatal(err)
	}
	l.republish(env)
	return env
}

// republish sends env again, same event id: a redelivery.
func (l *lab) republish(env contracts.Envelope) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := l.pub.PublishEnvelope(ctx, env, amqp.Table{}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lab) metricsText() string {
	l.t.Helper()
	code, body := l.doRaw(http.MethodGet, "/metrics", "", nil, nil)
	if code != http.StatusOK {
		l.t.Fatalf("GET /metrics: %d", code)
	}
	return string(body)
}

// TestHistoryReadModel: orders driven to every kind of end (and one left pending) are
// listed by the read model exactly as by the write side — every field, the paging and
// the cursors — and duplicates and late contradicting events change nothing.
func TestHistoryReadModel(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.SagaMode: contracts.ModeChoreography})
	user := testenv.Name("u")
	drive := func(card string, replies ...string) (string, contracts.Checkout) {
		id := l.place(user, order(card, "LAB-HOODIE", 2, "FR"), nil)
		c := placedCheckout(t, l.tap.await(t, id, 1, wait)[0]).Checkout
		for _, r := range replies {
			before := len(l.get(user, id).Steps)
			reason := ""
			if r == contracts.PaymentDeclined {
				reason = "card_declined"
			}
			l.reply(r, c, "", reason)
			l.waitStep(user, id, before, r)
		}
		return id, c
	}
	confirmed, _ := drive(cardOK, contracts.PaymentAuthorized, contracts.StockReserved, contracts.ShipmentScheduled)
	cancelled, _ := drive(cardDeclined, contracts.PaymentDeclined)
	pending, _ := drive(cardOK, contracts.PaymentAuthorized)
	if o := l.waitFinal(user, confirmed, wait); o.Status != statusConfirmed {
		t.Fatalf("order %s: %s", confirmed, o.Status)
	}
	if o := l.waitFinal(user, cancelled, wait); o.Status != statusCancelled {
		t.Fatalf("order %s: %s", cancelled, o.Status)
	}

	// Placed → confirmed / cancelled, and pending, as the write side lists them.
	read := l.awaitHistory(user, "limit=100")
	want := map[string]string{confirmed: statusConfirmed, cancelled: statusCancelled, pending: statusPending}
	if len(read.Items) != 3 {
		t.Fatalf("read model lists %d orders, want 3", len(read.Items))
	}
	for _, it := range read.Items {
		if id := it["orderId"].(string); it["status"] != want[id] {
			t.Fatalf("read model: order %s is %v, want %s", id, it["status"], want[id])
		}
		if it["traceId"] == "" || it["createdAt"] == "" {
			t.Fatalf("read model item without traceId or createdAt: %v", it)
		}
	}
	if read.Items[1]["cancelReason"] != contracts.ReasonPaymentDeclined {
		t.Fatalf("cancelled order: %v", read.Items[1])
	}
	// The same pages and cursors: each view's cursor continues the other's list.
	first := l.awaitHistory(user, "limit=2")
	if first.NextCursor == "" {
		t.Fatal("limit=2 of 3 orders: no nextCursor")
	}
	l.awaitHistory(user, "limit=2&cursor="+first.NextCursor)
	if p := l.page(user, "limit=2&cursor="+first.NextCursor+"&view=history"); len(p.Items) != 1 || p.Items[0]["orderId"] != confirmed {
		t.Fatalf("second page of the history: %v", p.Items)
	}

	// Duplicates: the same order.cancelled again (same id: the inbox skips it), and a
	// contradicting late outcome with a new id (the precedence rule ignores it).
	var again contracts.Envelope
	for _, e := range l.tap.emitted(cancelled) {
		if e.EventType == contracts.OrderCancelled {
			again = e
		}
	}
	if again.EventID == "" {
		t.Fatal("no order.cancelled on the tap")
	}
	l.republish(again)
	late := l.publish(contracts.OrderCancelled, confirmed, contracts.OrderCancelledData{
		Saga: contracts.Saga{OrderID: confirmed, SagaMode: contracts.ModeChoreography}, UserID: user, Reason: "too late"})
	l.handled(late.EventID)
	awaitMetric(t, l, `inbox_duplicates_total{message_type="order.cancelled",queue="orders-history.events"} 1`)
	if diff := sameHistory(l.page(user, "limit=100"), l.page(user, "limit=100&view=history")); diff != "" {
		t.Fatalf("after duplicates: %s", diff)
	}

	// The lag metric: one observation per applied event.
	m := l.metricsText()
	if !strings.Contains(m, "# TYPE read_model_apply_lag_seconds histogram") ||
		strings.Contains(m, "\nread_model_apply_lag_seconds_count 0\n") {
		t.Fatalf("read_model_apply_lag_seconds missing or empty:\n%s", grepLines(m, "read_model"))
	}
}

// awaitMetric waits until orders' /metrics has a line with want.
func awaitMetric(t *testing.T, l *lab, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !strings.Contains(l.metricsText(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("orders' metrics never showed %s:\n%s", want, grepLines(l.metricsText(), strings.SplitN(want, "{", 2)[0]))
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// TestHistoryOutOfOrder: the outcome can reach the read model before order.placed (a
// placed event in a retry queue, say). The row waits, unlisted, until order.placed
// fills it in; a late second order.placed and a late contradicting outcome change
// nothing. The events come from the test alone: the read model needs nothing else.
func TestHistoryOutOfOrder(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.SagaMode: contracts.ModeChoreography})
	user := testenv.Name("u")
	sg := contracts.Saga{OrderID: uuid.NewString(), SagaMode: contracts.ModeOrchestration}
	cancelled := l.publish(contracts.OrderCancelled, sg.OrderID, contracts.OrderCancelledData{Saga: sg, UserID: user, Reason: contracts.ReasonOutOfStock})
	l.handled(cancelled.EventID)
	if p := l.page(user, "view=history"); len(p.Items) != 0 {
		t.Fatalf("an order without order.placed is listed: %v", p.Items)
	}
	placed := contracts.OrderPlacedData{Card: cardOK, Checkout: contracts.Checkout{Saga: sg, UserID: user,
		Items: []contracts.Item{{SKU: "LAB-MUG", Qty: 3, PriceCents: 1200}}, TotalCents: 3600, Currency: currency,
		ShippingAddress: contracts.Address{Name: "A", Street: "B", City: "C", PostalCode: "D", Country: "DE"}}}
	first := l.publish(contracts.OrderPlaced, sg.OrderID, placed)
	l.handled(first.EventID)
	check := func(when string) {
		t.Helper()
		p := l.page(user, "view=history")
		if len(p.Items) != 1 {
			t.Fatalf("%s: %d orders listed, want 1", when, len(p.Items))
		}
		raw, _ := json.Marshal(p.Items[0])
		var o OrderView
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatal(err)
		}
		if o.OrderID != sg.OrderID || o.Status != statusCancelled || o.CancelReason != contracts.ReasonOutOfStock ||
			o.SagaMode != contracts.ModeOrchestration || o.TotalCents != 3600 || o.Currency != currency ||
			len(o.Items) != 1 || o.Items[0] != (ItemView{SKU: "LAB-MUG", Qty: 3, PriceCents: 1200}) ||
			!o.CreatedAt.Equal(first.OccurredAt.Truncate(time.Microsecond)) || len(o.Steps) != 0 {
			t.Fatalf("%s: %+v (placed at %s)", when, o, first.OccurredAt)
		}
	}
	check("cancelled, then placed")
	// Late and contradicting: a second order.placed (another id) with other lines, and
	// an order.confirmed after the cancellation.
	other := placed
	other.Items = []contracts.Item{{SKU: "LAB-TEE", Qty: 1, PriceCents: 2500}}
	other.TotalCents = 2500
	l.handled(l.publish(contracts.OrderPlaced, sg.OrderID, other).EventID)
	l.handled(l.publish(contracts.OrderConfirmed, sg.OrderID, contracts.OrderConfirmedData{Saga: sg, UserID: user, TotalCents: 3600}).EventID)
	check("after late events")
}
