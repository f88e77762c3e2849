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
// database and vhost, with a database of its own) and returns its base URL.
func startCatalog(t *testing.T, env testenv.Env) string {
	t.Helper()
	bin := filepath.Join(testenv.Build(t, "./services/catalog"), "catalog")
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("catalog log tail:\n%s", tail(logs.String(), 3000))
		}
	})
	return testenv.Exec(t, bin, env.Share(t, "catalog", true), logs).URL
}

// lab is one orders instance under test with everything around it.
type lab struct {
	t    *testing.T
	env  testenv.Env
	base string
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
	l := &lab{t: t, env: env, pub: b.Pub, tap: newTap(t, b), logs: &testenv.LogBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("orders log tail:\n%s", tail(l.logs.String(), 6000))
		}
	})
	l.start()
	return l
}

// start runs orders in-process and waits until it is ready; l.stop stops it (the test's
// end does too).
func (l *lab) start() {
	l.t.Helper()
	l.base, l.stop = testenv.Start(l.t, run, l.env, l.logs)
}

// tap is a wiretap: an exclusive queue bound to '#' on shop.events and to every
// command on shop.commands, recording everything in arrival order.
type tap struct {
	mu   sync.Mutex
	msgs []contracts.Envelope
}

func newTap(t *testing.T, b *testenv.Bus) *tap {
	t.Helper()
	deliveries := b.Wiretap(t)
	tp := &tap{}
	go func() {
		for d := range deliveries {
			env, err := contracts.Decode(d.Body)
			if err != nil {
				continue
			}
			tp.mu.Lock()
			tp.msgs = append(tp.msgs, env)
			tp.mu.Unlock()
		}
	}()
	return tp
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.pub.PublishEnvelope(ctx, env, amqp.Table{}); err != nil {
		l.t.Fatal(err)
	}
	return env
}

// do calls orders' API and decodes the answer into out (if not nil).
func (l *lab) do(method, path, user string, hdr map[string]string, body, out any) int {
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
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			l.t.Fatalf("%s %s: %d: decode %q: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
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
	if code := l.do(http.MethodPost, "/orders", user, hdr, req, &out); code != http.StatusAccepted || out.OrderID == "" || out.Status != statusPending {
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
