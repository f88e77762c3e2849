package main

import (
	"context"
	"encoding/json"
	"os"
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
