package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/testenv"
)

// harness is one notifications instance running in-process against its own database
// and vhost, a publisher into that vhost, and everything it emitted so far.
type harness struct {
	t       *testing.T
	base    string
	bus     *testenv.Bus
	logs    *testenv.LogBuffer
	emitted *testenv.Recorder // what notifications published
}

func start(t *testing.T) *harness {
	t.Helper()
	env := testenv.ServiceEnv(t, "notifications", true)
	h := &harness{t: t, logs: &testenv.LogBuffer{}}
	h.base = testenv.Run(t, run, env, h.logs)
	h.bus = testenv.Dial(t, env["AMQP_URL"])
	h.emitted = testenv.Record(t, h.bus.Tap(t, contracts.ExchangeEvents, "#"), "notifications")
	return h
}

// await waits for the notification.sent caused by the message causation.
func (h *harness) await(causation string) contracts.Envelope {
	h.t.Helper()
	got := h.emitted.Await(time.Minute, 1, func(e contracts.Envelope) bool { return e.CausationID == causation })
	if len(got) == 0 {
		h.t.Fatalf("nothing emitted for message %s", causation)
	}
	return got[0]
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
		in := h.bus.Publish(t, tc.typ, corr, tc.data(order, user))
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
