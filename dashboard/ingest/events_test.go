package ingest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/services/contracts"
)

func evIDs(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func TestEventsRing(t *testing.T) {
	s := NewEvents(3)
	if got := s.Recent(10, ""); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	for i := 1; i <= 2; i++ {
		s.Add(Event{ID: fmt.Sprint("e", i), CorrelationID: "o1"})
	}
	if got := evIDs(s.Recent(0, "")); !reflect.DeepEqual(got, []string{"e2", "e1"}) {
		t.Fatalf("before wrap: %v", got)
	}
	s.Add(Event{ID: "e3", CorrelationID: "o2"})
	s.Add(Event{ID: "e4", CorrelationID: "o1"})
	s.Add(Event{ID: "e5", CorrelationID: "o2"})
	if got := evIDs(s.Recent(0, "")); !reflect.DeepEqual(got, []string{"e5", "e4", "e3"}) {
		t.Fatalf("after wrap: %v", got)
	}
	if got := evIDs(s.Recent(2, "")); !reflect.DeepEqual(got, []string{"e5", "e4"}) {
		t.Errorf("n=2: %v", got)
	}
	if got := evIDs(s.Recent(0, "o2")); !reflect.DeepEqual(got, []string{"e5", "e3"}) {
		t.Errorf("o2: %v", got)
	}
	if got := evIDs(s.Recent(1, "o2")); !reflect.DeepEqual(got, []string{"e5"}) {
		t.Errorf("o2 n=1: %v", got)
	}
	if _, ok := s.Get("e1"); ok {
		t.Error("evicted e1 still found")
	}
	if e, ok := s.Get("e4"); !ok || e.CorrelationID != "o1" {
		t.Errorf("Get e4 = %+v %v", e, ok)
	}
	// The same id again (a replay): Get finds the newest copy; when the older copy is
	// overwritten, the newer one stays findable.
	s.Add(Event{ID: "e4", CorrelationID: "replayed"}) // overwrites e3
	s.Add(Event{ID: "e6"})                            // overwrites the old e4
	if e, ok := s.Get("e4"); !ok || e.CorrelationID != "replayed" {
		t.Errorf("Get replayed e4 = %+v %v", e, ok)
	}
	if s.Len() != 3 {
		t.Errorf("len = %d", s.Len())
	}
}

func TestEventsConcurrent(t *testing.T) {
	s := NewEvents(100)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				s.Add(Event{ID: fmt.Sprint(g, "-", i), CorrelationID: fmt.Sprint(i % 7)})
				s.Recent(10, "3")
				s.Get(fmt.Sprint(g, "-", i-50))
			}
		})
	}
	wg.Wait()
	if s.Len() != 100 || len(s.Recent(0, "")) != 100 {
		t.Errorf("len %d", s.Len())
	}
}

// checkout builds the wiretap events of one checkout, one at a time, 10ms apart.
type checkout struct {
	t       *testing.T
	orderID string
	mode    string
	trace   string
	n       int
	events  []Event
}

func (c *checkout) add(typ, source string, extra map[string]any) Event {
	c.t.Helper()
	data := map[string]any{"orderId": c.orderID, "sagaMode": c.mode}
	for k, v := range extra {
		data[k] = v
	}
	raw, err := json.Marshal(data)
	if err != nil {
		c.t.Fatal(err)
	}
	e := Event{ID: fmt.Sprintf("%s-%d", c.orderID, c.n), Type: typ, Source: source, CorrelationID: c.orderID,
		Exchange: contracts.Exchange(typ), RoutingKey: typ, At: t0.Add(time.Duration(c.n) * 10 * time.Millisecond),
		TraceID: c.trace, Payload: raw}
	c.n++
	c.events = append(c.events, e)
	return e
}

type stepWant struct {
	event        string
	failed, comp bool
	reason       string
}

func checkSaga(t *testing.T, sg Saga, orderID, mode, outcome, reason string, want []stepWant) {
	t.Helper()
	if sg.OrderID != orderID || sg.Mode != mode || sg.Outcome != outcome || sg.Reason != reason {
		t.Errorf("saga %s: mode %q outcome %q reason %q, want %q %q %q", sg.OrderID, sg.Mode, sg.Outcome, sg.Reason, mode, outcome, reason)
	}
	if len(sg.Steps) != len(want) {
		t.Fatalf("saga %s: %d steps, want %d: %+v", orderID, len(sg.Steps), len(want), sg.Steps)
	}
	for i, w := range want {
		s := sg.Steps[i]
		if s.Event != w.event || s.Failed != w.failed || s.Compensation != w.comp || s.Reason != w.reason {
			t.Errorf("step %d = %+v, want %+v", i, s, w)
		}
		if s.Since != time.Duration(i)*10*time.Millisecond {
			t.Errorf("step %d since %v", i, s.Since)
		}
	}
}

func TestSagaConfirmed(t *testing.T) {
	s := NewSagas(10)
	c := &checkout{t: t, orderID: "o-ok", mode: contracts.ModeChoreography, trace: "aaaa"}
	feed := []Event{
		c.add(contracts.OrderPlaced, "orders", map[string]any{"userId": "u1", "card": "4242"}),
		c.add(contracts.PaymentAuthorized, "payments", map[string]any{"paymentId": "p1"}),
		c.add(contracts.StockReserved, "inventory", nil),
		c.add(contracts.ShipmentScheduled, "shipping", map[string]any{"shipmentId": "s1"}),
		c.add(contracts.OrderConfirmed, "orders", nil),
	}
	for i, e := range feed {
		sg, ok := s.Apply(e)
		if !ok || len(sg.Steps) != i+1 {
			t.Fatalf("apply %s: %v, %d steps", e.Type, ok, len(sg.Steps))
		}
		if want := OutcomePending; i < len(feed)-1 && sg.Outcome != want {
			t.Errorf("after %s outcome %q", e.Type, sg.Outcome)
		}
	}
	// The confirmation e-mail joins the saga by correlation id; it carries no saga mode.
	note, _ := json.Marshal(contracts.NotificationSentData{NotificationID: "n1", UserID: "u1", OrderID: "o-ok", Kind: "order_confirmed"})
	if _, ok := s.Apply(Event{ID: "n1", Type: contracts.NotificationSent, Source: "notifications", CorrelationID: "o-ok",
		At: t0.Add(50 * time.Millisecond), Payload: note}); !ok {
		t.Error("notification.sent did not join its saga")
	}
	// A replayed message is not a second step.
	if sg, ok := s.Apply(feed[1]); !ok || len(sg.Steps) != 6 {
		t.Errorf("replay: %v %d steps", ok, len(sg.Steps))
	}
	sg, ok := s.Get("o-ok")
	if !ok {
		t.Fatal("saga not found")
	}
	checkSaga(t, sg, "o-ok", contracts.ModeChoreography, OutcomeConfirmed, "", []stepWant{
		{event: contracts.OrderPlaced}, {event: contracts.PaymentAuthorized}, {event: contracts.StockReserved},
		{event: contracts.ShipmentScheduled}, {event: contracts.OrderConfirmed}, {event: contracts.NotificationSent},
	})
	if sg.TraceID != "aaaa" || !sg.Start.Equal(t0) || sg.Steps[0].Service != "orders" || sg.Steps[1].Service != "payments" {
		t.Errorf("saga = %+v", sg)
	}
}

func TestSagaOutOfStockChoreography(t *testing.T) {
	s := NewSagas(10)
	c := &checkout{t: t, orderID: "o-oos", mode: contracts.ModeChoreography, trace: "bbbb"}
	c.add(contracts.OrderPlaced, "orders", nil)
	c.add(contracts.PaymentAuthorized, "payments", nil)
	c.add(contracts.StockRejected, "inventory", map[string]any{"sku": "SKU-GONE", "reason": contracts.ReasonOutOfStock})
	c.add(contracts.PaymentRefunded, "payments", map[string]any{"amountCents": 1200, "reason": contracts.ReasonOutOfStock})
	c.add(contracts.OrderCancelled, "orders", map[string]any{"reason": contracts.ReasonOutOfStock})
	var sg Saga
	for _, e := range c.events {
		sg, _ = s.Apply(e)
	}
	checkSaga(t, sg, "o-oos", contracts.ModeChoreography, OutcomeCancelled, contracts.ReasonOutOfStock, []stepWant{
		{event: contracts.OrderPlaced},
		{event: contracts.PaymentAuthorized},
		{event: contracts.StockRejected, failed: true, reason: contracts.ReasonOutOfStock},
		{event: contracts.PaymentRefunded, comp: true, reason: contracts.ReasonOutOfStock},
		{event: contracts.OrderCancelled, reason: contracts.ReasonOutOfStock},
	})
}

func TestSagaOrchestratedShippingFailure(t *testing.T) {
	s := NewSagas(10)
	c := &checkout{t: t, orderID: "o-orch", mode: contracts.ModeOrchestration, trace: "cccc"}
	reason := map[string]any{"reason": contracts.ReasonShippingFailed}
	c.add(contracts.OrderPlaced, "orders", nil)
	c.add(contracts.CmdPaymentsAuthorize, "orders", nil)
	c.add(contracts.PaymentAuthorized, "payments", nil)
	c.add(contracts.CmdInventoryReserve, "orders", nil)
	c.add(contracts.StockReserved, "inventory", nil)
	c.add(contracts.CmdShippingSchedule, "orders", nil)
	c.add(contracts.ShipmentFailed, "shipping", map[string]any{"reason": "destination XX unreachable"})
	c.add(contracts.CmdInventoryRelease, "orders", reason)
	c.add(contracts.CmdPaymentsRefund, "orders", reason)
	c.add(contracts.StockReleased, "inventory", reason)
	c.add(contracts.PaymentRefunded, "payments", reason)
	c.add(contracts.OrderCancelled, "orders", reason)
	for _, e := range c.events {
		if _, ok := s.Apply(e); !ok {
			t.Fatalf("%s not applied", e.Type)
		}
	}
	sg, _ := s.Get("o-orch")
	r := contracts.ReasonShippingFailed
	checkSaga(t, sg, "o-orch", contracts.ModeOrchestration, OutcomeCancelled, r, []stepWant{
		{event: contracts.OrderPlaced},
		{event: contracts.CmdPaymentsAuthorize},
		{event: contracts.PaymentAuthorized},
		{event: contracts.CmdInventoryReserve},
		{event: contracts.StockReserved},
		{event: contracts.CmdShippingSchedule},
		{event: contracts.ShipmentFailed, failed: true, reason: "destination XX unreachable"},
		{event: contracts.CmdInventoryRelease, comp: true, reason: r},
		{event: contracts.CmdPaymentsRefund, comp: true, reason: r},
		{event: contracts.StockReleased, comp: true, reason: r},
		{event: contracts.PaymentRefunded, comp: true, reason: r},
		{event: contracts.OrderCancelled, reason: r},
	})
	if sg.Steps[1].Service != "orders" || sg.TraceID != "cccc" {
		t.Errorf("saga = %+v", sg)
	}
}

func TestSagaIgnoresOtherEventsAndListsNewestFirst(t *testing.T) {
	s := NewSagas(3)
	user, _ := json.Marshal(contracts.UserRegisteredData{UserID: "u1", Email: "a@b"})
	if _, ok := s.Apply(Event{ID: "x", Type: contracts.UserRegistered, CorrelationID: "u1", Payload: user}); ok {
		t.Error("user.registered made a saga")
	}
	if _, ok := s.Apply(Event{ID: "y", Type: "garbage", Payload: json.RawMessage(`"not json object"`)}); ok {
		t.Error("a malformed message without correlation made a saga")
	}
	// notification.sent for an order never seen: not a saga on its own.
	if _, ok := s.Apply(Event{ID: "z", Type: contracts.NotificationSent, CorrelationID: "o-unknown",
		Payload: json.RawMessage(`{"orderId":"o-unknown"}`)}); ok {
		t.Error("an orphan notification made a saga")
	}
	mk := func(id, mode string) *checkout {
		c := &checkout{t: t, orderID: id, mode: mode}
		c.add(contracts.OrderPlaced, "orders", nil)
		return c
	}
	a := mk("a", contracts.ModeChoreography)
	b := mk("b", contracts.ModeOrchestration)
	cc := mk("c", contracts.ModeChoreography)
	a.add(contracts.PaymentDeclined, "payments", map[string]any{"reason": "card declined"})
	a.add(contracts.OrderCancelled, "orders", map[string]any{"reason": contracts.ReasonPaymentDeclined})
	for _, c := range []*checkout{a, b, cc} {
		for _, e := range c.events[:1] {
			s.Apply(e)
		}
	}
	for _, e := range a.events[1:] {
		s.Apply(e)
	}
	names := func(l []Saga) []string {
		var out []string
		for _, sg := range l {
			out = append(out, sg.OrderID)
		}
		return out
	}
	for _, tc := range []struct {
		n             int
		outcome, mode string
		want          []string
	}{
		{0, "", "", []string{"c", "b", "a"}},
		{2, "", "", []string{"c", "b"}},
		{0, OutcomePending, "", []string{"c", "b"}},
		{0, OutcomeCancelled, "", []string{"a"}},
		{0, "", contracts.ModeOrchestration, []string{"b"}},
		{0, OutcomePending, contracts.ModeChoreography, []string{"c"}},
	} {
		if got := names(s.List(tc.n, tc.outcome, tc.mode)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("List(%d, %q, %q) = %v, want %v", tc.n, tc.outcome, tc.mode, got, tc.want)
		}
	}
	// A fourth saga evicts the first one started.
	d := mk("d", contracts.ModeChoreography)
	s.Apply(d.events[0])
	if got := names(s.List(0, "", "")); !reflect.DeepEqual(got, []string{"d", "c", "b"}) {
		t.Errorf("after eviction: %v", got)
	}
	if _, ok := s.Get("a"); ok || s.Len() != 3 {
		t.Errorf("a still held, or len %d", s.Len())
	}
	// A saga handed out is a copy.
	sg, _ := s.Get("d")
	sg.Steps[0].Event = "changed"
	if again, _ := s.Get("d"); again.Steps[0].Event != contracts.OrderPlaced {
		t.Error("a caller's edit leaked into the store")
	}
}

// A saga whose events arrived before its order.placed (the dashboard started mid-way,
// or clocks disagree) still starts when the order was placed.
func TestSagaLateOrderPlaced(t *testing.T) {
	s := NewSagas(10)
	c := &checkout{t: t, orderID: "late", mode: contracts.ModeChoreography}
	placed := c.add(contracts.OrderPlaced, "orders", nil)
	auth := c.add(contracts.PaymentAuthorized, "payments", nil)
	s.Apply(auth)
	sg, _ := s.Apply(placed)
	if !sg.Start.Equal(t0) || sg.Steps[0].Since != 10*time.Millisecond || sg.Steps[1].Since != 0 {
		t.Errorf("saga = %+v", sg)
	}
}

func TestSagaStepsBounded(t *testing.T) {
	s := NewSagas(1)
	c := &checkout{t: t, orderID: "loop", mode: contracts.ModeChoreography}
	for range MaxSagaSteps + 10 {
		s.Apply(c.add(contracts.PaymentAuthorized, "payments", nil))
	}
	if sg, _ := s.Get("loop"); len(sg.Steps) != MaxSagaSteps {
		t.Errorf("%d steps", len(sg.Steps))
	}
}

// The event and saga stores stay within their bounds after 100k messages.
func TestEventsAndSagasMemoryBounded(t *testing.T) {
	const maxEvents, maxSagas = 10_000, 1000
	evs, sagas := NewEvents(maxEvents), NewSagas(maxSagas)
	types := []string{contracts.OrderPlaced, contracts.PaymentAuthorized, contracts.StockReserved,
		contracts.ShipmentScheduled, contracts.OrderConfirmed}
	var mid runtime.MemStats
	for i := range 100_000 {
		order := fmt.Sprintf("order-%08d", i/len(types))
		payload, _ := json.Marshal(map[string]any{"orderId": order, "sagaMode": contracts.ModeChoreography,
			"userId": "u1", "items": []contracts.Item{{SKU: "SKU-1", Qty: 2, PriceCents: 1200}}, "totalCents": 2400})
		e := Event{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Type: types[i%len(types)], Source: "orders",
			CorrelationID: order, Exchange: contracts.ExchangeEvents, RoutingKey: types[i%len(types)],
			At: t0.Add(time.Duration(i) * time.Millisecond), TraceID: fmt.Sprintf("%032x", i/len(types)),
			Headers: map[string]string{"traceparent": "00-" + fmt.Sprintf("%032x", i/len(types)) + "-0000000000000001-01"},
			Payload: payload}
		evs.Add(e)
		sagas.Apply(e)
		if i == 50_000 {
			runtime.GC()
			runtime.ReadMemStats(&mid)
		}
	}
	if evs.Len() != maxEvents || len(evs.Recent(0, "")) != maxEvents || sagas.Len() != maxSagas {
		t.Fatalf("held %d events, %d sagas", evs.Len(), sagas.Len())
	}
	runtime.GC()
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	if end.HeapInuse > 64<<20 || end.HeapInuse > mid.HeapInuse+8<<20 {
		t.Errorf("heap in use %.1f MiB after 100k events (%.1f MiB after 50k)",
			float64(end.HeapInuse)/(1<<20), float64(mid.HeapInuse)/(1<<20))
	}
	t.Logf("heap in use %.1f MiB after 50k events, %.1f MiB after 100k", float64(mid.HeapInuse)/(1<<20), float64(end.HeapInuse)/(1<<20))
	runtime.KeepAlive(evs)
	runtime.KeepAlive(sagas)
}

// Messages of several megabytes leave the event store within its default byte budget:
// each payload is cut to a JSON string that ends with a marker, the event says it was
// cut, and small events are stored as they came.
func TestEventsBoundedInBytes(t *testing.T) {
	evs := NewEvents(5000)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range 40 {
		// A fresh payload each time, as each delivery is.
		big := `{"orderId":"o-big","blob":"` + strings.Repeat(string(rune('a'+i%26)), 4<<20) + `"}`
		evs.Add(Event{ID: fmt.Sprint("big-", i), Type: contracts.OrderPlaced, Source: "orders", CorrelationID: "o-big",
			Headers: map[string]string{"x-blob": big[:1<<20]}, Payload: json.RawMessage(big)})
	}
	evs.Add(Event{ID: "small", Type: contracts.OrderPlaced, Source: "orders", CorrelationID: "o1",
		Payload: json.RawMessage(`{"orderId":"o1"}`)})
	runtime.GC()
	runtime.ReadMemStats(&after)
	const budget = 16 << 20 // the default
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > budget {
		t.Errorf("the heap grew by %d MiB holding 40 messages of 4 MiB, the store's budget is %d MiB", grown>>20, budget>>20)
	}
	e, ok := evs.Get("big-39")
	if !ok {
		t.Fatal("the newest large event is not held")
	}
	var s string
	if err := json.Unmarshal(e.Payload, &s); err != nil || len(e.Payload) > 16<<10+64 ||
		!strings.HasPrefix(s, `{"orderId":"o-big"`) || !strings.Contains(s, "[truncated ") {
		t.Errorf("payload of %d bytes (%v), want a JSON string of its first 16 KiB ending in a marker", len(e.Payload), err)
	}
	if h := e.Headers["x-blob"]; len(h) > 16<<10+64 || !strings.Contains(h, "[truncated ") {
		t.Errorf("a 1 MiB header held as %d bytes", len(h))
	}
	if b, _ := json.Marshal(e); !strings.Contains(string(b), `"truncated":true`) {
		t.Error("the event as served does not say it was cut")
	}
	small, ok := evs.Get("small")
	if b, _ := json.Marshal(small); !ok || string(small.Payload) != `{"orderId":"o1"}` || strings.Contains(string(b), "truncated") {
		t.Errorf("small event %s", b)
	}
	runtime.KeepAlive(evs)
}
