package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// The integration tests run orders in-process against its own database and vhost, with
// the REAL catalog service (built once from ./services/catalog) for prices. The test
// plays payments, inventory and shipping: it publishes their replies into the vhost and
// watches what orders emits through a wiretap queue bound to every event and command.

// catalogBinary is the catalog executable TestMain builds for this test run.
var catalogBinary string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "orders-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		root, err := moduleRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		catalogBinary = filepath.Join(dir, "catalog")
		cmd := exec.Command("go", "build", "-o", catalogBinary, "./services/catalog")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build catalog: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// syncBuffer collects a service's log for failure reports and for waiting on log lines.
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
	cenv := env.Share(t, "catalog", true)
	cmd := exec.Command(catalogBinary)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range cenv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start catalog: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("catalog log tail:\n%s", tail(logs.String(), 3000))
		}
	})
	base := "http://" + cenv["HTTP_ADDR"]
	if !ready(base, exited) {
		t.Fatalf("catalog never became ready; log:\n%s", tail(logs.String(), 3000))
	}
	return base
}

// ready polls /readyz for up to 30 s (or until exited closes).
func ready(base string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-exited:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// lab is one orders instance under test with everything around it.
type lab struct {
	t    *testing.T
	env  testenv.Env
	base string
	pub  *bus.Publisher
	tap  *tap
	logs *syncBuffer
	stop func() // stops the running orders instance; nil when stopped
}

// newLab provisions an environment, applies lab settings (before orders reads them),
// starts catalog, the wiretap and orders.
func newLab(t *testing.T, settings map[string]string) *lab {
	t.Helper()
	env := testenv.ServiceEnv(t, "orders", true)
	env["LOG_LEVEL"] = "info"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for k, v := range settings {
		store, err := control.OpenStore(ctx, env["LAB_DATABASE_URL"])
		if err != nil {
			t.Fatal(err)
		}
		_, err = store.Set(ctx, k, v, "orders-test")
		store.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	env["CATALOG_URL"] = startCatalog(t, env)
	return startLab(t, env)
}

// startLab starts the wiretap and orders on a prepared environment.
func startLab(t *testing.T, env testenv.Env) *lab {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Dial(context.Background(), env["AMQP_URL"], "orders-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	l := &lab{t: t, env: env, base: "http://" + env["HTTP_ADDR"], pub: bus.NewPublisher(conn, log),
		tap: newTap(t, conn), logs: &syncBuffer{}}
	t.Cleanup(func() {
		if l.stop != nil {
			l.stop()
		}
		if t.Failed() {
			t.Logf("orders log tail:\n%s", tail(l.logs.String(), 6000))
		}
	})
	l.start()
	return l
}

// start runs orders in-process and waits until it is ready.
func (l *lab) start() {
	l.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, l.env.Get, l.logs) }()
	exited := make(chan struct{})
	var runErr error
	go func() { runErr = <-done; close(exited) }()
	l.stop = func() {
		cancel()
		<-exited
		if runErr != nil {
			l.t.Errorf("orders run: %v", runErr)
		}
		l.stop = nil
	}
	if !ready(l.base, exited) {
		select {
		case <-exited:
			l.t.Fatalf("orders stopped before it was ready: %v", runErr)
		default:
			l.t.Fatal("orders never became ready")
		}
	}
}

// tap is a wiretap: an exclusive queue bound to '#' on shop.events and to every
// command on shop.commands, recording everything in arrival order.
type tap struct {
	mu   sync.Mutex
	msgs []contracts.Envelope
}

func newTap(t *testing.T, conn *bus.Conn) *tap {
	t.Helper()
	ch, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.DeclareExchanges(ch); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "#", contracts.ExchangeEvents, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range contracts.Commands {
		if err := ch.QueueBind(q.Name, c, contracts.ExchangeCommands, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(l.logs.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Fatalf("orders never logged a line with %q", parts)
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
