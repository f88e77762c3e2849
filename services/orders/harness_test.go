package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// The integration tests run orders in-process against its own database and vhost, with
// the REAL catalog service (built once from ./services/catalog) for prices. The test
// plays payments, inventory and shipping: it publishes their replies into the vhost and
// watches what orders emits through a wiretap queue bound to every event and command.

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startCatalog runs the catalog binary on the test's lab database (sharing env's lab
// database and vhost, with a database of its own), points env's CATALOG_GRPC_ADDR at
// its gRPC server and returns its base URL. It is stopped (SIGTERM; a failed exit fails
// the test) when the test ends.
func startCatalog(t *testing.T, env testenv.Env) string {
	t.Helper()
	bin := filepath.Join(testenv.Build(t, "./services/catalog"), "catalog")
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("catalog log tail:\n%s", tail(logs.String(), 3000))
		}
	})
	url := testenv.Exec(t, bin, env.Share(t, "catalog", true), logs).URL
	env["CATALOG_GRPC_ADDR"] = testenv.GRPCAddr(t, logs)
	return url
}

// lab is one orders instance under test with everything around it.
type lab struct {
	t    *testing.T
	env  testenv.Env
	base string
	bus  *testenv.Bus
	pub  *bus.Publisher
	tap  *tap
	logs *testenv.LogBuffer
	stop func() // stops the running orders instance (again: no-op)
}

// newLab provisions an environment, applies lab settings (before orders reads them),
// starts catalog, the wiretap and orders.
func newLab(t *testing.T, settings map[string]string) *lab {
	t.Helper()
	env := testenv.ServiceEnv(t, "orders", true)
	env["LOG_LEVEL"] = "info"
	for k, v := range settings {
		testenv.SetLab(t, env["LAB_DATABASE_URL"], nil, k, v)
	}
	env["CATALOG_URL"] = startCatalog(t, env)
	return startLab(t, env)
}

// startLab starts the wiretap and orders on a prepared environment.
func startLab(t *testing.T, env testenv.Env) *lab {
	t.Helper()
	b := testenv.Dial(t, env["AMQP_URL"])
	l := &lab{t: t, env: env, bus: b, pub: b.Pub, tap: newTap(t, b), logs: &testenv.LogBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("orders log tail:\n%s", tail(l.logs.String(), 6000))
		}
	})
	l.start()
	return l
}

// start runs orders in-process (on a port it picks: see testenv.AnyAddr) and waits until it is
// ready; l.stop stops it, as by SIGTERM, and waits until run has returned, failing the
// test on a run error (again: no-op; the test's end stops it too).
func (l *lab) start() {
	l.t.Helper()
	l.env["HTTP_ADDR"] = testenv.AnyAddr // a restart too: testenv.Start writes back where it listens
	l.base, l.stop = testenv.Start(l.t, run, l.env, l.logs)
}

// tap is a wiretap: an exclusive queue bound to '#' on shop.events and to every
// command on shop.commands, recording everything in arrival order.
type tap struct {
	mu   sync.Mutex
	msgs []contracts.Envelope
	seen map[string]bool // event ids, for flush's markers
}

func newTap(t *testing.T, b *testenv.Bus) *tap {
	t.Helper()
	deliveries := b.Wiretap(t)
	tp := &tap{seen: map[string]bool{}}
	go func() {
		for d := range deliveries {
			env, err := contracts.Decode(d.Body)
			if err != nil {
				continue
			}
			tp.mu.Lock()
			tp.msgs = append(tp.msgs, env)
			tp.seen[env.EventID] = true
			tp.mu.Unlock()
		}
	}()
	return tp
}

func (tp *tap) has(eventID string) bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.seen[eventID]
}

// emitted returns what orders emitted about an order so far, in order.
func (tp *tap) emitted(orderID string) []contracts.Envelope {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []contracts.Envelope
	for _, e := range tp.msgs {
		if e.Source == "orders" && e.CorrelationID == orderID {
			out = append(out, e)
		}
	}
	return out
}

func (tp *tap) count(orderID, typ string) int {
	n := 0
	for _, e := range tp.emitted(orderID) {
		if e.EventType == typ {
			n++
		}
	}
	return n
}

// await waits until orders has emitted at least n messages about an order and returns them.
func (tp *tap) await(t *testing.T, orderID string, n int, within time.Duration) []contracts.Envelope {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := tp.emitted(orderID)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s: orders emitted %d message(s) %v within %s, want %d", orderID, len(got), types(got), within, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func types(envs []contracts.Envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = e.EventType
	}
	return out
}

// reply publishes a participant's event about an order, as payments, inventory or
// shipping would.
func (l *lab) reply(typ string, c contracts.Checkout, causation, reason string) contracts.Envelope {
	l.t.Helper()
	return l.send(l.envelope(typ, c, causation, reason))
}

// envelope is the reply reply sends, not yet sent.
func (l *lab) envelope(typ string, c contracts.Checkout, causation, reason string) contracts.Envelope {
	l.t.Helper()
	var data any
	switch typ {
	case contracts.PaymentAuthorized:
		data = contracts.PaymentAuthorizedData{Checkout: c, PaymentID: "pay-" + c.OrderID[:8], AmountCents: c.TotalCents}
	case contracts.PaymentRefunded:
		data = contracts.PaymentRefundedData{Saga: c.Saga, AmountCents: c.TotalCents, Reason: reason}
	case contracts.StockReserved:
		data = contracts.StockReservedData{Checkout: c}
	case contracts.StockRejected:
		data = contracts.StockRejectedData{Saga: c.Saga, SKU: c.Items[0].SKU, Reason: reason}
	case contracts.ShipmentScheduled:
		data = contracts.ShipmentScheduledData{Checkout: c, ShipmentID: "ship-" + c.OrderID[:8]}
	default: // payment.declined, stock.released, shipment.failed: saga + reason
		data = contracts.PaymentDeclinedData{Saga: c.Saga, Reason: reason}
	}
	env, err := contracts.NewEnvelope(typ, "test", c.OrderID, causation, data)
	if err != nil {
		l.t.Fatal(err)
	}
	return env
}

// send publishes env to orders, as its source would.
func (l *lab) send(env contracts.Envelope) contracts.Envelope {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := l.pub.PublishEnvelope(ctx, env, amqp.Table{}); err != nil {
		l.t.Fatal(err)
	}
	return env
}

// flush returns once every message orders has committed to its outbox so far is on the
// tap. It is how a test proves that something did NOT happen: first wait for the
// positive evidence that orders handled what it was sent (the step log, which commits
// in the handler's transaction together with any message it emits), then flush, then
// assert on what was emitted. No sleep can be long enough on a busy machine; this is
// exact:
//   - the outbox has no unsent row among those committed when flush began: each has
//     been published and confirmed by the broker (a relay marks a row sent only after the confirm), so it
//     sits in the tap's queue; then
//   - a marker the test publishes after that comes through the tap: the queue is FIFO
//     and has one consumer, so everything enqueued before the marker has been read.
//
// It holds with any number of orders instances (they share the outbox).
func (l *lab) flush() {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, err := pgx.Connect(ctx, l.env["DATABASE_URL"])
	if err != nil {
		l.t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Rows committed from now on (a timeout re-sending a refund, say) are not waited for.
	var last int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox`).Scan(&last); err != nil {
		l.t.Fatalf("flush: outbox: %v", err)
	}
	for {
		var unsent int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE sent_at IS NULL AND id <= $1`, last).Scan(&unsent); err != nil {
			l.t.Fatalf("flush: outbox: %v", err)
		}
		if unsent == 0 {
			break
		}
		select {
		case <-ctx.Done():
			l.t.Fatalf("flush: %d outbox row(s) still unsent after %s", unsent, wait)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// An event type no service consumes: only taps see it.
	marker, err := contracts.NewEnvelope("test.flush", "test", testenv.Name("flush"), "", struct{}{})
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.pub.PublishEnvelope(ctx, marker, amqp.Table{}); err != nil {
		l.t.Fatalf("flush: publish marker: %v", err)
	}
	for !l.tap.has(marker.EventID) {
		select {
		case <-ctx.Done():
			l.t.Fatalf("flush: marker not on the tap after %s", wait)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// queued is how many messages wait, ready, in a queue of the lab's vhost (a passive
// declare answers with the broker's current count).
func (l *lab) queued(name string) int {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch, err := l.bus.Conn.Channel(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		l.t.Fatalf("queue %s: %v", name, err)
	}
	return q.Messages
}

// do calls orders' API and decodes the answer into out (if not nil).
func (l *lab) do(method, path, user string, hdr map[string]string, body, out any) int {
	l.t.Helper()
	code, raw := l.doRaw(method, path, user, hdr, body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			l.t.Fatalf("%s %s: %d: decode %q: %v", method, path, code, raw, err)
		}
	}
	return code
}

// doRaw calls orders' API and returns the status and body of the answer.
func (l *lab) doRaw(method, path, user string, hdr map[string]string, body any) (int, []byte) {
	l.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			l.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, l.base+path, rd)
	if err != nil {
		l.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.Header.Set("X-User-Id", user)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// post is POST /orders (answer decoded into out), retried while orders answers 503
// catalog_unavailable: on a busy machine its call to the real catalog can outlast
// CATALOG_TIMEOUT (2s). Retrying is safe: orders prices an order before it stores
// anything, so that answer never leaves an order (or a claimed Idempotency-Key) behind.
// Any other answer is returned as it is. (TestCatalogUnavailable, where that 503 is the
// subject, calls do.)
func (l *lab) post(user string, hdr map[string]string, body, out any) int {
	l.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		code, raw := l.doRaw(http.MethodPost, "/orders", user, hdr, body)
		var e errorAnswer
		if code == http.StatusServiceUnavailable && json.Unmarshal(raw, &e) == nil &&
			e.Error.Code == "catalog_unavailable" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				l.t.Fatalf("POST /orders: %d: decode %q: %v", code, raw, err)
			}
		}
		return code
	}
}

// errorAnswer is the shape of every error answer.
type errorAnswer struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func order(card, sku string, qty int, country string) PlaceRequest {
	return PlaceRequest{
		Items: []Line{{SKU: sku, Qty: qty}},
		Card:  card,
		ShippingAddress: contracts.Address{Name: "Ada Lovelace", Street: "1 Analytical St", City: "London",
			PostalCode: "N1 1AA", Country: country},
	}
}

const (
	cardOK       = "4242 4242 4242 4242"
	cardDeclined = "4000 0000 0000 0002"
)

// place places an order and returns its id (202 expected).
func (l *lab) place(user string, req any, hdr map[string]string) string {
	l.t.Helper()
	var out PlaceAnswer
	if code := l.post(user, hdr, req, &out); code != http.StatusAccepted || out.OrderID == "" || out.Status != statusPending {
		l.t.Fatalf("POST /orders: %d %+v", code, out)
	}
	return out.OrderID
}

func (l *lab) get(user, id string) OrderView {
	l.t.Helper()
	var o OrderView
	if code := l.do(http.MethodGet, "/orders/"+id, user, nil, nil, &o); code != http.StatusOK {
		l.t.Fatalf("GET /orders/%s: %d", id, code)
	}
	return o
}

// waitFinal polls an order until it is no longer pending.
func (l *lab) waitFinal(user, id string, within time.Duration) OrderView {
	l.t.Helper()
	deadline := time.Now().Add(within)
	for {
		o := l.get(user, id)
		if o.Status != statusPending {
			return o
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("order %s still pending after %s; steps %+v", id, within, o.Steps)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// placedCheckout is the checkout order.placed carried (what participants would use).
func placedCheckout(t *testing.T, env contracts.Envelope) contracts.OrderPlacedData {
	t.Helper()
	if env.EventType != contracts.OrderPlaced {
		t.Fatalf("first message is %s, want order.placed", env.EventType)
	}
	var d contracts.OrderPlacedData
	if err := env.DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// steps renders an order's step log as "name/status" strings.
func steps(o OrderView) []string {
	out := make([]string, len(o.Steps))
	for i, s := range o.Steps {
		out[i] = s.Name + "/" + s.Status
	}
	return out
}

// waitLog waits until orders logged a line containing every one of parts.
func (l *lab) waitLog(within time.Duration, parts ...string) {
	l.t.Helper()
	if !l.logs.AwaitLine(within, parts...) {
		l.t.Fatalf("orders never logged a line with %q", parts)
	}
}

// waitStep waits until the order's step log shows the event (a step at index after or
// later), i.e. orders has handled it: the handler's transaction is atomic, so all of its
// effects are visible too.
func (l *lab) waitStep(user, id string, after int, event string) {
	l.t.Helper()
	name, status := step(event)
	deadline := time.Now().Add(wait)
	for {
		o := l.get(user, id)
		for _, s := range o.Steps[min(after, len(o.Steps)):] {
			if s.Name == name && s.Status == status {
				return
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("order %s: %s never logged; steps %v", id, event, steps(o))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
