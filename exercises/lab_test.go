package exercises

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"microlab/dashboard/ingest"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// testLab is a lab of real parts, as the dashboard wires them, minus the shop: the
// control plane on a lab database and a vhost of the test's own, the dashboard's
// ingest stores fed through their public entry points (the OTLP receiver over HTTP,
// the wiretap's EventFromDelivery), and progress in the same lab database.
type testLab struct {
	url     string
	store   *control.Store
	plane   *control.Plane
	pool    *pgxpool.Pool
	events  *ingest.Events
	traces  *ingest.Traces
	sagas   *ingest.Sagas
	otlp    *httptest.Server
	control <-chan amqp.Delivery // the announcements on lab.control
	lab     Lab
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	ctx := context.Background()
	url, store := testenv.LabDB(t, testenv.Name("t_ex_"))
	b := testenv.Dial(t, testenv.VHost(t))
	ch, err := b.Conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.DeclareExchanges(ch); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()
	tl := &testLab{url: url, store: store, plane: &control.Plane{Store: store, Pub: b.Pub},
		events: ingest.NewEvents(1000), traces: ingest.NewTraces(100, 500), sagas: ingest.NewSagas(100),
		control: b.Tap(t, contracts.ExchangeControl, "")}
	tl.otlp = httptest.NewServer(ingest.OTLPHandler(tl.traces.Add, nil))
	t.Cleanup(tl.otlp.Close)
	tl.pool, err = pg.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tl.pool.Close)
	tl.lab = Lab{Plane: tl.plane, State: tl.store, Events: tl.events, Traces: tl.traces, Sagas: tl.sagas}
	return tl
}

// engine is a new Engine of exs on tl, polling fast, drawing random choices with pick.
func (tl *testLab) engine(t *testing.T, exs ...Exercise) *Engine {
	t.Helper()
	e, err := New(context.Background(), tl.pool, exs, tl.lab)
	if err != nil {
		t.Fatal(err)
	}
	e.Poll = 20 * time.Millisecond
	return e
}

// exercise parses an exercise.yaml of id made of the common header and body (setup,
// steps, cleanup), through the real loader.
func exercise(t *testing.T, id, body string) Exercise {
	t.Helper()
	src := "id: " + id + "\ntitle: A test\npatterns: [testing]\nlevel: beginner\nminutes: 5\n" + body
	e, err := Parse("exercises/"+id+"/exercise.yaml", []byte(src))
	if err != nil {
		t.Fatalf("test exercise does not parse:\n%v\n%s", err, src)
	}
	return e
}

// message is one message as a service publishes it on shop.events.
type message struct {
	typ, source, order, trace string
	at                        time.Time
	data                      map[string]any // besides orderId
}

// deliver hands the message to the stores as the dashboard's wiretap does: a real
// amqp.Delivery of a real envelope, through ingest.EventFromDelivery, into the event
// store and the saga timelines. It returns the event's id.
func (tl *testLab) deliver(t *testing.T, m message) string {
	t.Helper()
	data := map[string]any{"orderId": m.order}
	for k, v := range m.data {
		data[k] = v
	}
	env, err := contracts.NewEnvelope(m.typ, m.source, m.order, "", data)
	if err != nil {
		t.Fatal(err)
	}
	if !m.at.IsZero() {
		env.OccurredAt = m.at
	}
	body, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	d := amqp.Delivery{Exchange: contracts.ExchangeEvents, RoutingKey: m.typ, MessageId: env.EventID, Type: m.typ,
		AppId: m.source, CorrelationId: m.order, Timestamp: env.OccurredAt, ContentType: "application/json", Body: body}
	if m.trace != "" {
		d.Headers = amqp.Table{contracts.HeaderTraceparent: "00-" + m.trace + "-00f067aa0ba902b7-01"}
	}
	e := ingest.EventFromDelivery(d)
	tl.events.Add(e)
	tl.sagas.Apply(e)
	return e.ID
}

// checkout delivers the messages of one choreographed checkout of order (its trace:
// trace) that ends confirmed or, with reason, cancelled with a compensation.
func (tl *testLab) checkout(t *testing.T, order, trace, reason string) {
	t.Helper()
	mode := map[string]any{"sagaMode": contracts.ModeChoreography}
	tl.deliver(t, message{typ: contracts.OrderPlaced, source: "orders", order: order, trace: trace, data: mode})
	tl.deliver(t, message{typ: contracts.PaymentAuthorized, source: "payments", order: order, trace: trace, data: mode})
	if reason == "" {
		tl.deliver(t, message{typ: contracts.StockReserved, source: "inventory", order: order, trace: trace, data: mode})
		tl.deliver(t, message{typ: contracts.OrderConfirmed, source: "orders", order: order, trace: trace, data: mode})
		return
	}
	tl.deliver(t, message{typ: contracts.StockRejected, source: "inventory", order: order, trace: trace,
		data: map[string]any{"sagaMode": contracts.ModeChoreography, "reason": reason}})
	tl.deliver(t, message{typ: contracts.PaymentRefunded, source: "payments", order: order, trace: trace,
		data: map[string]any{"sagaMode": contracts.ModeChoreography, "reason": reason}})
	tl.deliver(t, message{typ: contracts.OrderCancelled, source: "orders", order: order, trace: trace,
		data: map[string]any{"sagaMode": contracts.ModeChoreography, "reason": reason}})
}

// span is one span of an export, as a service's SDK would send it.
type span struct {
	service, name, id, parent string
	start                     time.Time
	d                         time.Duration
	failed                    bool
	event                     string
	attrs                     map[string]string
}

func ids(t *testing.T, h string) []byte {
	t.Helper()
	if h == "" {
		return nil
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// export sends spans of trace to the dashboard's OTLP receiver: a real
// ExportTraceServiceRequest in binary protobuf, one resource per service.
func (tl *testLab) export(t *testing.T, trace string, spans ...span) {
	t.Helper()
	req := &coltracepb.ExportTraceServiceRequest{}
	for _, s := range spans {
		sp := &tracepb.Span{TraceId: ids(t, trace), SpanId: ids(t, s.id), ParentSpanId: ids(t, s.parent), Name: s.name,
			Kind: tracepb.Span_SPAN_KIND_INTERNAL, StartTimeUnixNano: uint64(s.start.UnixNano()), EndTimeUnixNano: uint64(s.start.Add(s.d).UnixNano())}
		if s.failed {
			sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "failed"}
		}
		if s.event != "" {
			sp.Events = []*tracepb.Span_Event{{Name: s.event, TimeUnixNano: uint64(s.start.UnixNano())}}
		}
		for k, v := range s.attrs {
			sp.Attributes = append(sp.Attributes, &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}})
		}
		req.ResourceSpans = append(req.ResourceSpans, &tracepb.ResourceSpans{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s.service}}}}},
			ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{sp}}},
		})
	}
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(tl.otlp.URL+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("OTLP export: %s", resp.Status)
	}
}

// newTrace is a fresh trace id; newSpan a fresh span id.
func newTrace() string { return strings.ReplaceAll(uuid.NewString(), "-", "") }
func newSpan() string  { return strings.ReplaceAll(uuid.NewString(), "-", "")[:16] }
