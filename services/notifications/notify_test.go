package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/testenv"
)

func (h *harness) notify(body any) (int, map[string]any) {
	h.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.Post(h.base+"/notify", "application/json", bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestNotifySync: POST /notify (orders' call under notifications.mode=sync) sends the
// confirmation once per order however often it is called, announces it like the event
// path does, and the order.confirmed that follows sends no second email.
func TestNotifySync(t *testing.T) {
	t.Parallel()
	h := start(t)
	order, user := testenv.Name("o"), testenv.Name("u")
	data := contracts.OrderConfirmedData{Saga: contracts.Saga{OrderID: order, SagaMode: contracts.ModeChoreography}, UserID: user, TotalCents: 1200}
	if code, out := h.notify(data); code != http.StatusCreated || out["sent"] != true {
		t.Fatalf("first call: %d %v", code, out)
	}
	if code, out := h.notify(data); code != http.StatusOK || out["sent"] != false {
		t.Fatalf("repeated call: %d %v, want 200 sent=false", code, out)
	}
	got := h.emitted.Await(time.Minute, 1, func(e contracts.Envelope) bool {
		return e.EventType == contracts.NotificationSent && e.CorrelationID == order
	})
	if len(got) != 1 {
		t.Fatalf("notification.sent for the call: %d", len(got))
	}
	in := h.bus.Publish(t, contracts.OrderConfirmed, order, data)
	if !h.logs.AwaitLine(time.Minute, "confirmation already sent synchronously", order) {
		t.Fatalf("order.confirmed %s after the call was not recognised as sent", in.EventID)
	}
	if code, items := h.list(url.Values{"orderId": {order}}); code != http.StatusOK || len(items) != 1 || items[0].Kind != kindOrderConfirmed {
		t.Fatalf("notifications of the order: %d %+v, want one confirmation", code, items)
	}
	for _, bad := range []any{map[string]any{"userId": user}, map[string]any{"orderId": order}, map[string]any{"orderId": order, "userId": user, "nope": 1}} {
		if code, out := h.notify(bad); code != http.StatusBadRequest {
			t.Errorf("POST /notify %v: %d %v, want 400", bad, code, out)
		}
	}
}
