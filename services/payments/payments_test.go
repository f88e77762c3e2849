package main

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

const (
	testGoodCard     = "4242 4242 4242 4242"
	testDeclinedCard = "4000 0000 0000 0002"
)

// harness is one payments instance running in-process against its own database and
// vhost, a publisher into that vhost, and everything payments emitted so far.
type harness struct {
	t       *testing.T
	env     testenv.Env
	base    string
	bus     *testenv.Bus
	logs    *testenv.LogBuffer
	emitted *testenv.Recorder // what payments published
}

// start runs payments with ONE worker: messages are then handled in the order they were
// published, so publishing a sentinel and waiting for its answer (sync) proves that
// everything published before it has been handled, including messages that must have
// no visible effect.
func start(t *testing.T) *harness {
	t.Helper()
	env := testenv.ServiceEnv(t, "payments", true)
	env["AMQP_WORKERS"] = "1"
	h := &harness{t: t, env: env, logs: &testenv.LogBuffer{}}
	h.base = testenv.Run(t, run, env, h.logs)
	h.bus = testenv.Dial(t, env["AMQP_URL"])
	h.emitted = testenv.Record(t, h.bus.Tap(t, contracts.ExchangeEvents, "#"), "payments")
	return h
}

// publish sends one message of typ for order and returns its envelope.
func (h *harness) publish(typ, order string, data any) contracts.Envelope {
	h.t.Helper()
	return h.bus.Publish(h.t, typ, order, data)
}

func (h *harness) publishEnvelope(env contracts.Envelope) {
	h.t.Helper()
	if err := h.bus.Pub.PublishEnvelope(context.Background(), env, nil); err != nil {
		h.t.Fatal(err)
	}
}

// find returns what payments emitted of typ for order, oldest first.
func (h *harness) find(typ, order string) []contracts.Envelope {
	return h.emitted.Find(func(e contracts.Envelope) bool { return e.EventType == typ && e.CorrelationID == order })
}

// await waits for the n-th (1-based) message of typ for order.
func (h *harness) await(typ, order string, n int) contracts.Envelope {
	h.t.Helper()
	got := h.emitted.Await(time.Minute, n, func(e contracts.Envelope) bool { return e.EventType == typ && e.CorrelationID == order })
	if len(got) < n {
		h.t.Fatalf("order %s: %s #%d never emitted (emitted: %v)", order, typ, n, h.types(order))
	}
	return got[n-1]
}

func (h *harness) types(order string) []string {
	var out []string
	for _, e := range h.emitted.Find(func(e contracts.Envelope) bool { return e.CorrelationID == order }) {
		out = append(out, e.EventType)
	}
	return out
}

// sync returns once everything published so far has been handled (see start).
func (h *harness) sync() {
	h.t.Helper()
	order := testenv.Name("sync")
	h.publish(contracts.CmdPaymentsAuthorize, order, placed(order, contracts.ModeOrchestration, testGoodCard))
	h.await(contracts.PaymentAuthorized, order, 1)
}

func (h *harness) summary(order string) Summary {
	h.t.Helper()
	resp, err := http.Get(h.base + "/payments/" + order)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("GET /payments/%s: %d", order, resp.StatusCode)
	}
	var s Summary
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

// counts is the part of a Summary most tests compare.
type counts struct{ auth, capt, refund, decline int }

func (s Summary) counts() counts {
	return counts{s.Authorizations, s.Captures, s.Refunds, s.Declines}
}

func placed(order, mode, card string) contracts.OrderPlacedData {
	return contracts.OrderPlacedData{
		Checkout: contracts.Checkout{
			Saga:            contracts.Saga{OrderID: order, SagaMode: mode},
			UserID:          "u-1",
			Items:           []contracts.Item{{SKU: "LAB-MUG", Qty: 2, PriceCents: 1200}, {SKU: "LAB-PEN", Qty: 1, PriceCents: 250}},
			TotalCents:      2650,
			Currency:        "EUR",
			ShippingAddress: contracts.Address{Name: "A", Street: "S", City: "C", PostalCode: "P", Country: "DE"},
		},
		Card: card,
	}
}

func decode[T any](t *testing.T, e contracts.Envelope) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCardDecision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		card, last4, reason string
	}{
		{"4242 4242 4242 4242", "4242", ""},
		{"4242424242424242", "4242", ""},
		{"5555-5555-5555-4444", "4444", ""},
		{"4000 0000 0000 0002", "0002", reasonCardDeclined},
		{"4242 4242 4242 4241", "4241", reasonInvalidCard}, // Luhn fails
		{"4242", "4242", reasonInvalidCard},                // too short
		{"4111 1111 1111 1111 1111", "1111", reasonInvalidCard},
		{"not a card", "", reasonInvalidCard},
		{"", "", reasonInvalidCard},
	} {
		last4, reason := cardDecision(tc.card)
		if last4 != tc.last4 || reason != tc.reason {
			t.Errorf("cardDecision(%q) = %q, %q; want %q, %q", tc.card, last4, reason, tc.last4, tc.reason)
		}
	}
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	h := start(t)
	for _, tc := range []struct {
		name, typ, mode, card string
		want, reason          string
	}{
		{"choreography cue", contracts.OrderPlaced, contracts.ModeChoreography, testGoodCard, contracts.PaymentAuthorized, ""},
		{"orchestration command", contracts.CmdPaymentsAuthorize, contracts.ModeOrchestration, testGoodCard, contracts.PaymentAuthorized, ""},
		{"other valid card", contracts.OrderPlaced, contracts.ModeChoreography, "5555 5555 5555 4444", contracts.PaymentAuthorized, ""},
		{"declined card (choreography)", contracts.OrderPlaced, contracts.ModeChoreography, testDeclinedCard, contracts.PaymentDeclined, reasonCardDeclined},
		{"declined card (orchestration)", contracts.CmdPaymentsAuthorize, contracts.ModeOrchestration, testDeclinedCard, contracts.PaymentDeclined, reasonCardDeclined},
		{"invalid card", contracts.CmdPaymentsAuthorize, contracts.ModeOrchestration, "4242 4242 4242 4241", contracts.PaymentDeclined, reasonInvalidCard},
	} {
		order := testenv.Name("o")
		in := placed(order, tc.mode, tc.card)
		sent := h.publish(tc.typ, order, in)
		got := h.await(tc.want, order, 1)
		if got.CausationID != sent.EventID || got.Source != "payments" {
			t.Errorf("%s: causation=%q source=%q", tc.name, got.CausationID, got.Source)
		}
		s := h.summary(order)
		if tc.want == contracts.PaymentAuthorized {
			data := decode[contracts.PaymentAuthorizedData](t, got)
			if data.AmountCents != in.TotalCents || data.PaymentID == "" || !reflect.DeepEqual(data.Checkout, in.Checkout) {
				t.Errorf("%s: payment.authorized = %+v; want the checkout carried forward", tc.name, data)
			}
			if s.counts() != (counts{auth: 1}) || s.AuthorizedCents != in.TotalCents {
				t.Errorf("%s: ledger %+v", tc.name, s)
			}
			continue
		}
		data := decode[contracts.PaymentDeclinedData](t, got)
		if data.Reason != tc.reason || data.Saga != in.Saga {
			t.Errorf("%s: payment.declined = %+v, want reason %s", tc.name, data, tc.reason)
		}
		if s.counts() != (counts{decline: 1}) || s.AuthorizedCents != 0 || s.Entries[0].Reason != tc.reason {
			t.Errorf("%s: ledger %+v", tc.name, s)
		}
	}
	// Only the last four digits may reach the logs.
	logs := h.logs.String()
	for _, full := range []string{"4242424242424242", testGoodCard, "5555555555554444", "5555 5555 5555 4444", "4000000000000002", testDeclinedCard} {
		if strings.Contains(logs, full) {
			t.Errorf("a full card number (%s) was logged", full)
		}
	}
	if !strings.Contains(logs, `"card_last4":"4242"`) {
		t.Error("authorization log lacks card_last4")
	}
}

func TestCapture(t *testing.T) {
	t.Parallel()
	h := start(t)
	for _, mode := range []string{contracts.ModeChoreography, contracts.ModeOrchestration} {
		order := testenv.Name("o")
		in := placed(order, mode, testGoodCard)
		h.publish(contracts.CmdPaymentsAuthorize, order, in)
		h.await(contracts.PaymentAuthorized, order, 1)
		h.publish(contracts.OrderConfirmed, order, contracts.OrderConfirmedData{Saga: in.Saga, UserID: "u-1", TotalCents: in.TotalCents})
		h.sync()
		s := h.summary(order)
		if s.counts() != (counts{auth: 1, capt: 1}) || s.CapturedCents != in.TotalCents {
			t.Errorf("%s: ledger after order.confirmed: %+v", mode, s)
		}
	}
	// Nothing to capture: never authorized, or already refunded.
	never := testenv.Name("o")
	h.publish(contracts.OrderConfirmed, never, contracts.OrderConfirmedData{Saga: contracts.Saga{OrderID: never, SagaMode: contracts.ModeChoreography}})
	refunded := testenv.Name("o")
	in := placed(refunded, contracts.ModeOrchestration, testGoodCard)
	h.publish(contracts.CmdPaymentsAuthorize, refunded, in)
	h.publish(contracts.CmdPaymentsRefund, refunded, contracts.PaymentRefundData{Saga: in.Saga, Reason: contracts.ReasonTimeout})
	h.publish(contracts.OrderConfirmed, refunded, contracts.OrderConfirmedData{Saga: in.Saga})
	h.sync()
	if s := h.summary(never); s.counts() != (counts{}) {
		t.Errorf("captured an order that was never authorized: %+v", s)
	}
	if s := h.summary(refunded); s.counts() != (counts{auth: 1, refund: 1}) || s.CapturedCents != 0 {
		t.Errorf("captured a refunded order: %+v", s)
	}
}

func TestRefund(t *testing.T) {
	t.Parallel()
	h := start(t)
	for _, tc := range []struct {
		name, mode, typ string
		data            func(contracts.Saga) any
		reason          string
	}{
		{"orchestration command", contracts.ModeOrchestration, contracts.CmdPaymentsRefund,
			func(s contracts.Saga) any {
				return contracts.PaymentRefundData{Saga: s, Reason: contracts.ReasonTimeout}
			}, contracts.ReasonTimeout},
		{"choreography: stock rejected", contracts.ModeChoreography, contracts.StockRejected,
			func(s contracts.Saga) any {
				return contracts.StockRejectedData{Saga: s, SKU: "LAB-UNICORN", Reason: contracts.ReasonOutOfStock}
			}, contracts.ReasonOutOfStock},
		{"choreography: shipment failed", contracts.ModeChoreography, contracts.ShipmentFailed,
			func(s contracts.Saga) any {
				return contracts.ShipmentFailedData{Saga: s, Reason: contracts.ReasonShippingFailed}
			}, contracts.ReasonShippingFailed},
	} {
		order := testenv.Name("o")
		in := placed(order, tc.mode, testGoodCard)
		h.publish(contracts.CmdPaymentsAuthorize, order, in)
		auth := decode[contracts.PaymentAuthorizedData](t, h.await(contracts.PaymentAuthorized, order, 1))
		sent := h.publish(tc.typ, order, tc.data(in.Saga))
		got := h.await(contracts.PaymentRefunded, order, 1)
		data := decode[contracts.PaymentRefundedData](t, got)
		want := contracts.PaymentRefundedData{Saga: in.Saga, PaymentID: auth.PaymentID, AmountCents: in.TotalCents, Reason: tc.reason}
		if data != want || got.CausationID != sent.EventID {
			t.Errorf("%s: payment.refunded = %+v (cause %s); want %+v (cause %s)", tc.name, data, got.CausationID, want, sent.EventID)
		}
		// A second refund finds nothing outstanding: money never leaves twice.
		h.publish(contracts.CmdPaymentsRefund, order, contracts.PaymentRefundData{Saga: in.Saga, Reason: contracts.ReasonTimeout})
		if again := decode[contracts.PaymentRefundedData](t, h.await(contracts.PaymentRefunded, order, 2)); again.AmountCents != 0 {
			t.Errorf("%s: second refund gave back %d cents", tc.name, again.AmountCents)
		}
		if s := h.summary(order); s.counts() != (counts{auth: 1, refund: 2}) || s.RefundedCents != in.TotalCents {
			t.Errorf("%s: ledger %+v", tc.name, s)
		}
	}
}

// TestRefundBeforeAuthorize: the orchestrator timed out and compensated before the
// authorize command was handled. The refund leaves a tombstone; the late authorize is
// declined instead of holding money for a cancelled order.
func TestRefundBeforeAuthorize(t *testing.T) {
	t.Parallel()
	h := start(t)
	order := testenv.Name("o")
	in := placed(order, contracts.ModeOrchestration, testGoodCard)
	h.publish(contracts.CmdPaymentsRefund, order, contracts.PaymentRefundData{Saga: in.Saga, Reason: contracts.ReasonTimeout})
	ref := decode[contracts.PaymentRefundedData](t, h.await(contracts.PaymentRefunded, order, 1))
	if ref != (contracts.PaymentRefundedData{Saga: in.Saga, Reason: contracts.ReasonTimeout}) {
		t.Errorf("payment.refunded = %+v, want 0 cents and no payment id", ref)
	}
	h.publish(contracts.CmdPaymentsAuthorize, order, in)
	dec := decode[contracts.PaymentDeclinedData](t, h.await(contracts.PaymentDeclined, order, 1))
	if dec.Reason != reasonAlreadyCompensated {
		t.Errorf("late authorize declined with %q, want %q", dec.Reason, reasonAlreadyCompensated)
	}
	if n := len(h.find(contracts.PaymentAuthorized, order)); n != 0 {
		t.Errorf("authorized after compensation (%d times)", n)
	}
	s := h.summary(order)
	if s.counts() != (counts{refund: 1, decline: 1}) || s.AuthorizedCents != 0 || s.RefundedCents != 0 {
		t.Errorf("ledger %+v", s)
	}
}

// TestOrchestrationIgnoresCues: in orchestration only commands move payments; the
// choreography's events pass by without effect.
func TestOrchestrationIgnoresCues(t *testing.T) {
	t.Parallel()
	h := start(t)
	placedOnly := testenv.Name("o")
	h.publish(contracts.OrderPlaced, placedOnly, placed(placedOnly, contracts.ModeOrchestration, testGoodCard))

	order := testenv.Name("o")
	in := placed(order, contracts.ModeOrchestration, testGoodCard)
	h.publish(contracts.CmdPaymentsAuthorize, order, in)
	h.publish(contracts.StockRejected, order, contracts.StockRejectedData{Saga: in.Saga, SKU: "LAB-UNICORN", Reason: contracts.ReasonOutOfStock})
	h.publish(contracts.ShipmentFailed, order, contracts.ShipmentFailedData{Saga: in.Saga, Reason: contracts.ReasonShippingFailed})
	h.sync()

	if got := h.types(placedOnly); len(got) != 0 {
		t.Errorf("order.placed in orchestration: emitted %v", got)
	}
	if s := h.summary(placedOnly); s.counts() != (counts{}) {
		t.Errorf("order.placed in orchestration: ledger %+v", s)
	}
	if got := h.types(order); !reflect.DeepEqual(got, []string{contracts.PaymentAuthorized}) {
		t.Errorf("cues in orchestration: emitted %v", got)
	}
	if s := h.summary(order); s.counts() != (counts{auth: 1}) {
		t.Errorf("cues in orchestration: ledger %+v", s)
	}
}

// TestDuplicateDelivery: the same message (same eventId) delivered twice authorizes and
// captures once with the inbox on, and twice with it off: the ledger has no dedupe of
// its own, on purpose (the lab's idempotent-consumer exercise).
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	h := start(t)
	deliverTwice := func() (string, contracts.OrderPlacedData) {
		order := testenv.Name("o")
		in := placed(order, contracts.ModeOrchestration, testGoodCard)
		auth, err := contracts.NewEnvelope(contracts.CmdPaymentsAuthorize, "test", order, "", in)
		if err != nil {
			t.Fatal(err)
		}
		conf, err := contracts.NewEnvelope(contracts.OrderConfirmed, "test", order, "", contracts.OrderConfirmedData{Saga: in.Saga})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range []contracts.Envelope{auth, auth, conf, conf} {
			h.publishEnvelope(e)
		}
		h.sync()
		return order, in
	}

	order, in := deliverTwice()
	if s := h.summary(order); s.counts() != (counts{auth: 1, capt: 1}) || s.AuthorizedCents != in.TotalCents {
		t.Errorf("inbox on: ledger %+v", s)
	}
	if n := len(h.find(contracts.PaymentAuthorized, order)); n != 1 {
		t.Errorf("inbox on: payment.authorized emitted %d times", n)
	}

	testenv.SetLab(t, h.env["LAB_DATABASE_URL"], h.bus.Pub, control.InboxEnabled, "false")
	h.waitLog(`"msg":"lab setting applied"`, `"key":"inbox.enabled"`, `"new":"false"`)

	order, in = deliverTwice()
	if s := h.summary(order); s.counts() != (counts{auth: 2, capt: 2}) || s.AuthorizedCents != 2*in.TotalCents {
		t.Errorf("inbox off: ledger %+v; want the duplicate applied twice", s)
	}
	if n := len(h.find(contracts.PaymentAuthorized, order)); n != 2 {
		t.Errorf("inbox off: payment.authorized emitted %d times, want 2", n)
	}
}

// waitLog waits for a log line containing every part.
func (h *harness) waitLog(parts ...string) {
	h.t.Helper()
	if !h.logs.AwaitLine(time.Minute, parts...) {
		h.t.Fatalf("no log line with %q", parts)
	}
}

// TestMalformed: a body that is not JSON and an authorize without an orderId are
// dead-lettered to payments.dlq at their first failure (no retry can cure them), and the
// good message behind them goes through: it is not stuck behind them.
func TestMalformed(t *testing.T) {
	t.Parallel()
	h := start(t)
	ctx := context.Background()
	notJSON := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: testenv.Name("bad"), Type: contracts.CmdPaymentsAuthorize, Body: []byte("this is not json")}
	if err := h.bus.Pub.Publish(ctx, contracts.ExchangeCommands, contracts.CmdPaymentsAuthorize, notJSON); err != nil {
		t.Fatal(err)
	}
	noOrder := testenv.Name("o")
	noOrderMsg := h.publish(contracts.CmdPaymentsAuthorize, noOrder, map[string]any{"sagaMode": contracts.ModeOrchestration, "card": testGoodCard, "totalCents": 100})

	good := testenv.Name("o")
	goodMsg := h.publish(contracts.CmdPaymentsAuthorize, good, placed(good, contracts.ModeOrchestration, testGoodCard))
	h.await(contracts.PaymentAuthorized, good, 1)

	ch, err := h.bus.Conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.Close() }()
	var dead []amqp.Delivery
	deadline := time.Now().Add(time.Minute)
	for len(dead) < 2 && time.Now().Before(deadline) {
		d, ok, err := ch.Get(queue.DLQ(), true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		dead = append(dead, d)
	}
	if len(dead) != 2 {
		t.Fatalf("%d messages in %s, want 2", len(dead), queue.DLQ())
	}
	for _, d := range dead {
		lastErr, _ := d.Headers["x-last-error"].(string)
		if bus.Attempt(d.Headers) != 2 || !strings.Contains(lastErr, "malformed") {
			t.Errorf("dead letter %s: attempt %d, last error %q", d.MessageId, bus.Attempt(d.Headers), lastErr)
		}
	}
	if s := h.summary(noOrder); s.counts() != (counts{}) {
		t.Errorf("malformed message left a ledger entry: %+v", s)
	}

	// Each was tried once, and the failure logged with the reason it was not retried.
	logs := h.logs.String()
	if lineIndex(logs, `"msg":"message handled"`, `"message_id":"`+goodMsg.EventID+`"`, `"attempt":1,`) < 0 {
		t.Fatalf("the good message's handling was not logged")
	}
	for _, id := range []string{notJSON.MessageId, noOrderMsg.EventID} {
		if lineIndex(logs, `"msg":"handler failed"`, `"message_id":"`+id+`"`, `"attempt":1,`, `"failure":"permanent"`, `"next":"dead-letter"`) < 0 {
			t.Errorf("the failure of %s was not logged as permanent and dead-lettered", id)
		}
		if lineIndex(logs, `"message_id":"`+id+`"`, `"attempt":2,`) >= 0 {
			t.Errorf("%s was retried: a malformed message cannot get better", id)
		}
	}
}

// lineIndex returns the index of the first line of logs holding every one of parts, or -1.
func lineIndex(logs string, parts ...string) int {
	for i, line := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return i
		}
	}
	return -1
}
