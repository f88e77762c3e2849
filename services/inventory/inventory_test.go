package main

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// harness is one inventory instance running in-process against its own database and
// vhost, a publisher into that vhost, and everything inventory emitted so far.
type harness struct {
	t       *testing.T
	env     testenv.Env
	base    string
	bus     *testenv.Bus
	logs    *testenv.LogBuffer
	emitted *testenv.Recorder // what inventory published
}

// start runs inventory with the given number of workers. With ONE worker messages are
// handled in the order they were published, so publishing a sentinel and waiting for its
// answer (sync) proves that everything published before it has been handled.
func start(t *testing.T, workers int) *harness {
	t.Helper()
	env := testenv.ServiceEnv(t, "inventory", true)
	env["AMQP_WORKERS"] = strconv.Itoa(workers)
	h := &harness{t: t, env: env, logs: &testenv.LogBuffer{}}
	h.base = testenv.Run(t, run, env, h.logs)
	h.bus = testenv.Dial(t, env["AMQP_URL"])
	h.emitted = testenv.Record(t, h.bus.Tap(t, contracts.ExchangeEvents, "#"), "inventory")
	return h
}

// publish sends one message of typ for order and returns its envelope.
func (h *harness) publish(typ, order string, data any) contracts.Envelope {
	h.t.Helper()
	return h.bus.Publish(h.t, typ, order, data)
}

// find returns what inventory emitted of typ for order ("" = any order), oldest first.
func (h *harness) find(typ, order string) []contracts.Envelope {
	return h.emitted.Find(func(e contracts.Envelope) bool {
		return e.EventType == typ && (order == "" || e.CorrelationID == order)
	})
}

// await waits for the n-th (1-based) message of typ for order.
func (h *harness) await(typ, order string, n int) contracts.Envelope {
	h.t.Helper()
	got := h.emitted.Await(time.Minute, n, func(e contracts.Envelope) bool {
		return e.EventType == typ && (order == "" || e.CorrelationID == order)
	})
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

// sentinelSKU is what sync reserves; tests do not assert on its level.
const sentinelSKU = "LAB-STICKERS"

// sync returns once everything published so far has been handled (one worker only).
func (h *harness) sync() {
	h.t.Helper()
	order := testenv.Name("sync")
	h.publish(contracts.CmdInventoryReserve, order, contracts.InventoryReserveData{
		Checkout: checkout(order, contracts.ModeOrchestration, contracts.Item{SKU: sentinelSKU, Qty: 1})})
	h.await(contracts.StockReserved, order, 1)
}

func (h *harness) get(path string, v any) int {
	h.t.Helper()
	resp, err := http.Get(h.base + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			h.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// levels returns the stock of skus.
func (h *harness) levels(skus ...string) map[string]int {
	h.t.Helper()
	out := map[string]int{}
	for _, sku := range skus {
		var lv Level
		if code := h.get("/stock/"+sku, &lv); code != http.StatusOK {
			h.t.Fatalf("GET /stock/%s: %d", sku, code)
		}
		out[sku] = lv.OnHand
	}
	return out
}

func (h *harness) reservations(order string) Reservations {
	h.t.Helper()
	var r Reservations
	if code := h.get("/reservations/"+order, &r); code != http.StatusOK {
		h.t.Fatalf("GET /reservations/%s: %d", order, code)
	}
	return r
}

// noFailures checks that no handler failed (a deadlock or a CHECK violation would show
// up here as a retried message even when the final outcome looks right).
func (h *harness) noFailures() {
	h.t.Helper()
	if strings.Contains(h.logs.String(), `"msg":"message failed"`) {
		h.t.Errorf("a handler failed:\n%s", grep(h.logs.String(), "message failed"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func checkout(order, mode string, items ...contracts.Item) contracts.Checkout {
	return contracts.Checkout{
		Saga:            contracts.Saga{OrderID: order, SagaMode: mode},
		UserID:          "u-1",
		Items:           items,
		TotalCents:      100,
		Currency:        "EUR",
		ShippingAddress: contracts.Address{Name: "A", Street: "S", City: "C", PostalCode: "P", Country: "DE"},
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

// reserveMsg builds the reserving message of a mode: the choreography's cue or the
// orchestrator's command.
func reserveMsg(mode string, c contracts.Checkout) (string, any) {
	if mode == contracts.ModeChoreography {
		return contracts.PaymentAuthorized, contracts.PaymentAuthorizedData{Checkout: c, PaymentID: "p-1", AmountCents: c.TotalCents}
	}
	return contracts.CmdInventoryReserve, contracts.InventoryReserveData{Checkout: c}
}

func TestReserve(t *testing.T) {
	t.Parallel()
	h := start(t, 1)
	mug, tee, unicorn := "LAB-MUG", "LAB-TEE", "LAB-UNICORN"
	for _, tc := range []struct {
		name, mode string
		items      []contracts.Item
		want       string         // emitted type
		reason     string         // stock.rejected reason
		sku        string         // stock.rejected sku
		taken      map[string]int // stock taken, per sku
		lines      []Line         // reservation lines
	}{
		{"choreography cue", contracts.ModeChoreography,
			[]contracts.Item{{SKU: mug, Qty: 2}, {SKU: tee, Qty: 1}, {SKU: mug, Qty: 1}},
			contracts.StockReserved, "", "", map[string]int{mug: 3, tee: 1},
			[]Line{{mug, 3, statusReserved}, {tee, 1, statusReserved}}},
		{"orchestration command", contracts.ModeOrchestration,
			[]contracts.Item{{SKU: tee, Qty: 4}},
			contracts.StockReserved, "", "", map[string]int{tee: 4},
			[]Line{{tee, 4, statusReserved}}},
		{"out of stock: unicorn", contracts.ModeChoreography,
			[]contracts.Item{{SKU: mug, Qty: 1}, {SKU: unicorn, Qty: 1}},
			contracts.StockRejected, contracts.ReasonOutOfStock, unicorn, nil, nil},
		{"out of stock: quantity", contracts.ModeOrchestration,
			[]contracts.Item{{SKU: tee, Qty: 1}, {SKU: mug, Qty: 1000001}},
			contracts.StockRejected, contracts.ReasonOutOfStock, mug, nil, nil},
		{"unknown sku", contracts.ModeOrchestration,
			[]contracts.Item{{SKU: mug, Qty: 1}, {SKU: "LAB-NOPE", Qty: 1}},
			contracts.StockRejected, reasonUnknownSKU, "LAB-NOPE", nil, nil},
	} {
		before := h.levels(mug, tee, unicorn)
		order := testenv.Name("o")
		c := checkout(order, tc.mode, tc.items...)
		typ, data := reserveMsg(tc.mode, c)
		sent := h.publish(typ, order, data)
		got := h.await(tc.want, order, 1)
		if got.CausationID != sent.EventID || got.Source != "inventory" {
			t.Errorf("%s: causation=%q source=%q", tc.name, got.CausationID, got.Source)
		}
		switch tc.want {
		case contracts.StockReserved:
			if r := decode[contracts.StockReservedData](t, got); !reflect.DeepEqual(r.Checkout, c) {
				t.Errorf("%s: stock.reserved = %+v; want the checkout carried forward", tc.name, r)
			}
		case contracts.StockRejected:
			want := contracts.StockRejectedData{Saga: c.Saga, SKU: tc.sku, Reason: tc.reason}
			if r := decode[contracts.StockRejectedData](t, got); r != want {
				t.Errorf("%s: stock.rejected = %+v, want %+v", tc.name, r, want)
			}
		}
		after := h.levels(mug, tee, unicorn)
		for sku, n := range before {
			if after[sku] != n-tc.taken[sku] {
				t.Errorf("%s: %s went from %d to %d, want %d taken", tc.name, sku, n, after[sku], tc.taken[sku])
			}
		}
		res := h.reservations(order)
		if len(tc.lines) == 0 {
			tc.lines = []Line{}
		}
		if !reflect.DeepEqual(res.Lines, tc.lines) || res.Reserved != len(tc.lines) || res.Released != 0 {
			t.Errorf("%s: reservations %+v, want lines %+v", tc.name, res, tc.lines)
		}
	}
	var lv Level
	if code := h.get("/stock/LAB-NOPE", &lv); code != http.StatusNotFound {
		t.Errorf("GET /stock/LAB-NOPE: %d, want 404", code)
	}
	h.noFailures()
}

// TestOrchestrationIgnoresCues: in orchestration only commands move inventory.
func TestOrchestrationIgnoresCues(t *testing.T) {
	t.Parallel()
	h := start(t, 1)
	before := h.levels("LAB-BOTTLE")
	cue := testenv.Name("o")
	h.publish(contracts.PaymentAuthorized, cue, contracts.PaymentAuthorizedData{
		Checkout: checkout(cue, contracts.ModeOrchestration, contracts.Item{SKU: "LAB-BOTTLE", Qty: 1})})

	order := testenv.Name("o")
	c := checkout(order, contracts.ModeOrchestration, contracts.Item{SKU: "LAB-BOTTLE", Qty: 2})
	h.publish(contracts.CmdInventoryReserve, order, contracts.InventoryReserveData{Checkout: c})
	h.publish(contracts.ShipmentFailed, order, contracts.ShipmentFailedData{Saga: c.Saga, Reason: contracts.ReasonShippingFailed})
	h.sync()

	if got := h.types(cue); len(got) != 0 {
		t.Errorf("payment.authorized in orchestration: emitted %v", got)
	}
	if got := h.types(order); !reflect.DeepEqual(got, []string{contracts.StockReserved}) {
		t.Errorf("shipment.failed in orchestration: emitted %v", got)
	}
	if after := h.levels("LAB-BOTTLE"); after["LAB-BOTTLE"] != before["LAB-BOTTLE"]-2 {
		t.Errorf("LAB-BOTTLE: %d → %d, want 2 taken", before["LAB-BOTTLE"], after["LAB-BOTTLE"])
	}
	h.noFailures()
}

func TestRelease(t *testing.T) {
	t.Parallel()
	h := start(t, 1)
	hoodie, socks := "LAB-HOODIE", "LAB-SOCKS"
	for _, tc := range []struct {
		name, mode, typ string
		data            func(contracts.Saga) any
		reason          string
	}{
		{"orchestration command", contracts.ModeOrchestration, contracts.CmdInventoryRelease,
			func(s contracts.Saga) any {
				return contracts.InventoryReleaseData{Saga: s, Reason: contracts.ReasonTimeout}
			},
			contracts.ReasonTimeout},
		{"choreography: shipment failed", contracts.ModeChoreography, contracts.ShipmentFailed,
			func(s contracts.Saga) any {
				return contracts.ShipmentFailedData{Saga: s, Reason: contracts.ReasonShippingFailed}
			}, contracts.ReasonShippingFailed},
	} {
		before := h.levels(hoodie, socks)
		order := testenv.Name("o")
		c := checkout(order, tc.mode, contracts.Item{SKU: hoodie, Qty: 2}, contracts.Item{SKU: socks, Qty: 1})
		typ, data := reserveMsg(tc.mode, c)
		h.publish(typ, order, data)
		h.await(contracts.StockReserved, order, 1)
		if mid := h.levels(hoodie, socks); mid[hoodie] != before[hoodie]-2 || mid[socks] != before[socks]-1 {
			t.Fatalf("%s: reserve took %v → %v", tc.name, before, mid)
		}
		sent := h.publish(tc.typ, order, tc.data(c.Saga))
		got := h.await(contracts.StockReleased, order, 1)
		want := contracts.StockReleasedData{Saga: c.Saga, Reason: tc.reason}
		if r := decode[contracts.StockReleasedData](t, got); r != want || got.CausationID != sent.EventID {
			t.Errorf("%s: stock.released = %+v (cause %s), want %+v (cause %s)", tc.name, r, got.CausationID, want, sent.EventID)
		}
		// Releasing again answers again but returns nothing twice.
		h.publish(contracts.CmdInventoryRelease, order, contracts.InventoryReleaseData{Saga: c.Saga, Reason: contracts.ReasonTimeout})
		h.await(contracts.StockReleased, order, 2)
		if after := h.levels(hoodie, socks); !reflect.DeepEqual(after, before) {
			t.Errorf("%s: stock %v after release, want %v back", tc.name, after, before)
		}
		res := h.reservations(order)
		wantLines := []Line{{hoodie, 2, statusReleased}, {socks, 1, statusReleased}}
		if res.Reserved != 0 || res.Released != 2 || !reflect.DeepEqual(res.Lines, wantLines) {
			t.Errorf("%s: reservations %+v", tc.name, res)
		}
	}
	h.noFailures()
}

// TestReleaseBeforeReserve: the orchestrator timed out and compensated before the
// reserve command was handled. The release leaves a tombstone; the late reserve is
// rejected instead of taking stock for a cancelled order.
func TestReleaseBeforeReserve(t *testing.T) {
	t.Parallel()
	h := start(t, 1)
	before := h.levels("LAB-POSTER")
	order := testenv.Name("o")
	c := checkout(order, contracts.ModeOrchestration, contracts.Item{SKU: "LAB-POSTER", Qty: 1})
	h.publish(contracts.CmdInventoryRelease, order, contracts.InventoryReleaseData{Saga: c.Saga, Reason: contracts.ReasonTimeout})
	rel := decode[contracts.StockReleasedData](t, h.await(contracts.StockReleased, order, 1))
	if rel != (contracts.StockReleasedData{Saga: c.Saga, Reason: contracts.ReasonTimeout}) {
		t.Errorf("stock.released = %+v", rel)
	}
	h.publish(contracts.CmdInventoryReserve, order, contracts.InventoryReserveData{Checkout: c})
	rej := decode[contracts.StockRejectedData](t, h.await(contracts.StockRejected, order, 1))
	if rej.Reason != reasonAlreadyReleased {
		t.Errorf("late reserve rejected with %q, want %q", rej.Reason, reasonAlreadyReleased)
	}
	if n := len(h.find(contracts.StockReserved, order)); n != 0 {
		t.Errorf("reserved after compensation (%d times)", n)
	}
	if after := h.levels("LAB-POSTER"); !reflect.DeepEqual(after, before) {
		t.Errorf("stock %v, want untouched %v", after, before)
	}
	if res := h.reservations(order); res.Reserved != 0 || res.Released != 0 || len(res.Lines) != 0 {
		t.Errorf("reservations %+v, want none", res)
	}
	h.noFailures()
}

// TestConcurrentReserves: many checkouts of the same products handled at once (16
// workers) take exactly the sum of their quantities (no lost update), never deadlock
// although half of them list the products in the opposite order, and never oversell
// a product that runs out part-way.
func TestConcurrentReserves(t *testing.T) {
	t.Parallel()
	h := start(t, 16)
	const n = 50
	pen, capSKU := "LAB-PEN", "LAB-CAP"
	before := h.levels(pen, capSKU)
	sum := 0
	for i := range n {
		order := "c" + strconv.Itoa(i) + "-" + testenv.Name("")
		q := i%5 + 1
		sum += q
		items := []contracts.Item{{SKU: pen, Qty: q}, {SKU: capSKU, Qty: 1}}
		if i%2 == 1 {
			items[0], items[1] = items[1], items[0]
		}
		h.publish(contracts.CmdInventoryReserve, order, contracts.InventoryReserveData{
			Checkout: checkout(order, contracts.ModeOrchestration, items...)})
	}
	h.awaitCount(contracts.StockReserved, n)
	if r := h.find(contracts.StockRejected, ""); len(r) != 0 {
		t.Errorf("%d checkouts rejected", len(r))
	}
	after := h.levels(pen, capSKU)
	if after[pen] != before[pen]-sum || after[capSKU] != before[capSKU]-n {
		t.Errorf("stock %v → %v; want %s −%d and %s −%d", before, after, pen, sum, capSKU, n)
	}

	// The last units: only 30 lanyards left for 50 checkouts of one each.
	conn, err := pgx.Connect(context.Background(), h.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE stock SET on_hand = 30 WHERE sku = 'LAB-LANYARD'`); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		order := "l" + strconv.Itoa(i) + "-" + testenv.Name("")
		h.publish(contracts.CmdInventoryReserve, order, contracts.InventoryReserveData{
			Checkout: checkout(order, contracts.ModeOrchestration, contracts.Item{SKU: "LAB-LANYARD", Qty: 1})})
	}
	h.awaitCount(contracts.StockReserved, n+30)
	h.awaitCount(contracts.StockRejected, n-30)
	if lv := h.levels("LAB-LANYARD"); lv["LAB-LANYARD"] != 0 {
		t.Errorf("LAB-LANYARD: %d left, want 0", lv["LAB-LANYARD"])
	}
	for _, e := range h.find(contracts.StockRejected, "") {
		if r := decode[contracts.StockRejectedData](t, e); r.Reason != contracts.ReasonOutOfStock || r.SKU != "LAB-LANYARD" {
			t.Errorf("rejection %+v", r)
		}
	}
	h.noFailures()
}

// awaitCount waits until inventory emitted at least n messages of typ (any order).
func (h *harness) awaitCount(typ string, n int) {
	h.t.Helper()
	if got := h.emitted.Await(2*time.Minute, n, func(e contracts.Envelope) bool { return e.EventType == typ }); len(got) < n {
		h.t.Fatalf("%d %s emitted, want %d", len(got), typ, n)
	}
}

// TestDuplicateDelivery: the same reserve (same eventId) delivered twice takes stock once
// with the inbox on, and twice with it off: reservations have no unique key of their
// own, on purpose (the lab's idempotent-consumer exercise).
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	h := start(t, 1)
	const sku = "LAB-NOTEBOOK"
	deliverTwice := func() (string, int) {
		before := h.levels(sku)[sku]
		order := testenv.Name("o")
		env, err := contracts.NewEnvelope(contracts.CmdInventoryReserve, "test", order, "",
			contracts.InventoryReserveData{Checkout: checkout(order, contracts.ModeOrchestration, contracts.Item{SKU: sku, Qty: 3})})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := h.bus.Pub.PublishEnvelope(context.Background(), env, nil); err != nil {
				t.Fatal(err)
			}
		}
		h.sync()
		return order, before - h.levels(sku)[sku]
	}

	order, taken := deliverTwice()
	if res := h.reservations(order); taken != 3 || res.Reserved != 1 {
		t.Errorf("inbox on: %d taken, %d lines; want 3 and 1", taken, res.Reserved)
	}

	testenv.SetLab(t, h.env["LAB_DATABASE_URL"], h.bus.Pub, control.InboxEnabled, "false")
	h.waitLog(`"msg":"lab setting applied"`, `"key":"inbox.enabled"`, `"new":"false"`)

	order, taken = deliverTwice()
	if res := h.reservations(order); taken != 6 || res.Reserved != 2 || len(h.find(contracts.StockReserved, order)) != 2 {
		t.Errorf("inbox off: %d taken, %d lines; want the duplicate applied twice (6 and 2)", taken, res.Reserved)
	}
	h.noFailures()
}

// waitLog waits for a log line containing every part.
func (h *harness) waitLog(parts ...string) {
	h.t.Helper()
	if !h.logs.AwaitLine(time.Minute, parts...) {
		h.t.Fatalf("no log line with %q", parts)
	}
}
