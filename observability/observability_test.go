package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// setup returns telemetry recording spans in memory and logging into a buffer.
func setup(t *testing.T, ratio float64) (*Telemetry, *tracetest.SpanRecorder, *bytes.Buffer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	var out bytes.Buffer
	tel, err := Setup(context.Background(), Process{Service: "test", Instance: "test-1", LogLevel: "debug"},
		Config{SampleRatio: ratio, Environment: "test", processors: []sdktrace.SpanProcessor{rec}}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, rec, &out
}

func TestPublishAndProcessAreOneTraceAcrossHeaders(t *testing.T) {
	tel, rec, _ := setup(t, 1)
	ctx, root := tel.Tracer().Start(context.Background(), "POST /api/v1/orders", trace.WithSpanKind(trace.SpanKindServer))
	headers := amqp.Table{"x-attempt": int32(1)}
	_, pub := tel.StartPublish(ctx, Message{Exchange: "shop.events", RoutingKey: "order.placed", Type: "order.placed",
		MessageID: "m-1", CorrelationID: "o-1"}, headers)
	pub.End()
	root.End()
	if _, ok := headers["traceparent"].(string); !ok {
		t.Fatalf("no traceparent header written: %v", headers)
	}

	// The consumer side, as another process would: only the headers cross.
	cctx, proc := tel.StartProcess(context.Background(), Message{Queue: "payments.events", Exchange: "shop.events",
		RoutingKey: "order.placed", Type: "order.placed", MessageID: "m-1", CorrelationID: "o-1", Attempt: 1}, headers)
	proc.End()
	if got := Correlation(cctx); got != "o-1" {
		t.Errorf("correlation in consumer ctx = %q, want o-1", got)
	}
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	p, c := spans["publish order.placed"], spans["process order.placed"]
	if p == nil || c == nil {
		t.Fatalf("spans recorded: %v", keys(spans))
	}
	if c.Parent().SpanID() != p.SpanContext().SpanID() || c.SpanContext().TraceID() != root.SpanContext().TraceID() {
		t.Errorf("process span's parent = %s in trace %s; want publish span %s in trace %s",
			c.Parent().SpanID(), c.SpanContext().TraceID(), p.SpanContext().SpanID(), root.SpanContext().TraceID())
	}
	if p.SpanKind() != trace.SpanKindProducer || c.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("kinds: publish %v, process %v", p.SpanKind(), c.SpanKind())
	}
	want := map[string]string{"messaging.system": "rabbitmq", "messaging.destination.name": "payments.events",
		"messaging.operation.type": "process", "messaging.message.id": "m-1", "messaging.message.conversation_id": "o-1"}
	for _, kv := range c.Attributes() {
		if w, ok := want[string(kv.Key)]; ok {
			if kv.Value.Emit() != w {
				t.Errorf("%s = %q, want %q", kv.Key, kv.Value.Emit(), w)
			}
			delete(want, string(kv.Key))
		}
	}
	if len(want) > 0 {
		t.Errorf("process span lacks attributes %v", want)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestLogLinesCarryTraceAndCorrelation(t *testing.T) {
	tel, _, out := setup(t, 1)
	ctx, span := tel.Tracer().Start(context.Background(), "req", trace.WithSpanKind(trace.SpanKindServer))
	ctx = WithCorrelation(ctx, "order-42")
	tel.Log.InfoContext(ctx, "order placed")
	span.End()
	tel.Log.Info("no context")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first["trace_id"] != span.SpanContext().TraceID().String() || first["span_id"] != span.SpanContext().SpanID().String() ||
		first["correlation_id"] != "order-42" || first["service"] != "test" {
		t.Errorf("log line = %v", first)
	}
	if _, ok := second["trace_id"]; ok {
		t.Errorf("line without context got a trace_id: %v", second)
	}
}

func TestSamplerDropsBackgroundRootsAndHonoursRatio(t *testing.T) {
	tel, rec, _ := setup(t, 1)
	_, bg := tel.Tracer().Start(context.Background(), "SELECT outbox") // internal root: a poller
	bg.End()
	ctx, srv := tel.Tracer().Start(context.Background(), "GET /x", trace.WithSpanKind(trace.SpanKindServer))
	_, child := tel.Tracer().Start(ctx, "SELECT orders") // internal child: kept
	child.End()
	srv.End()
	var names []string
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
	}
	if strings.Join(names, ",") != "SELECT orders,GET /x" {
		t.Errorf("recorded %v, want the request and its query only", names)
	}

	off, rec0, _ := setup(t, 0)
	ctx, srv = off.Tracer().Start(context.Background(), "GET /x", trace.WithSpanKind(trace.SpanKindServer))
	headers := amqp.Table{}
	off.Inject(ctx, headers)
	srv.End()
	if n := len(rec0.Ended()); n != 0 {
		t.Errorf("ratio 0 recorded %d spans", n)
	}
	// Unsampled, the context still propagates (flags 00), so downstream services agree.
	if tp, _ := headers["traceparent"].(string); !strings.HasSuffix(tp, "-00") {
		t.Errorf("traceparent with sampling off = %q, want an unsampled context", tp)
	}
}

func TestHandlerNamesRoutesAndAnswersTraceresponse(t *testing.T) {
	tel, rec, _ := setup(t, 1)
	inner := http.NewServeMux()
	inner.HandleFunc("GET /api/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		StepFailed(r.Context(), "look up", "missing")
		w.WriteHeader(http.StatusNotFound)
	})
	outer := http.NewServeMux()
	// Like the gateway: a sub-mux mounted under a prefix, behind middleware that copies
	// the request.
	outer.Handle("/api/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Routed(inner).ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), struct{}{}, 1)))
	}))
	srv := httptest.NewServer(tel.Handler(outer))
	defer srv.Close()

	for _, path := range []string{"/api/v1/orders/a1", "/api/v1/orders/b2", "/nowhere", "/healthz"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tr := resp.Header.Get(HeaderTraceResponse)
		if path == "/healthz" {
			if tr != "" {
				t.Errorf("%s: health checks are not traced, got traceresponse %q", path, tr)
			}
			continue
		}
		if len(tr) != 55 || !strings.HasPrefix(tr, "00-") {
			t.Errorf("%s: traceresponse = %q", path, tr)
		}
	}
	if got := testutil.ToFloat64(tel.Metrics.HTTPRequests.WithLabelValues("/api/v1/orders/{id}", "GET", "404")); got != 2 {
		t.Errorf("requests{route=/api/v1/orders/{id}} = %v, want 2 (one series for both ids)", got)
	}
	if got := testutil.ToFloat64(tel.Metrics.HTTPRequests.WithLabelValues("unmatched", "GET", "404")); got != 2 {
		t.Errorf("requests{route=unmatched} = %v, want 2 (/nowhere and /healthz)", got)
	}
	var found bool
	for _, s := range rec.Ended() {
		if s.Name() == "GET /api/v1/orders/{id}" {
			found = true
			if s.Status().Code != codes.Error {
				t.Errorf("failed step not marked on the span: %v", s.Status())
			}
		}
	}
	if !found {
		var names []string
		for _, s := range rec.Ended() {
			names = append(names, s.Name())
		}
		t.Errorf("no span named after the inner route; got %v", names)
	}
}
