package main

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
	"microlab/services/shop"
)

// wait bounds every wait for something that must happen (a message, a step, a final
// status). It is generous on purpose: a -race run on a busy 2-core machine can be many
// times slower than an idle one, and the bound only costs time when a test fails anyway.
const wait = 90 * time.Second

// calm: the settings of an orchestration lab, with a saga.step_timeout far beyond
// anything a test waits for (the default, 15s, is not), so that a slow run never
// compensates a step the test has yet to answer. Only TestOrchestrationTimeouts lowers
// it, on purpose.
var calm = map[string]string{control.SagaMode: contracts.ModeOrchestration, control.SagaStepTimeout: "10m"}

// TestAPI: the internal API's contract — authentication, validation, pricing from the
// real catalog, what an order looks like, privacy between users, pagination.
func TestAPI(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil)
	user := testenv.Name("u")

	t.Run("X-User-Id required", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{http.MethodPost, "/orders"}, {http.MethodGet, "/orders/x"}, {http.MethodGet, "/orders"},
		} {
			var e errorAnswer
			var body any
			if c.method == http.MethodPost {
				body = order(cardOK, "LAB-MUG", 1, "DE")
			}
			if code := l.do(c.method, c.path, "", nil, body, &e); code != http.StatusUnauthorized || e.Error.Code != "unauthorized" {
				t.Errorf("%s %s without X-User-Id: %d %+v", c.method, c.path, code, e)
			}
		}
	})

	t.Run("validation", func(t *testing.T) {
		many := order(cardOK, "LAB-MUG", 1, "DE")
		for range shop.MaxLines {
			many.Items = append(many.Items, Line{SKU: "LAB-MUG", Qty: 1})
		}
		for _, c := range []struct {
			name string
			body any
			code string
		}{
			{"no items", func() PlaceRequest { o := order(cardOK, "LAB-MUG", 1, "DE"); o.Items = nil; return o }(), "invalid_field"},
			{"too many lines", many, "invalid_field"},
			{"qty 0", order(cardOK, "LAB-MUG", 0, "DE"), "invalid_field"},
			{"qty 101", order(cardOK, "LAB-MUG", 101, "DE"), "invalid_field"},
			{"empty sku", order(cardOK, "", 1, "DE"), "missing_field"},
			{"no card", order("", "LAB-MUG", 1, "DE"), "missing_field"},
			{"no street", func() PlaceRequest { o := order(cardOK, "LAB-MUG", 1, "DE"); o.ShippingAddress.Street = " "; return o }(), "missing_field"},
			{"country 3 letters", order(cardOK, "LAB-MUG", 1, "DEU"), "invalid_field"},
			{"country digits", order(cardOK, "LAB-MUG", 1, "D1"), "invalid_field"},
			{"unknown field", `{"items":[{"sku":"LAB-MUG","qty":1}],"card":"4242424242424242","price":1,"shippingAddress":{}}`, "unknown_field"},
			{"qty not an integer", `{"items":[{"sku":"LAB-MUG","qty":1.5}]}`, "invalid_field"},
			{"malformed", `{"items":`, "malformed_json"},
		} {
			var e errorAnswer
			if code := l.do(http.MethodPost, "/orders", user, nil, c.body, &e); code != http.StatusBadRequest || e.Error.Code != c.code {
				t.Errorf("%s: %d %+v, want 400 %s", c.name, code, e, c.code)
			}
		}
	})

	t.Run("unknown sku is 422 naming it", func(t *testing.T) {
		req := order(cardOK, "LAB-MUG", 1, "DE")
		req.Items = append(req.Items, Line{SKU: "LAB-NOPE", Qty: 1})
		var e errorAnswer
		if code := l.post(user, nil, req, &e); code != http.StatusUnprocessableEntity ||
			e.Error.Code != "unknown_sku" || !strings.Contains(e.Error.Message, "LAB-NOPE") {
			t.Fatalf("%d %+v", code, e)
		}
	})

	t.Run("placed order priced by catalog, card kept as last 4 only", func(t *testing.T) {
		req := order(cardOK, "LAB-TEE", 2, "de") // country normalised
		req.Items = append(req.Items, Line{SKU: "LAB-PEN", Qty: 3}, Line{SKU: "LAB-TEE", Qty: 1})
		id := l.place(user, req, nil)
		o := l.get(user, id)
		want := []ItemView{{"LAB-TEE", 2, 2500}, {"LAB-PEN", 3, 250}, {"LAB-TEE", 1, 2500}}
		if o.OrderID != id || o.Status != statusPending || o.CancelReason != "" || !slices.Equal(o.Items, want) ||
			o.TotalCents != 3*2500+3*250 || o.Currency != "EUR" || o.SagaMode != contracts.ModeChoreography ||
			o.CreatedAt.IsZero() || !slices.Equal(steps(o), []string{"order/placed"}) || o.Steps[0].At.IsZero() {
			t.Fatalf("order %+v", o)
		}
		placed := placedCheckout(t, l.tap.await(t, id, 1, wait)[0])
		if placed.Card != cardOK || placed.TotalCents != o.TotalCents || placed.UserID != user ||
			placed.SagaMode != contracts.ModeChoreography || placed.ShippingAddress.Country != "DE" || len(placed.Items) != 3 {
			t.Fatalf("order.placed %+v", placed)
		}
		// Nothing in orders' own tables holds the full card (the outbox row is the
		// message itself, which carries it by contract).
		conn, err := pgx.Connect(context.Background(), l.env["DATABASE_URL"])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var last4 string
		var leaks int
		if err := conn.QueryRow(context.Background(), `SELECT card_last4,
			(SELECT count(*) FROM orders x WHERE row_to_json(x)::text ~ '4242 ?4242 ?4242')
			+ (SELECT count(*) FROM order_steps x WHERE row_to_json(x)::text ~ '4242 ?4242 ?4242')
			FROM orders WHERE order_id = $1`, id).Scan(&last4, &leaks); err != nil {
			t.Fatal(err)
		}
		if last4 != "4242" || leaks != 0 {
			t.Fatalf("card_last4 %q, rows holding the full card: %d", last4, leaks)
		}
	})

	t.Run("another user's order is 404", func(t *testing.T) {
		id := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
		var e errorAnswer
		if code := l.do(http.MethodGet, "/orders/"+id, "someone-else", nil, nil, &e); code != http.StatusNotFound || e.Error.Code != "not_found" {
			t.Fatalf("%d %+v", code, e)
		}
		if code := l.do(http.MethodGet, "/orders/no-such-order", user, nil, nil, &e); code != http.StatusNotFound {
			t.Fatalf("unknown id: %d", code)
		}
	})

	t.Run("list: newest first, keyset pages", func(t *testing.T) {
		u := testenv.Name("pager")
		var ids []string
		for i := range 5 {
			ids = append(ids, l.place(u, order(cardOK, "LAB-MUG", i+1, "DE"), nil))
		}
		slices.Reverse(ids)
		var got []string
		cursor := ""
		for page := 0; ; page++ {
			var p OrderPage
			path := "/orders?limit=2"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			if code := l.do(http.MethodGet, path, u, nil, nil, &p); code != http.StatusOK {
				t.Fatalf("page %d: %d", page, code)
			}
			for _, o := range p.Items {
				got = append(got, o.OrderID)
				if len(o.Items) != 1 || o.Status == "" || o.TraceID == "" {
					t.Fatalf("listed order lacks items, status or trace: %+v", o)
				}
			}
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
			if page > 5 {
				t.Fatal("pagination does not end")
			}
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("listed %v, want %v", got, ids)
		}
		var p OrderPage
		if code := l.do(http.MethodGet, "/orders", u, nil, nil, &p); code != http.StatusOK || len(p.Items) != 5 || p.NextCursor != "" {
			t.Fatalf("default page: %d %d items, next %q", code, len(p.Items), p.NextCursor)
		}
		if code := l.do(http.MethodGet, "/orders", "nobody", nil, nil, &p); code != http.StatusOK || p.Items == nil || len(p.Items) != 0 {
			t.Fatalf("no orders: %d %+v", code, p)
		}
		for _, q := range []string{"limit=0", "limit=101", "limit=x", "limit=", "cursor=%21%21", "cursor=bm9jb2xvbg"} {
			var e errorAnswer
			if code := l.do(http.MethodGet, "/orders?"+q, u, nil, nil, &e); code != http.StatusBadRequest || e.Error.Code != "invalid_parameter" {
				t.Errorf("?%s: %d %+v", q, code, e)
			}
		}
	})
}

// TestCatalogUnavailable: without catalog, prices cannot be read: 503, no order.
func TestCatalogUnavailable(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "orders", true)
	env["CATALOG_URL"] = deadCatalog(t)
	l := startLab(t, env)
	var e errorAnswer
	if code := l.do(http.MethodPost, "/orders", "u1", nil, order(cardOK, "LAB-MUG", 1, "DE"), &e); code != http.StatusServiceUnavailable ||
		e.Error.Code != "catalog_unavailable" {
		t.Fatalf("%d %+v", code, e)
	}
	var p OrderPage
	if l.do(http.MethodGet, "/orders", "u1", nil, nil, &p); len(p.Items) != 0 {
		t.Fatalf("an order was created: %+v", p.Items)
	}
}

// TestIdempotencyKey: a retried request creates no second order, a different request
// with the same key is refused, and concurrent retries race safely.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	l := newLab(t, nil)
	user := testenv.Name("u")
	key := map[string]string{"Idempotency-Key": "k-1"}
	first := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), key)

	// The same request, spelled differently (key order, whitespace, country case).
	same := `{ "shippingAddress": {"country":"de","postalCode":"N1 1AA","city":"London","street":"1 Analytical St","name":"Ada Lovelace"},
		"card": "4242 4242 4242 4242", "items": [ {"qty": 1, "sku": "LAB-MUG"} ] }`
	if again := l.place(user, same, key); again != first {
		t.Fatalf("retry created order %s, first was %s", again, first)
	}
	var e errorAnswer
	if code := l.post(user, key, order(cardOK, "LAB-MUG", 2, "DE"), &e); code != http.StatusConflict ||
		e.Error.Code != "idempotency_key_reused" {
		t.Fatalf("same key, different body: %d %+v", code, e)
	}
	// Keys are per user: another user's k-1 is another order.
	if other := l.place(testenv.Name("u"), order(cardOK, "LAB-MUG", 1, "DE"), key); other == first {
		t.Fatal("another user's request with the same key got the first user's order")
	}

	// Twenty concurrent requests with one fresh key: one order, every answer names it.
	racer := testenv.Name("racer")
	rkey := map[string]string{"Idempotency-Key": "race"}
	ids := make([]string, 20)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ids {
		wg.Go(func() {
			<-start
			var out PlaceAnswer
			if code := l.post(racer, rkey, order(cardOK, "LAB-CAP", 1, "DE"), &out); code != http.StatusAccepted {
				t.Errorf("concurrent request %d: %d", i, code)
			}
			ids[i] = out.OrderID
		})
	}
	close(start)
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("concurrent requests got different orders: %v", ids)
		}
	}
	var p OrderPage
	l.do(http.MethodGet, "/orders", racer, nil, nil, &p)
	if len(p.Items) != 1 {
		t.Fatalf("racer has %d orders, want 1", len(p.Items))
	}
	l.tap.await(t, ids[0], 1, wait)
	l.flush() // every placement has committed (all answers are in): all they emitted is on the tap
	if n := l.tap.count(ids[0], contracts.OrderPlaced); n != 1 {
		t.Fatalf("order.placed emitted %d times", n)
	}
}

// script is one saga run: what the participants answer, and what orders must emit.
type move struct {
	reply  string // event the test publishes ("" = none)
	reason string // its reason
	// emits: what orders must emit next, in this order (a set when unordered is true).
	emits     []string
	unordered bool
	pending   bool // after the reply and the emits, the order must still be pending
}

type sagaCase struct {
	name           string
	moves          []move
	status, reason string
	steps          []string
}

func runSaga(t *testing.T, l *lab, mode string, c sagaCase) {
	t.Helper()
	user := testenv.Name("u")
	id := l.place(user, order(cardOK, "LAB-HOODIE", 2, "FR"), nil)
	first := []string{contracts.OrderPlaced}
	if mode == contracts.ModeOrchestration {
		first = append(first, contracts.CmdPaymentsAuthorize)
	}
	got := l.tap.await(t, id, len(first), wait)
	if !slices.Equal(types(got[:len(first)]), first) {
		t.Fatalf("orders emitted %v first, want %v", types(got), first)
	}
	checkout := placedCheckout(t, got[0]).Checkout
	if checkout.SagaMode != mode || checkout.TotalCents != 11000 {
		t.Fatalf("order.placed %+v", checkout)
	}
	if mode == contracts.ModeOrchestration {
		var cmd contracts.PaymentsAuthorizeData
		if err := got[1].DecodeData(&cmd); err != nil || cmd.Card != cardOK || cmd.TotalCents != 11000 || got[1].CausationID != got[0].EventID {
			t.Fatalf("payments.authorize %+v (causation %s) %v", cmd, got[1].CausationID, err)
		}
	}
	seen := len(first)
	for i, m := range c.moves {
		var cause string
		if m.reply != "" {
			// One reply at a time: orders handles messages concurrently, and the test wants
			// a definite order of events.
			before := len(l.get(user, id).Steps)
			cause = l.reply(m.reply, checkout, "", m.reason).EventID
			l.waitStep(user, id, before, m.reply)
		}
		got = l.tap.await(t, id, seen+len(m.emits), wait)
		next := types(got[seen : seen+len(m.emits)])
		want := slices.Clone(m.emits)
		if m.unordered {
			slices.Sort(next)
			slices.Sort(want)
		}
		if !slices.Equal(next, want) {
			t.Fatalf("move %d (%s): orders emitted %v, want %v", i, m.reply, next, want)
		}
		for _, e := range got[seen : seen+len(m.emits)] {
			if cause != "" && e.CausationID != cause {
				t.Fatalf("move %d: %s has causation %q, want the reply's id %q", i, e.EventType, e.CausationID, cause)
			}
			if contracts.IsCommand(e.EventType) && (e.EventType == contracts.CmdPaymentsRefund || e.EventType == contracts.CmdInventoryRelease) {
				var d contracts.PaymentRefundData
				if err := e.DecodeData(&d); err != nil || d.Reason != c.reason || d.OrderID != id {
					t.Fatalf("%s: %+v %v, want reason %s", e.EventType, d, err, c.reason)
				}
			}
		}
		seen += len(m.emits)
		if m.pending {
			// The reply was handled (waitStep): whatever it made orders emit is in the
			// outbox, and after flush on the tap.
			l.flush()
			if o := l.get(user, id); o.Status != statusPending || len(l.tap.emitted(id)) != seen {
				t.Fatalf("move %d: order %s, emitted %v; want still pending, nothing more", i, o.Status, types(l.tap.emitted(id)))
			}
		}
	}
	o := l.waitFinal(user, id, wait)
	if o.Status != c.status || o.CancelReason != c.reason || o.SagaMode != mode {
		t.Fatalf("order %s/%q in %s, want %s/%q; steps %v", o.Status, o.CancelReason, o.SagaMode, c.status, c.reason, steps(o))
	}
	if !slices.Equal(steps(o), c.steps) {
		t.Fatalf("steps\n got %v\nwant %v", steps(o), c.steps)
	}
	// Event sourcing: the order rebuilt from its stream is the order the tables hold.
	if s := l.stream(id); s.Version != len(o.Steps) {
		t.Fatalf("stream of %d events for %d steps", s.Version, len(o.Steps))
	} else {
		sameOrder(t, s.State, l.get(user, id))
	}
	// The final event, once, and nothing after it.
	final := contracts.OrderConfirmed
	if c.status == statusCancelled {
		final = contracts.OrderCancelled
	}
	l.flush() // every reply has been handled (waitStep) and the order is final
	all := l.tap.emitted(id)
	if len(all) != seen || all[len(all)-1].EventType != final {
		t.Fatalf("orders emitted %v, want %d messages ending with %s", types(all), seen, final)
	}
	if final == contracts.OrderCancelled {
		var d contracts.OrderCancelledData
		if err := all[len(all)-1].DecodeData(&d); err != nil || d.Reason != c.reason || d.UserID != user || d.SagaMode != mode {
			t.Fatalf("order.cancelled %+v %v", d, err)
		}
	} else {
		var d contracts.OrderConfirmedData
		if err := all[len(all)-1].DecodeData(&d); err != nil || d.TotalCents != 11000 || d.UserID != user {
			t.Fatalf("order.confirmed %+v %v", d, err)
		}
	}
}

// TestChoreography: orders logs every participant's event and ends the order on
// payment.declined, shipment.scheduled and payment.refunded. It never sends a command.
func TestChoreography(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.SagaMode: contracts.ModeChoreography})
	for _, c := range []sagaCase{
		{name: "happy path", moves: []move{
			{reply: contracts.PaymentAuthorized},
			{reply: contracts.StockReserved},
			{reply: contracts.ShipmentScheduled, emits: []string{contracts.OrderConfirmed}},
		}, status: statusConfirmed,
			steps: []string{"order/placed", "payment/authorized", "stock/reserved", "shipment/scheduled", "order/confirmed"}},
		{name: "card declined", moves: []move{
			{reply: contracts.PaymentDeclined, reason: "card_declined", emits: []string{contracts.OrderCancelled}},
		}, status: statusCancelled, reason: contracts.ReasonPaymentDeclined,
			steps: []string{"order/placed", "payment/declined", "order/cancelled"}},
		{name: "out of stock", moves: []move{
			{reply: contracts.PaymentAuthorized},
			{reply: contracts.StockRejected, reason: contracts.ReasonOutOfStock, pending: true},
			{reply: contracts.PaymentRefunded, reason: contracts.ReasonOutOfStock, emits: []string{contracts.OrderCancelled}},
		}, status: statusCancelled, reason: contracts.ReasonOutOfStock,
			steps: []string{"order/placed", "payment/authorized", "stock/rejected", "payment/refunded", "order/cancelled"}},
		{name: "shipping failed", moves: []move{
			{reply: contracts.PaymentAuthorized},
			{reply: contracts.StockReserved},
			{reply: contracts.ShipmentFailed, reason: contracts.ReasonShippingFailed},
			{reply: contracts.StockReleased, reason: contracts.ReasonShippingFailed, pending: true},
			{reply: contracts.PaymentRefunded, reason: contracts.ReasonShippingFailed, emits: []string{contracts.OrderCancelled}},
			// A late duplicate changes nothing (the order is no longer pending).
			{reply: contracts.ShipmentScheduled},
		}, status: statusCancelled, reason: contracts.ReasonShippingFailed,
			steps: []string{"order/placed", "payment/authorized", "stock/reserved", "shipment/failed", "stock/released",
				"payment/refunded", "order/cancelled", "shipment/scheduled"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runSaga(t, l, contracts.ModeChoreography, c)
		})
	}
}

// TestOrchestration: the orchestrator sends one command per step, compensates failures
// and ignores replies that do not fit.
func TestOrchestration(t *testing.T) {
	t.Parallel()
	l := newLab(t, calm)
	for _, c := range []sagaCase{
		{name: "happy path", moves: []move{
			{reply: contracts.PaymentAuthorized, emits: []string{contracts.CmdInventoryReserve}},
			{reply: contracts.StockReserved, emits: []string{contracts.CmdShippingSchedule}},
			{reply: contracts.ShipmentScheduled, emits: []string{contracts.OrderConfirmed}},
		}, status: statusConfirmed,
			steps: []string{"order/placed", "payment/requested", "payment/authorized", "stock/requested", "stock/reserved",
				"shipment/requested", "shipment/scheduled", "order/confirmed"}},
		{name: "card declined", moves: []move{
			{reply: contracts.PaymentDeclined, reason: "card_declined", emits: []string{contracts.OrderCancelled}},
		}, status: statusCancelled, reason: contracts.ReasonPaymentDeclined,
			steps: []string{"order/placed", "payment/requested", "payment/declined", "order/cancelled"}},
		{name: "out of stock", moves: []move{
			{reply: contracts.PaymentAuthorized, emits: []string{contracts.CmdInventoryReserve}},
			{reply: contracts.StockRejected, reason: contracts.ReasonOutOfStock, emits: []string{contracts.CmdPaymentsRefund}, pending: true},
			{reply: contracts.PaymentRefunded, reason: contracts.ReasonOutOfStock, emits: []string{contracts.OrderCancelled}},
		}, status: statusCancelled, reason: contracts.ReasonOutOfStock,
			steps: []string{"order/placed", "payment/requested", "payment/authorized", "stock/requested", "stock/rejected",
				"payment/refund_requested", "payment/refunded", "order/cancelled"}},
		{name: "shipping failed: cancelled only after both compensations", moves: []move{
			{reply: contracts.PaymentAuthorized, emits: []string{contracts.CmdInventoryReserve}},
			{reply: contracts.StockReserved, emits: []string{contracts.CmdShippingSchedule}},
			{reply: contracts.ShipmentFailed, reason: contracts.ReasonShippingFailed,
				emits: []string{contracts.CmdInventoryRelease, contracts.CmdPaymentsRefund}, unordered: true, pending: true},
			{reply: contracts.StockReleased, reason: contracts.ReasonShippingFailed, pending: true},
			{reply: contracts.StockReleased, reason: contracts.ReasonShippingFailed, pending: true}, // duplicate
			{reply: contracts.PaymentRefunded, reason: contracts.ReasonShippingFailed, emits: []string{contracts.OrderCancelled}},
		}, status: statusCancelled, reason: contracts.ReasonShippingFailed,
			steps: []string{"order/placed", "payment/requested", "payment/authorized", "stock/requested", "stock/reserved",
				"shipment/requested", "shipment/failed", "stock/release_requested", "payment/refund_requested",
				"stock/released", "stock/released", "payment/refunded", "order/cancelled"}},
		{name: "duplicate and late replies are ignored", moves: []move{
			{reply: contracts.PaymentAuthorized, emits: []string{contracts.CmdInventoryReserve}},
			{reply: contracts.PaymentAuthorized, pending: true}, // duplicate: no second reserve
			{reply: contracts.StockReserved, emits: []string{contracts.CmdShippingSchedule}},
			{reply: contracts.PaymentDeclined, pending: true}, // does not fit: ignored
			{reply: contracts.ShipmentScheduled, emits: []string{contracts.OrderConfirmed}},
			{reply: contracts.ShipmentFailed}, // after the end
		}, status: statusConfirmed,
			steps: []string{"order/placed", "payment/requested", "payment/authorized", "stock/requested", "payment/authorized",
				"stock/reserved", "shipment/requested", "payment/declined", "shipment/scheduled", "order/confirmed", "shipment/failed"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runSaga(t, l, contracts.ModeOrchestration, c)
		})
	}
	t.Run("ignored replies say so", func(t *testing.T) {
		// Checked on a fresh order: a duplicate authorization is logged as ignored.
		user := testenv.Name("u")
		id := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
		c := placedCheckout(t, l.tap.await(t, id, 2, wait)[0]).Checkout
		l.reply(contracts.PaymentAuthorized, c, "", "")
		l.tap.await(t, id, 3, wait)
		l.reply(contracts.PaymentAuthorized, c, "", "")
		deadline := time.Now().Add(wait)
		for {
			o := l.get(user, id)
			if n := len(o.Steps); n >= 5 {
				if last := o.Steps[n-1]; n != 5 || last.Name != "payment" || !strings.Contains(last.Detail, "ignored: not expected while reserving") {
					t.Fatalf("steps %+v, want the duplicate logged as ignored fifth and last", o.Steps)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("steps %+v", o.Steps)
			}
			time.Sleep(30 * time.Millisecond)
		}
	})
}

// TestOrchestrationTimeouts: with saga.step_timeout=1s (changed live), a step without a
// reply is compensated, and an unanswered compensation is sent again.
func TestOrchestrationTimeouts(t *testing.T) {
	t.Parallel()
	l := newLab(t, calm)
	// The reserve case's order is placed while the timeout is still 10m: its
	// authorization step keeps the deadline it got then, so only its reserve step (whose
	// deadline is set when it starts, from the setting of that moment: 1s) can time out,
	// however long the test takes to answer the authorization on a busy machine.
	reserveUser := testenv.Name("u")
	reserveID := l.place(reserveUser, order(cardOK, "LAB-MUG", 1, "DE"), nil)
	reserveCheckout := placedCheckout(t, l.tap.await(t, reserveID, 2, wait)[0]).Checkout
	testenv.SetLab(t, l.env["LAB_DATABASE_URL"], l.pub, control.SagaStepTimeout, "1s")
	l.waitLog(wait, `"msg":"lab setting applied"`, `"key":"saga.step_timeout"`, `"new":"1s"`)

	t.Run("authorize times out: refund, re-sent until answered, then cancelled", func(t *testing.T) {
		t.Parallel()
		user := testenv.Name("u")
		placedAt := time.Now() // the deadline is set after this: refund no earlier than 1s later
		id := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
		got := l.tap.await(t, id, 2, wait)
		c := placedCheckout(t, got[0]).Checkout
		got = l.tap.await(t, id, 3, wait)
		if got[2].EventType != contracts.CmdPaymentsRefund || time.Since(placedAt) < 950*time.Millisecond {
			t.Fatalf("after the timeout orders emitted %v (after %s)", types(got), time.Since(placedAt))
		}
		// No answer to the refund either: it is sent again.
		got = l.tap.await(t, id, 4, wait)
		if got[3].EventType != contracts.CmdPaymentsRefund {
			t.Fatalf("emitted %v, want the refund re-sent", types(got))
		}
		for _, e := range got[2:4] {
			var d contracts.PaymentRefundData
			if err := e.DecodeData(&d); err != nil || d.Reason != contracts.ReasonTimeout {
				t.Fatalf("refund %+v %v", d, err)
			}
		}
		if o := l.get(user, id); o.Status != statusPending {
			t.Fatalf("cancelled before the refund was confirmed: %+v", o)
		}
		l.reply(contracts.PaymentRefunded, c, "", contracts.ReasonTimeout)
		o := l.waitFinal(user, id, wait)
		if o.Status != statusCancelled || o.CancelReason != contracts.ReasonTimeout {
			t.Fatalf("order %s/%s; steps %v", o.Status, o.CancelReason, steps(o))
		}
		// The authorization arrives late: logged, ignored. Once the step log shows it
		// handled, flush: anything it made orders emit would now be on the tap.
		before := len(o.Steps)
		l.reply(contracts.PaymentAuthorized, c, "", "")
		l.waitStep(user, id, before, contracts.PaymentAuthorized)
		l.flush()
		o = l.get(user, id)
		n := len(l.tap.emitted(id))
		if o.Status != statusCancelled || o.Steps[len(o.Steps)-1].Status != "authorized" ||
			!strings.Contains(o.Steps[len(o.Steps)-1].Detail, "ignored") || l.tap.count(id, contracts.CmdInventoryReserve) != 0 {
			t.Fatalf("late authorization: %s, steps %+v", o.Status, o.Steps)
		}
		want := []string{"order/placed", "payment/requested", "payment/timed_out", "payment/refund_requested",
			"payment/timed_out", "payment/refund_requested", "payment/refunded", "order/cancelled", "payment/authorized"}
		// The refund may have been re-sent more than once if the test was slow; compare
		// the distinct shape.
		if got := steps(o); !slices.Equal(dropRepeats(got), dropRepeats(want)) {
			t.Fatalf("steps %v, want %v", steps(o), want)
		}
		if types(l.tap.emitted(id))[n-1] != contracts.OrderCancelled {
			t.Fatalf("emitted %v", types(l.tap.emitted(id)))
		}
	})

	t.Run("reserve times out: release and refund, cancelled after both", func(t *testing.T) {
		t.Parallel()
		user, id, c := reserveUser, reserveID, reserveCheckout
		l.reply(contracts.PaymentAuthorized, c, "", "")
		got := l.tap.await(t, id, 5, wait)
		comp := types(got[3:5])
		slices.Sort(comp)
		if got[2].EventType != contracts.CmdInventoryReserve ||
			!slices.Equal(comp, []string{contracts.CmdInventoryRelease, contracts.CmdPaymentsRefund}) {
			t.Fatalf("emitted %v", types(got))
		}
		l.reply(contracts.StockReleased, c, "", contracts.ReasonTimeout)
		l.reply(contracts.PaymentRefunded, c, "", contracts.ReasonTimeout)
		o := l.waitFinal(user, id, wait)
		if o.Status != statusCancelled || o.CancelReason != contracts.ReasonTimeout {
			t.Fatalf("order %s/%s; steps %v", o.Status, o.CancelReason, steps(o))
		}
		if !slices.Contains(steps(o), "stock/timed_out") {
			t.Fatalf("steps %v lack stock/timed_out", steps(o))
		}
	})
}

// dropRepeats removes adjacent repetitions of "timed_out, refund_requested" pairs so a
// refund re-sent three times compares equal to one re-sent twice.
func dropRepeats(s []string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		if i >= 2 && len(out) >= 2 && s[i] == out[len(out)-2] && i+1 < len(s) && s[i+1] == out[len(out)-1] {
			i++
			continue
		}
		out = append(out, s[i])
	}
	return out
}

// TestRestartMidSaga: orders stops in the middle of an orchestrated saga; the reply
// arrives while it is down; a new process (same database, same queue) carries on.
func TestRestartMidSaga(t *testing.T) {
	t.Parallel()
	l := newLab(t, calm)
	user := testenv.Name("u")
	id := l.place(user, order(cardOK, "LAB-BOTTLE", 1, "DE"), nil)
	c := placedCheckout(t, l.tap.await(t, id, 2, wait)[0]).Checkout

	l.stop()
	l.reply(contracts.PaymentAuthorized, c, "", "") // waits in orders' durable queue
	// Confirmed, so enqueued: it is there, ready, and nobody took it.
	if n := l.queued(queue.Name()); n != 1 {
		t.Fatalf("%s holds %d ready message(s) while orders is stopped, want the reply", queue.Name(), n)
	}
	if n := len(l.tap.emitted(id)); n != 2 {
		t.Fatalf("orders emitted while stopped: %v", types(l.tap.emitted(id)))
	}
	l.start()

	if got := l.tap.await(t, id, 3, wait); got[2].EventType != contracts.CmdInventoryReserve {
		t.Fatalf("after restart orders emitted %v", types(got))
	}
	l.stop()
	l.start()
	l.reply(contracts.StockReserved, c, "", "")
	if got := l.tap.await(t, id, 4, wait); got[3].EventType != contracts.CmdShippingSchedule {
		t.Fatalf("emitted %v", types(got))
	}
	l.reply(contracts.ShipmentScheduled, c, "", "")
	if o := l.waitFinal(user, id, wait); o.Status != statusConfirmed {
		t.Fatalf("order %+v", o)
	}
}

// TestTwoInstances: two orders processes share one database and one queue (DESIGN §6
// scale-out). Replies land on either; each saga still moves one step at a time and
// every command is sent exactly once.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	l := newLab(t, calm)
	env2 := testenv.Env{}
	for k, v := range l.env {
		env2[k] = v
	}
	env2["INSTANCE_ID"] = "orders-test-2" // and a port of its own (see lab.start)
	l2 := startLab(t, env2)

	const n = 20
	user := testenv.Name("u")
	ids := make([]string, n)
	checkouts := make([]contracts.Checkout, n)
	for i := range n {
		via := l
		if i%2 == 1 {
			via = l2
		}
		ids[i] = via.place(user, order(cardOK, "LAB-SOCKS", 1, "DE"), nil)
	}
	for i, id := range ids {
		// Two relays share the outbox (SKIP LOCKED), so the two rows of one placement
		// may be published by different instances, in either order.
		got := l.tap.await(t, id, 2, wait)
		placed := slices.IndexFunc(got[:2], func(e contracts.Envelope) bool { return e.EventType == contracts.OrderPlaced })
		if placed < 0 {
			t.Fatalf("order %s: orders emitted %v first, want order.placed among them", id, types(got))
		}
		checkouts[i] = placedCheckout(t, got[placed]).Checkout
	}
	// Every reply twice (different event ids, as a duplicating participant would):
	// whichever instance takes the second one must see the first already applied.
	for _, step := range []struct{ reply, next string }{
		{contracts.PaymentAuthorized, contracts.CmdInventoryReserve},
		{contracts.StockReserved, contracts.CmdShippingSchedule},
		{contracts.ShipmentScheduled, contracts.OrderConfirmed},
	} {
		for _, c := range checkouts {
			l.reply(step.reply, c, "", "")
			l.reply(step.reply, c, "", "")
		}
		// The next step's replies only once this step has moved every saga: a reply
		// that arrived before its step would (rightly) be ignored.
		for _, id := range ids {
			deadline := time.Now().Add(wait)
			for l.tap.count(id, step.next) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("order %s: no %s within %s after two %s; emitted %v", id, step.next, wait, step.reply,
						types(l.tap.emitted(id)))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	// Every one of the six replies of every order handled (logged as a step, applied or
	// ignored), then flush: anything a duplicate made either instance emit is on the tap.
	replies := []string{"payment/authorized", "stock/reserved", "shipment/scheduled"}
	for _, id := range ids {
		deadline := time.Now().Add(wait)
		for {
			got := steps(l2.get(user, id))
			handled := 0
			for _, s := range got {
				if slices.Contains(replies, s) {
					handled++
				}
			}
			if handled == 2*len(replies) {
				break
			}
			if handled > 2*len(replies) || time.Now().After(deadline) {
				t.Fatalf("order %s: %d of %d replies handled within %s; steps %v", id, handled, 2*len(replies), wait, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	l.flush()
	for _, id := range ids {
		// The first two in either order (see above); everything after them is caused by a
		// reply the test sent only once the previous command was out.
		got := types(l.tap.emitted(id))
		if len(got) >= 2 && got[0] == contracts.CmdPaymentsAuthorize {
			got[0], got[1] = got[1], got[0]
		}
		if !slices.Equal(got, []string{contracts.OrderPlaced, contracts.CmdPaymentsAuthorize,
			contracts.CmdInventoryReserve, contracts.CmdShippingSchedule, contracts.OrderConfirmed}) {
			t.Errorf("order %s: emitted %v", id, types(l.tap.emitted(id)))
		}
		if o := l2.get(user, id); o.Status != statusConfirmed {
			t.Errorf("order %s: %s", id, o.Status)
		}
	}
}

// deadCatalog is a catalog that is down: it accepts connections and drops them at once.
// (A port nobody listens on would do, until another test's process binds it.)
func deadCatalog(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at the test's end
			}
			_ = c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestChoreographyOverdue: in choreography nothing times out, so an order whose next
// event never comes is surfaced instead: past 4 × saga.step_timeout it gets one
// saga/overdue step, a warning and a place in saga_overdue_orders, and stays pending
// (compensating it here would race with its merely late event). It then finishes
// normally once its events arrive.
func TestChoreographyOverdue(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.SagaMode: contracts.ModeChoreography, control.SagaStepTimeout: "1s"})
	user := testenv.Name("u")
	first := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
	c := placedCheckout(t, l.tap.await(t, first, 1, wait)[0]).Checkout
	l.waitLog(wait, `"msg":"choreography saga overdue"`, `"order_id":"`+first+`"`)
	// A second order marked overdue later proves the scanner went over the first again.
	second := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
	l.waitLog(wait, `"msg":"choreography saga overdue"`, `"order_id":"`+second+`"`)
	o := l.get(user, first)
	if o.Status != statusPending {
		t.Fatalf("an overdue choreography order was changed: %+v", o)
	}
	if got := strings.Count(strings.Join(steps(o), " "), "saga/overdue"); got != 1 {
		t.Fatalf("order %s has %d saga/overdue steps, want 1: %v", first, got, steps(o))
	}
	status, body := l.doRaw("GET", "/metrics", "", nil, nil)
	if status != 200 || !strings.Contains(string(body), "\nsaga_overdue_orders 2\n") {
		t.Fatalf("metrics (%d) do not count the two overdue orders:\n%s", status, grepLines(string(body), "saga_overdue"))
	}
	// Late, but not lost: the saga completes as usual.
	for _, typ := range []string{contracts.PaymentAuthorized, contracts.StockReserved, contracts.ShipmentScheduled} {
		l.reply(typ, c, "", "")
	}
	if o := l.waitFinal(user, first, wait); o.Status != statusConfirmed {
		t.Fatalf("the overdue order did not complete when its events came: %s; steps %v", o.Status, steps(o))
	}
}

func grepLines(s, part string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, part) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestStepsInEventOrder: the step log reads in the order things happened (each event's
// own time), not in the order orders received them. Two events that happened one after
// the other arrive the other way round, as they do when the later one's queue is faster;
// the log still lists the earlier first (before, it listed them as received, and a
// learner saw stock reserved before the payment that caused it).
func TestStepsInEventOrder(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.SagaMode: contracts.ModeChoreography})
	user := testenv.Name("u")
	id := l.place(user, order(cardOK, "LAB-HOODIE", 1, "FR"), nil)
	checkout := placedCheckout(t, l.tap.await(t, id, 1, wait)[0]).Checkout

	authorized := l.envelope(contracts.PaymentAuthorized, checkout, "", "")
	reserved := l.envelope(contracts.StockReserved, checkout, authorized.EventID, "")
	reserved.OccurredAt = authorized.OccurredAt.Add(50 * time.Millisecond)
	l.send(reserved) // the later event first
	l.waitStep(user, id, 0, contracts.StockReserved)
	l.send(authorized)
	l.waitStep(user, id, 0, contracts.PaymentAuthorized)

	o := l.get(user, id)
	want := []string{"order/placed", "payment/authorized", "stock/reserved"}
	if !slices.Equal(steps(o), want) {
		t.Fatalf("steps %v, want %v (in the order the events happened)", steps(o), want)
	}
	us := time.Microsecond // PostgreSQL keeps microseconds
	if !o.Steps[1].At.Equal(authorized.OccurredAt.Truncate(us)) || !o.Steps[2].At.Equal(reserved.OccurredAt.Truncate(us)) {
		t.Fatalf("steps at %v and %v, want the events' own times %v and %v",
			o.Steps[1].At, o.Steps[2].At, authorized.OccurredAt, reserved.OccurredAt)
	}
}
