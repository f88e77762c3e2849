package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// patience bounds every wait for something that must happen. It only costs time when
// the test fails anyway, so it is long enough for a loaded machine running -race.
const patience = time.Minute

// probePrefix starts the correlation id of the probes waitListening sends, which next
// skips: a probe may come through late, after the one waitListening waited for.
const probePrefix = "probe-"

// tap runs Wiretap on a fresh vhost and collects what reaches its sink.
type tap struct {
	t      *testing.T
	url    string
	events chan Event
	pub    *bus.Publisher
	done   chan error
	logs   *testenv.LogBuffer // the wiretap's own log (its AMQP connection's included)
}

func startTap(t *testing.T) *tap {
	t.Helper()
	return startTapOn(t, testenv.VHost(t))
}

func startTapOn(t *testing.T, u string) *tap {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	tp := &tap{t: t, url: u, events: make(chan Event, 1000), done: make(chan error, 1), logs: &testenv.LogBuffer{}}
	tapLog := slog.New(slog.NewTextHandler(tp.logs, nil))
	go func() {
		tp.done <- Wiretap(ctx, u, tapLog, func(e Event) { tp.events <- e })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-tp.done:
			if err != nil {
				t.Errorf("Wiretap returned %v", err)
			}
		case <-time.After(patience):
			t.Error("Wiretap did not return after its context ended")
		}
	})
	conn, err := bus.Dial(ctx, u, "wiretap-test-publisher", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	tp.pub = bus.NewPublisher(conn, log)
	tp.waitListening()
	return tp
}

// waitListening publishes probes until one comes through the tap: until then the
// wiretap's queue may not exist yet and a message would be unroutable.
func (tp *tap) waitListening() {
	tp.t.Helper()
	deadline := time.Now().Add(2 * patience)
	probe := fmt.Sprint(probePrefix, time.Now().UnixNano())
	for time.Now().Before(deadline) {
		tp.publish(contracts.UserRegistered, probe, contracts.UserRegisteredData{UserID: probe}, nil)
		wait := time.After(200 * time.Millisecond)
		for {
			select {
			case e := <-tp.events:
				if e.CorrelationID == probe {
					return // the probes sent before this one may still come: next skips them
				}
				continue
			case <-wait:
			}
			break
		}
	}
	tp.t.Fatalf("the wiretap saw no message within %s", 2*patience)
}

func (tp *tap) publish(typ, correlation string, data any, headers amqp.Table) contracts.Envelope {
	tp.t.Helper()
	env, err := contracts.NewEnvelope(typ, "wiretap-test", correlation, "", data)
	if err != nil {
		tp.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := tp.pub.PublishEnvelope(ctx, env, headers); err != nil {
		tp.t.Fatal(err)
	}
	return env
}

// next returns the next event that is not a probe.
func (tp *tap) next(what string) Event {
	tp.t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case e := <-tp.events:
			if strings.HasPrefix(e.CorrelationID, probePrefix) {
				continue
			}
			return e
		case <-deadline:
			tp.t.Fatalf("%s: nothing reached the sink within %s", what, patience)
			return Event{}
		}
	}
}

func TestWiretapSeesEventsAndCommands(t *testing.T) {
	tp := startTap(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tparent := "00-" + traceID + "-00f067aa0ba902b7-01"
	order := contracts.OrderPlacedData{Checkout: contracts.Checkout{
		Saga:   contracts.Saga{OrderID: "o-1", SagaMode: contracts.ModeOrchestration},
		UserID: "u-1", Items: []contracts.Item{{SKU: "SKU-1", Qty: 1}}, TotalCents: 1200, Currency: "EUR"}, Card: "4242"}
	placed := tp.publish(contracts.OrderPlaced, "o-1", order, amqp.Table{
		contracts.HeaderTraceparent: tparent, contracts.HeaderTracestate: "k=v", contracts.HeaderAttempt: int32(1)})
	refund := tp.publish(contracts.CmdPaymentsRefund, "o-1", contracts.PaymentRefundData{
		Saga: order.Saga, Reason: contracts.ReasonOutOfStock}, amqp.Table{contracts.HeaderTraceparent: tparent})

	e := tp.next("order.placed")
	if e.ID != placed.EventID || e.Type != contracts.OrderPlaced || e.Source != "wiretap-test" || e.CorrelationID != "o-1" ||
		e.Exchange != contracts.ExchangeEvents || e.RoutingKey != contracts.OrderPlaced || e.TraceID != traceID ||
		!e.At.Equal(placed.OccurredAt) {
		t.Errorf("event = %+v", e)
	}
	if e.Headers[contracts.HeaderTraceparent] != tparent || e.Headers[contracts.HeaderTracestate] != "k=v" {
		t.Errorf("headers = %v", e.Headers)
	}
	if _, ok := e.Headers[contracts.HeaderAttempt]; ok {
		t.Errorf("a non-string header was kept: %v", e.Headers)
	}
	var got contracts.OrderPlacedData
	if err := json.Unmarshal(e.Payload, &got); err != nil || got.OrderID != "o-1" || got.Card != "4242" || got.SagaMode != contracts.ModeOrchestration {
		t.Errorf("payload %s (%v)", e.Payload, err)
	}

	c := tp.next("payments.refund")
	if c.ID != refund.EventID || c.Type != contracts.CmdPaymentsRefund || c.Exchange != contracts.ExchangeCommands ||
		c.RoutingKey != contracts.CmdPaymentsRefund || c.TraceID != traceID || c.CorrelationID != "o-1" {
		t.Errorf("command = %+v", c)
	}
	// What the tap sees feeds the saga timeline.
	sagas := NewSagas(10)
	sagas.Apply(e)
	if sg, ok := sagas.Apply(c); !ok || len(sg.Steps) != 2 || !sg.Steps[1].Compensation || sg.Steps[1].Reason != contracts.ReasonOutOfStock || sg.TraceID != traceID {
		t.Errorf("saga = %+v", sg)
	}

	// The queue is the observer's: exclusive, auto-delete, server-named and bounded.
	queues := vhostQueues(t, tp.url)
	if len(queues) != 1 || !strings.HasPrefix(queues[0].Name, "amq.gen-") || !queues[0].Exclusive || !queues[0].AutoDelete ||
		queues[0].Durable || queues[0].Arguments["x-max-length"] != float64(WiretapMaxLength) ||
		queues[0].Arguments["x-overflow"] != "drop-head" {
		t.Errorf("queues in the vhost = %+v", queues)
	}

	// Every command type is bound, not just the one above.
	for _, cmd := range contracts.Commands {
		tp.publish(cmd, "o-2", contracts.Saga{OrderID: "o-2", SagaMode: contracts.ModeOrchestration}, nil)
		if got := tp.next(cmd); got.Type != cmd || got.TraceID != "" {
			t.Errorf("%s: got %+v", cmd, got)
		}
	}
}

func TestWiretapKeepsMalformedMessages(t *testing.T) {
	tp := startTap(t)
	ctx := context.Background()
	send := func(key string, msg amqp.Publishing) {
		t.Helper()
		if err := tp.pub.Publish(ctx, contracts.ExchangeEvents, key, msg); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	send(contracts.OrderPlaced, amqp.Publishing{Type: contracts.OrderPlaced, MessageId: "m-1", CorrelationId: "o-9",
		AppId: "broken", Timestamp: at, Body: []byte("not json \xff"),
		Headers: amqp.Table{contracts.HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
	send(contracts.StockReserved, amqp.Publishing{Type: contracts.StockReserved, Body: []byte(`{"eventId":"x","data":null}`)})
	send(contracts.ShipmentFailed, amqp.Publishing{Body: []byte(`[1,2]`),
		Headers: amqp.Table{contracts.HeaderTraceparent: "garbage"}})

	e := tp.next("not json")
	var s string
	if e.Type != contracts.OrderPlaced || e.ID != "m-1" || e.CorrelationID != "o-9" || e.Source != "broken" ||
		!e.At.Equal(at) || e.TraceID != "0af7651916cd43dd8448eb211c80319c" || json.Unmarshal(e.Payload, &s) != nil ||
		!strings.HasPrefix(s, "not json ") {
		t.Errorf("not json: %+v (payload %s)", e, e.Payload)
	}
	e = tp.next("envelope without data")
	if e.Type != contracts.StockReserved || string(e.Payload) != `{"eventId":"x","data":null}` || e.ID == "" || e.At.IsZero() {
		t.Errorf("no data: %+v (payload %s)", e, e.Payload)
	}
	e = tp.next("json array, no type property")
	if e.Type != contracts.ShipmentFailed || string(e.Payload) != `[1,2]` || e.TraceID != "" {
		t.Errorf("array: %+v (payload %s)", e, e.Payload)
	}
	if _, err := json.Marshal(e); err != nil {
		t.Errorf("event does not encode: %v", err)
	}
}

// When the broker drops the wiretap's connection (as on a restart), the tap comes
// back by itself on a new queue.
func TestWiretapRecoversFromLostConnection(t *testing.T) {
	tp := startTap(t)
	vhost := strings.TrimPrefix(mustParse(t, tp.url).Path, "/")
	before := vhostQueues(t, tp.url)
	if len(before) != 1 {
		t.Fatalf("queues in the vhost = %+v, want the wiretap's", before)
	}
	var killed []string
	deadline := time.Now().Add(2 * patience)
	for len(killed) == 0 && time.Now().Before(deadline) {
		var conns []struct {
			Name   string `json:"name"`
			Client struct {
				Name string `json:"connection_name"`
			} `json:"client_properties"`
		}
		mgmt(t, http.MethodGet, "/api/vhosts/"+url.PathEscape(vhost)+"/connections", &conns)
		for _, c := range conns {
			if c.Client.Name == "dashboard-wiretap" {
				mgmt(t, http.MethodDelete, "/api/connections/"+url.PathEscape(c.Name), nil)
				killed = append(killed, c.Name)
			}
		}
		if len(killed) == 0 {
			time.Sleep(500 * time.Millisecond) // the management API lists connections with a delay
		}
	}
	if len(killed) == 0 {
		t.Fatal("the wiretap's connection never showed up in the management API")
	}
	// The broker closes the connection after answering the DELETE, so a probe sent now
	// could still go through the old queue, which dies with the connection. Wait for
	// the outcome instead: the old queue gone (it was exclusive to the connection) and a
	// new one declared in its place.
	var after []queueInfo
	for end := time.Now().Add(2 * patience); ; time.Sleep(100 * time.Millisecond) {
		after = vhostQueues(t, tp.url)
		if len(after) == 1 && after[0].Name != before[0].Name {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("queues %+v %s after the connection was closed, want one new queue in place of %s", after, 2*patience, before[0].Name)
		}
	}
	tp.waitListening()
	env := tp.publish(contracts.OrderConfirmed, "o-3", contracts.OrderConfirmedData{
		Saga: contracts.Saga{OrderID: "o-3", SagaMode: contracts.ModeChoreography}}, nil)
	if e := tp.next("after reconnect"); e.ID != env.EventID {
		t.Errorf("after reconnect got %+v", e)
	}
}

// A real broker restart (a private node: stopping the shared one would break other
// tests): the tap waits for the broker to come back, then listens again.
func TestWiretapSurvivesBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a RabbitMQ node")
	}
	broker := testenv.PrivateBroker(t)
	tp := startTapOn(t, broker.URL())
	broker.Stop()
	// The broker stays down until the tap has noticed and tried to reconnect in vain
	// (its connection logs the first failed attempt), so that the restart below is one
	// the tap waits out, not one it sleeps through.
	if !tp.logs.AwaitLine(2*patience, "rabbitmq unreachable, retrying") {
		t.Fatalf("the wiretap did not try to reconnect to the stopped broker within %s; its log:\n%s", 2*patience, tp.logs)
	}
	broker.Start()
	tp.waitListening()
	env := tp.publish(contracts.PaymentDeclined, "o-4", contracts.PaymentDeclinedData{
		Saga: contracts.Saga{OrderID: "o-4", SagaMode: contracts.ModeChoreography}, Reason: "card declined"}, nil)
	if e := tp.next("after restart"); e.ID != env.EventID {
		t.Errorf("after restart got %+v", e)
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// mgmt calls RabbitMQ's management API (RABBITMQ_MANAGEMENT_URL, as testenv reads it).
func mgmt(t *testing.T, method, path string, out any) {
	t.Helper()
	base := os.Getenv("RABBITMQ_MANAGEMENT_URL")
	if base == "" {
		base = "http://guest:guest@127.0.0.1:15672"
	}
	u := mustParse(t, base)
	pass, _ := u.User.Password()
	user := u.User.Username()
	u.User = nil
	req, err := http.NewRequest(method, strings.TrimRight(u.String(), "/")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	resp, err := (&http.Client{Timeout: patience}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// queueInfo is a queue as the management API lists it.
type queueInfo struct {
	Name       string         `json:"name"`
	Exclusive  bool           `json:"exclusive"`
	AutoDelete bool           `json:"auto_delete"`
	Durable    bool           `json:"durable"`
	Arguments  map[string]any `json:"arguments"`
}

// vhostQueues lists the queues of the virtual host of amqpURL.
func vhostQueues(t *testing.T, amqpURL string) []queueInfo {
	t.Helper()
	var queues []queueInfo
	mgmt(t, http.MethodGet, "/api/queues/"+url.PathEscape(strings.TrimPrefix(mustParse(t, amqpURL).Path, "/")), &queues)
	return queues
}

// Messages of several megabytes come through the real wiretap and are stored cut, as
// the dashboard stores them (events.Add, sagas.Apply): the payload to a JSON string
// ending in a marker, the saga's reason to 256 bytes. A small message after them is
// stored whole.
func TestWiretapLargeMessagesAreCut(t *testing.T) {
	tp := startTap(t)
	evs, sagas := NewEvents(100), NewSagas(10)
	huge := strings.Repeat("no stock ", 5<<20/9) // 5 MB
	tp.publish(contracts.OrderCancelled, "o-big", map[string]any{"orderId": "o-big",
		"sagaMode": contracts.ModeChoreography, "reason": huge}, nil)
	if err := tp.pub.Publish(context.Background(), contracts.ExchangeEvents, contracts.StockRejected,
		amqp.Publishing{Type: contracts.StockRejected, MessageId: "raw-big", CorrelationId: "o-big", Body: []byte(huge)}); err != nil {
		t.Fatal(err)
	}
	small := tp.publish(contracts.OrderPlaced, "o-small", map[string]any{"orderId": "o-small"}, nil)
	var got []Event
	for range 3 {
		e := tp.next("a message")
		evs.Add(e)
		sagas.Apply(e)
		got = append(got, e)
	}
	for _, e := range got[:2] {
		stored, ok := evs.Get(e.ID)
		var s string
		if !ok || json.Unmarshal(stored.Payload, &s) != nil || len(stored.Payload) > 16<<10+64 || !strings.Contains(s, "[truncated ") {
			t.Errorf("%s: stored payload of %d bytes, want a JSON string of 16 KiB ending in a marker", e.Type, len(stored.Payload))
		}
		if b, _ := json.Marshal(stored); !strings.Contains(string(b), `"truncated":true`) {
			t.Errorf("%s: the stored event does not say it was cut", e.Type)
		}
	}
	if sg, ok := sagas.Get("o-big"); !ok || len(sg.Reason) > 256+64 || !strings.Contains(sg.Reason, "[truncated ") {
		t.Errorf("saga o-big: held %v, reason of %d bytes; want it cut to 256 bytes with a marker", ok, len(sg.Reason))
	}
	if e, ok := evs.Get(small.EventID); !ok || string(e.Payload) != `{"orderId":"o-small"}` {
		t.Errorf("the small message after them: %s, held %v", e.Payload, ok)
	}
}
