package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// Against a real RabbitMQ (a vhost of its own): the DLQ section lists a service's DLQ
// with its messages (peeking leaves them there), replay moves one message or all of
// them back to where they were going with a fresh attempt count, discard purges.
func TestDLQPeekReplayDiscard(t *testing.T) {
	t.Parallel()
	// Bounds the whole test; the waits below are a minute each.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vhost := testenv.VHost(t)
	conn, err := bus.Dial(ctx, vhost, "dashboard-test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := (bus.Queue{Service: "payments", Events: []string{"order.placed"}}).Declare(ch); err != nil {
		t.Fatal(err)
	}
	// Another consumer of order.placed: a replay of payments' DLQ must not reach it.
	if err := (bus.Queue{Service: "inventory", Events: []string{"order.placed"}}).Declare(ch); err != nil {
		t.Fatal(err)
	}
	deadLetter := func(id string) {
		t.Helper()
		err := ch.PublishWithContext(ctx, "shop.dlx", "payments.dlq", false, false, amqp.Publishing{
			MessageId: id, Type: "order.placed", CorrelationId: "order-" + id, DeliveryMode: amqp.Persistent,
			ContentType: "application/json", Body: []byte(`{"eventId":"` + id + `"}`),
			Headers: amqp.Table{"x-original-exchange": "shop.events", "x-original-routing-key": "order.placed",
				"x-attempt": int32(4), "x-last-error": "boom"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	depth := func(q string) int {
		t.Helper()
		c, err := conn.Channel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		qi, err := c.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Messages
	}
	waitDepthOr := func(q string, n int, why string) {
		t.Helper()
		for end := time.Now().Add(time.Minute); depth(q) != n; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s holds %d messages, want %d%s", q, depth(q), n, why)
			}
		}
	}
	waitDepth := func(q string, n int) { t.Helper(); waitDepthOr(q, n, "") }
	deadLetter("m1")
	deadLetter("m2")
	waitDepth("payments.dlq", 2)

	env := map[string]string{"AMQP_URL": vhost, "PROMETHEUS_URL": closedURL(t)}
	if u := os.Getenv("RABBITMQ_MANAGEMENT_URL"); u != "" {
		env["RABBITMQ_MANAGEMENT_URL"] = u
	}
	f := newFixture(t, env, Sources{}, nil)
	f.srv.amqp = conn
	origin := map[string]string{"Origin": f.ts.URL}

	// The management API's counts lag (statistics are emitted every few seconds), and
	// the page peeks only at a queue it lists with messages.
	var page string
	for end := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		_, page = f.do(t, "GET", "/events", "", nil)
		ids := testIDs(t, page)
		q := ids["dlq-queue-payments.dlq"]
		if len(q) == 1 && strings.Contains(nodeText(q[0]), "boom") && len(ids["dlq-message"]) == 2 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("DLQ section never showed payments.dlq with its 2 messages:\n%s", page)
		}
	}
	// The broker takes peeked messages back as the management API lets go of them, which
	// may be just after the page is served: wait for them (a peek that took them off
	// would leave the queue short for good).
	waitDepthOr("payments.dlq", 2, ": peeking took messages off the DLQ")

	// Replay one: only m2 moves, with a fresh attempt count.
	resp, body := f.do(t, "POST", "/api/dlq/payments.dlq/replay", `{"messageId":"m2"}`, origin)
	if resp.StatusCode != 200 || !strings.Contains(body, `"replayed":1`) {
		t.Fatalf("replay one: %d %s", resp.StatusCode, body)
	}
	waitDepth("payments.dlq", 1)
	waitDepth("payments.events", 1)
	d, ok, err := ch.Get("payments.events", true)
	if err != nil || !ok || d.MessageId != "m2" || d.Headers["x-attempt"] != int32(1) || d.Headers["x-replayed-from"] != "payments.dlq" {
		t.Fatalf("replayed copy: ok=%v err=%v id=%q headers=%v", ok, err, d.MessageId, d.Headers)
	}
	if _, has := d.Headers["x-last-error"]; has {
		t.Error("the replayed copy still carries the old x-last-error")
	}
	if d.DeliveryMode != amqp.Persistent {
		t.Errorf("replayed copy not persistent: %d", d.DeliveryMode)
	}

	// Replay all, then the DLQ is empty.
	resp, body = f.do(t, "POST", "/api/dlq/payments.dlq/replay", "", origin)
	var out struct{ Replayed int }
	_ = json.Unmarshal([]byte(body), &out)
	if resp.StatusCode != 200 || out.Replayed != 1 {
		t.Fatalf("replay all: %d %s", resp.StatusCode, body)
	}
	waitDepth("payments.dlq", 0)
	waitDepth("payments.events", 1)
	// Both copies went to payments alone, though the messages were order.placed events
	// published on shop.events: inventory, bound to them too, got none (a copy routed
	// to it would be there already: the broker confirms once every queue has it).
	if n := depth("inventory.events"); n != 0 {
		t.Fatalf("replaying payments.dlq delivered %d messages to inventory.events too", n)
	}

	// Discard purges.
	deadLetter("m3")
	waitDepth("payments.dlq", 1)
	if resp, body := f.do(t, "POST", "/api/dlq/payments.dlq/discard", "", origin); resp.StatusCode != 200 {
		t.Fatalf("discard: %d %s", resp.StatusCode, body)
	}
	waitDepth("payments.dlq", 0)

	// Only DLQs; only from our pages; an unknown message is a 404.
	if resp, body := f.do(t, "POST", "/api/dlq/payments.events/discard", "", origin); resp.StatusCode != 400 || !strings.Contains(body, "not_a_dlq") {
		t.Errorf("discard a work queue: %d %s", resp.StatusCode, body)
	}
	if resp, _ := f.do(t, "POST", "/api/dlq/payments.dlq/discard", "", map[string]string{"Origin": "http://evil.example"}); resp.StatusCode != 403 {
		t.Errorf("cross-origin discard: %d", resp.StatusCode)
	}
	if resp, _ := f.do(t, "POST", "/api/dlq/payments.dlq/replay", `{"messageId":"nope"}`, origin); resp.StatusCode != 404 {
		t.Errorf("replay of an unknown message: %d", resp.StatusCode)
	}
	if resp, _ := f.do(t, "POST", "/api/dlq/shipping.dlq/replay", "", origin); resp.StatusCode != 404 {
		t.Errorf("replay of a missing queue: %d", resp.StatusCode)
	}
}

// The order history read model consumes on a queue of its own (orders-history.events,
// services/orders/history.go), with its own DLQ. Against a real RabbitMQ: the map shows
// its backlog on its own box, the DLQ section and GET /api/dlq list orders-history.dlq
// with its messages, and replay sends a message that failed on a retry back to the read
// model's queue only (not to orders' saga queue); discard purges.
func TestReadModelQueueOnTheMapAndInTheDLQs(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	vhost := testenv.VHost(t)
	conn, err := bus.Dial(ctx, vhost, "dashboard-test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	// orders' two queues, as it declares them.
	for _, q := range []bus.Queue{
		{Service: "orders", Events: []string{"payment.authorized", "stock.reserved", "shipment.scheduled"}},
		{Service: "orders-history", Events: []string{"order.placed", "order.confirmed", "order.cancelled"}},
	} {
		if err := q.Declare(ch); err != nil {
			t.Fatal(err)
		}
	}
	// A backlog of three for the read model (nothing consumes here).
	for i := range 3 {
		if err := ch.PublishWithContext(ctx, "shop.events", "order.placed", false, false, amqp.Publishing{
			MessageId: fmt.Sprint("p", i), Type: "order.placed", DeliveryMode: amqp.Persistent, Body: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// Two that failed on their last retry: they came from the retry queue (default
	// exchange, routing key = the work queue), which is what bus records.
	for _, id := range []string{"h1", "h2"} {
		if err := ch.PublishWithContext(ctx, "shop.dlx", "orders-history.dlq", false, false, amqp.Publishing{
			MessageId: id, Type: "order.confirmed", CorrelationId: "order-" + id, DeliveryMode: amqp.Persistent,
			ContentType: "application/json", Body: []byte(`{"eventId":"` + id + `"}`),
			Headers: amqp.Table{"x-original-exchange": "", "x-original-routing-key": "orders-history.events",
				"x-attempt": int32(4), "x-last-error": "projection failed"}}); err != nil {
			t.Fatal(err)
		}
	}
	depth := func(q string) int {
		t.Helper()
		c, err := conn.Channel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		qi, err := c.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Messages
	}
	waitDepth := func(q string, n int) {
		t.Helper()
		for end := time.Now().Add(time.Minute); depth(q) != n; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s holds %d messages, want %d", q, depth(q), n)
			}
		}
	}
	waitDepth("orders-history.events", 3)
	waitDepth("orders-history.dlq", 2)

	env := map[string]string{"AMQP_URL": vhost, "PROMETHEUS_URL": closedURL(t)}
	if u := os.Getenv("RABBITMQ_MANAGEMENT_URL"); u != "" {
		env["RABBITMQ_MANAGEMENT_URL"] = u
	}
	f := newFixture(t, env, Sources{}, nil)
	f.srv.amqp = conn
	origin := map[string]string{"Origin": f.ts.URL}

	// The map: the read model's backlog on its own box (the management API's counts lag
	// by a few seconds), orders' saga queue empty.
	for end := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		h := f.srv.readHealth(ctx)
		f.srv.health.Store(&h)
		_, page := f.do(t, "GET", "/", "", nil)
		ids := testIDs(t, page)
		d, o := ids["depth-orders-history.events"], ids["depth-orders.events"]
		if len(d) == 1 && nodeText(d[0]) == "3" && len(o) == 1 && nodeText(o[0]) == "0" &&
			len(ids["node-orders-history.events"]) == 1 && len(ids["edge-orders-history.events>orders"]) == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the map never showed orders-history.events with 3 waiting: %d box(es), depth %v", len(ids["node-orders-history.events"]), d)
		}
	}

	// The DLQs: the page and the API.
	type listed struct {
		Name     string
		Messages int
		Peek     []struct{ MessageID string }
	}
	for end := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		_, page := f.do(t, "GET", "/events", "", nil)
		ids := testIDs(t, page)
		resp, body := f.do(t, "GET", "/api/dlq", "", nil)
		var api struct{ Queues []listed }
		_ = json.Unmarshal([]byte(body), &api)
		found := slices.ContainsFunc(api.Queues, func(q listed) bool {
			return q.Name == "orders-history.dlq" && q.Messages == 2 && len(q.Peek) == 2
		})
		q := ids["dlq-queue-orders-history.dlq"]
		if resp.StatusCode == 200 && found && len(q) == 1 && strings.Contains(nodeText(q[0]), "projection failed") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the DLQs never listed orders-history.dlq with its 2 messages: GET /api/dlq %d %s", resp.StatusCode, body)
		}
	}
	waitDepth("orders-history.dlq", 2) // peeking leaves them there

	// Replay one: back to the read model's queue only.
	resp, body := f.do(t, "POST", "/api/dlq/orders-history.dlq/replay", `{"messageId":"h2"}`, origin)
	if resp.StatusCode != 200 || !strings.Contains(body, `"replayed":1`) {
		t.Fatalf("replay one: %d %s", resp.StatusCode, body)
	}
	waitDepth("orders-history.dlq", 1)
	waitDepth("orders-history.events", 4)
	if n := depth("orders.events"); n != 0 {
		t.Errorf("the replay reached orders' saga queue too (%d messages)", n)
	}
	for range 3 { // the backlog first
		if _, ok, err := ch.Get("orders-history.events", true); err != nil || !ok {
			t.Fatalf("backlog: ok=%v err=%v", ok, err)
		}
	}
	d, ok, err := ch.Get("orders-history.events", true)
	if err != nil || !ok || d.MessageId != "h2" || d.Headers["x-attempt"] != int32(1) || d.Headers["x-replayed-from"] != "orders-history.dlq" {
		t.Fatalf("replayed copy: ok=%v err=%v id=%q headers=%v", ok, err, d.MessageId, d.Headers)
	}

	// Discard purges it.
	if resp, body := f.do(t, "POST", "/api/dlq/orders-history.dlq/discard", "", origin); resp.StatusCode != 200 {
		t.Fatalf("discard: %d %s", resp.StatusCode, body)
	}
	waitDepth("orders-history.dlq", 0)
}
