package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// harness is one notifications instance running in-process against its own database
// and vhost, a publisher into that vhost, and everything it emitted so far.
type harness struct {
	t    *testing.T
	base string
	pub  *bus.Publisher
	logs *syncBuffer

	mu      sync.Mutex
	emitted []contracts.Envelope
}

// syncBuffer collects the service's logs (it writes from many goroutines).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T) *harness {
	t.Helper()
	env := testenv.ServiceEnv(t, "notifications", true)
	h := &harness{t: t, base: "http://" + env["HTTP_ADDR"], logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, env.Get, h.logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitReady(t, h.base)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Dial(ctx, env["AMQP_URL"], "notifications-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "#", contracts.ExchangeEvents, false, nil); err != nil {
		t.Fatal(err)
	}
	out, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range out {
			if d.AppId != "notifications" { // the test's own input events come back too
				continue
			}
			var e contracts.Envelope
			if err := json.Unmarshal(d.Body, &e); err != nil || d.MessageId != e.EventID || d.Type != e.EventType {
				t.Errorf("emitted message %s: body and properties disagree (%v)", d.MessageId, err)
				continue
			}
			h.mu.Lock()
			h.emitted = append(h.emitted, e)
			h.mu.Unlock()
		}
	}()
	h.pub = bus.NewPublisher(conn, log)
	return h
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("service never became ready")
}

// await waits for the notification.sent caused by the message causation.
func (h *harness) await(causation string) contracts.Envelope {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, e := range h.emitted {
			if e.CausationID == causation {
				h.mu.Unlock()
				return e
			}
		}
		h.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("nothing emitted for message %s", causation)
	return contracts.Envelope{}
}

func (h *harness) list(query url.Values) (int, []Notification) {
	h.t.Helper()
	resp, err := http.Get(h.base + "/notifications?" + query.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Items []Notification }
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			h.t.Fatal(err)
		}
	}
	return resp.StatusCode, body.Items
}

func TestNotify(t *testing.T) {
	t.Parallel()
	h := start(t)
	for _, tc := range []struct {
		name, typ string
		data      func(order, user string) any
		kind      string
		order     bool // about an order
	}{
		{"order confirmed", contracts.OrderConfirmed, func(o, u string) any {
			return contracts.OrderConfirmedData{Saga: contracts.Saga{OrderID: o, SagaMode: contracts.ModeChoreography}, UserID: u, TotalCents: 1200}
		}, kindOrderConfirmed, true},
		{"order cancelled", contracts.OrderCancelled, func(o, u string) any {
			return contracts.OrderCancelledData{Saga: contracts.Saga{OrderID: o, SagaMode: contracts.ModeOrchestration}, UserID: u, Reason: contracts.ReasonOutOfStock}
		}, kindOrderCancelled, true},
		{"user registered", contracts.UserRegistered, func(_, u string) any {
			return contracts.UserRegisteredData{UserID: u, Email: "alice@example.com", Name: "Alice"}
		}, kindWelcome, false},
	} {
		order, user := testenv.Name("o"), testenv.Name("u")
		corr := order
		if !tc.order {
			corr = user
		}
		in, err := contracts.NewEnvelope(tc.typ, "test", corr, "", tc.data(order, user))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.pub.PublishEnvelope(context.Background(), in, nil); err != nil {
			t.Fatal(err)
		}
		got := h.await(in.EventID)
		var sent contracts.NotificationSentData
		if err := json.Unmarshal(got.Data, &sent); err != nil {
			t.Fatal(err)
		}
		want := contracts.NotificationSentData{NotificationID: sent.NotificationID, UserID: user, Kind: tc.kind, Channel: channelEmail}
		if tc.order {
			want.OrderID = order
		}
		if got.EventType != contracts.NotificationSent || sent != want || sent.NotificationID == "" || got.CorrelationID != corr {
			t.Errorf("%s: emitted %s %+v (corr %s), want %+v (corr %s)", tc.name, got.EventType, sent, got.CorrelationID, want, corr)
		}

		code, items := h.list(url.Values{"userId": {user}})
		if code != http.StatusOK || len(items) != 1 {
			t.Fatalf("%s: GET ?userId: %d %+v", tc.name, code, items)
		}
		n := items[0]
		if n.ID != sent.NotificationID || n.UserID != user || n.Kind != tc.kind || n.Channel != channelEmail || n.At.IsZero() {
			t.Errorf("%s: listed %+v", tc.name, n)
		}
		if tc.order {
			if n.OrderID == nil || *n.OrderID != order {
				t.Errorf("%s: listed orderId %v, want %s", tc.name, n.OrderID, order)
			}
			if code, items := h.list(url.Values{"orderId": {order}}); code != http.StatusOK || len(items) != 1 || items[0].ID != n.ID {
				t.Errorf("%s: GET ?orderId: %d %+v", tc.name, code, items)
			}
		} else if n.OrderID != nil {
			t.Errorf("%s: welcome has orderId %q", tc.name, *n.OrderID)
		}
	}

	if code, _ := h.list(url.Values{}); code != http.StatusBadRequest {
		t.Errorf("GET /notifications without a filter: %d, want 400", code)
	}
	if code, items := h.list(url.Values{"orderId": {"nobody-ordered-this"}}); code != http.StatusOK || items == nil || len(items) != 0 {
		t.Errorf("GET for an unknown order: %d %v, want 200 and []", code, items)
	}
	logs := h.logs.String()
	if strings.Count(logs, "email sent (simulated)") != 3 {
		t.Errorf("want 3 simulated emails in the logs")
	}
	for _, pii := range []string{"alice@example.com", "Alice"} {
		if strings.Contains(logs, pii) {
			t.Errorf("personal data %q logged", pii)
		}
	}
}
