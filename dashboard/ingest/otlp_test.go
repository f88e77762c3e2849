package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// collector is an httptest server running OTLPHandler that keeps what it received.
type collector struct {
	srv *httptest.Server

	mu        sync.Mutex
	spans     []Span
	encodings []string // Content-Encoding of each request
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	h := OTLPHandler(func(s []Span) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.spans = append(c.spans, s...)
	}, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	mux.Handle("/v1/traces", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.encodings = append(c.encodings, r.Header.Get("Content-Encoding"))
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	c.srv = httptest.NewServer(mux) // binds 127.0.0.1
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) received() ([]Span, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...), append([]string(nil), c.encodings...)
}

// exportTrace sends one small trace through a real otlptracehttp exporter and SDK
// tracer provider: a server span, a producer child that fails, and an event on it. It
// returns when it began, which the spans cannot start before.
func exportTrace(t *testing.T, c *collector, opts ...otlptracehttp.Option) (server, producer trace.SpanContext, began time.Time) {
	t.Helper()
	began = time.Now()
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx, append([]otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(c.srv.URL + "/v1/traces"),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("orders"), semconv.ServiceVersion("test"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
	tr := tp.Tracer("ingest-test")

	ctx, root := tr.Start(ctx, "POST /api/v1/orders", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.Int("http.response.status_code", 202), attribute.Bool("retry", false),
			attribute.StringSlice("tags", []string{"a", "b"})))
	_, pub := tr.Start(ctx, "publish order.placed", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "rabbitmq"),
			attribute.Float64("ratio", 0.5)))
	pub.AddEvent("saga.step.failure", trace.WithAttributes(attribute.String("reason", "out_of_stock")))
	pub.SetStatus(codes.Error, "broker nacked")
	time.Sleep(2 * time.Millisecond)
	pub.End()
	root.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}
	return root.SpanContext(), pub.SpanContext(), began
}

// checkExported checks what exportTrace sent, begun at began, as received.
func checkExported(t *testing.T, spans []Span, server, producer trace.SpanContext, began time.Time) {
	t.Helper()
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want 2: %+v", len(spans), spans)
	}
	by := map[string]Span{}
	for _, s := range spans {
		by[s.Name] = s
	}
	root, pub := by["POST /api/v1/orders"], by["publish order.placed"]
	if root.TraceID != server.TraceID().String() || root.SpanID != server.SpanID().String() || root.ParentID != "" {
		t.Errorf("root ids = %s/%s parent %q, want %s/%s", root.TraceID, root.SpanID, root.ParentID, server.TraceID(), server.SpanID())
	}
	if pub.TraceID != server.TraceID().String() || pub.SpanID != producer.SpanID().String() || pub.ParentID != root.SpanID {
		t.Errorf("producer ids = %s/%s parent %s, want parent %s", pub.TraceID, pub.SpanID, pub.ParentID, root.SpanID)
	}
	if root.Service != "orders" || pub.Service != "orders" {
		t.Errorf("services = %q, %q", root.Service, pub.Service)
	}
	if root.Kind != "server" || pub.Kind != "producer" {
		t.Errorf("kinds = %q, %q", root.Kind, pub.Kind)
	}
	if root.Error || !pub.Error || pub.Status != "broker nacked" || root.Status != "" {
		t.Errorf("errors: root %v %q, producer %v %q", root.Error, root.Status, pub.Error, pub.Status)
	}
	wantRoot := map[string]string{"http.response.status_code": "202", "retry": "false", "tags": `["a","b"]`}
	for k, v := range wantRoot {
		if root.Attrs[k] != v {
			t.Errorf("root attr %s = %q, want %q", k, root.Attrs[k], v)
		}
	}
	if pub.Attrs["messaging.system"] != "rabbitmq" || pub.Attrs["ratio"] != "0.5" {
		t.Errorf("producer attrs = %v", pub.Attrs)
	}
	if len(pub.Events) != 1 || pub.Events[0].Name != "saga.step.failure" || pub.Events[0].Attrs["reason"] != "out_of_stock" || pub.Events[0].At.IsZero() {
		t.Errorf("producer events = %+v", pub.Events)
	}
	// The start times decoded are the SDK's, taken after began and before now: no bound
	// on how long the export took, however slow the machine.
	if pub.Duration < 2*time.Millisecond || root.Duration < pub.Duration || root.Start.After(pub.Start) ||
		root.Start.Before(began.Round(0)) || root.Start.After(time.Now()) {
		t.Errorf("timing: root %v +%v, producer %v +%v", root.Start, root.Duration, pub.Start, pub.Duration)
	}
}

func TestOTLPFromSDKExporter(t *testing.T) {
	c := newCollector(t)
	server, producer, began := exportTrace(t, c)
	spans, enc := c.received()
	checkExported(t, spans, server, producer, began)
	if len(enc) == 0 || strings.Join(enc, "") != "" {
		t.Errorf("content encodings = %q, want uncompressed requests", enc)
	}
}

func TestOTLPFromSDKExporterGzip(t *testing.T) {
	c := newCollector(t)
	server, producer, began := exportTrace(t, c, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	spans, enc := c.received()
	checkExported(t, spans, server, producer, began)
	if len(enc) == 0 || strings.Join(enc, ",") != strings.TrimSuffix(strings.Repeat("gzip,", len(enc)), ",") {
		t.Errorf("content encodings = %q, want gzip requests", enc)
	}
}

// An OTLP/JSON body as the spec writes it: hex ids, 64-bit times as strings, kinds and
// status codes as numbers or enum names, unknown fields (to be ignored).
const otlpJSON = `{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payments"}}]},
    "scopeSpans": [{
      "scope": {"name": "microlab"},
      "spans": [
        {
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "eee19b7ec3c1b174",
          "parentSpanId": "eee19b7ec3c1b173",
          "name": "process payments.refund",
          "startTimeUnixNano": "1544712660000000001",
          "endTimeUnixNano": 1544712660300000001,
          "kind": 5,
          "attributes": [
            {"key": "messaging.system", "value": {"stringValue": "rabbitmq"}},
            {"key": "messaging.delivery.attempt", "value": {"intValue": "2"}},
            {"key": "meta", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": true}}]}}}
          ],
          "status": {"code": 2, "message": "refund failed"},
          "events": [{"timeUnixNano": "1544712660100000000", "name": "exception",
                      "attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}}]}],
          "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002"}],
          "someFutureField": {"x": 1}
        },
        {
          "traceId": "5b8efff798038103d269b633813fc60c",
          "spanId": "eee19b7ec3c1b173",
          "parentSpanId": "",
          "name": "compensate: refund payment",
          "startTimeUnixNano": "1544712660000000000",
          "endTimeUnixNano": "1544712661000000000",
          "kind": "SPAN_KIND_INTERNAL",
          "status": {"code": "STATUS_CODE_OK"}
        }
      ]
    }]
  }]
}`

func post(t *testing.T, url, contentType, encoding string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestOTLPJSONWithHexIDs(t *testing.T) {
	c := newCollector(t)
	resp, body := post(t, c.srv.URL+"/v1/traces", "application/json; charset=utf-8", "", []byte(otlpJSON))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || strings.TrimSpace(string(body)) != "{}" {
		t.Errorf("response %q %q, want an empty JSON ExportTraceServiceResponse", ct, body)
	}
	spans, _ := c.received()
	if len(spans) != 2 {
		t.Fatalf("got %d spans", len(spans))
	}
	s := spans[0]
	if s.TraceID != "5b8efff798038103d269b633813fc60c" || s.SpanID != "eee19b7ec3c1b174" || s.ParentID != "eee19b7ec3c1b173" {
		t.Errorf("ids = %s %s %s", s.TraceID, s.SpanID, s.ParentID)
	}
	if s.Service != "payments" || s.Kind != "consumer" || !s.Error || s.Status != "refund failed" {
		t.Errorf("span = %+v", s)
	}
	if s.Start != time.Unix(0, 1544712660000000001).UTC() || s.Duration != 300*time.Millisecond {
		t.Errorf("start %v duration %v", s.Start, s.Duration)
	}
	if s.Attrs["messaging.delivery.attempt"] != "2" || s.Attrs["meta"] != `{"k":true}` {
		t.Errorf("attrs = %v", s.Attrs)
	}
	if len(s.Events) != 1 || s.Events[0].Attrs["exception.message"] != "boom" {
		t.Errorf("events = %+v", s.Events)
	}
	r := spans[1]
	if r.ParentID != "" || r.Kind != "internal" || r.Error || r.TraceID != s.TraceID {
		t.Errorf("root = %+v", r)
	}
}

func TestOTLPProtobufResponse(t *testing.T) {
	c := newCollector(t)
	req := &coltracepb.ExportTraceServiceRequest{}
	raw, _ := proto.Marshal(req)
	resp, body := post(t, c.srv.URL+"/v1/traces", "application/x-protobuf", "", raw)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if err := proto.Unmarshal(body, &coltracepb.ExportTraceServiceResponse{}); err != nil {
		t.Errorf("response is not an ExportTraceServiceResponse: %v", err)
	}
	if spans, _ := c.received(); len(spans) != 0 {
		t.Errorf("an empty export reached the sink: %v", spans)
	}
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestOTLPRejectsBadInput(t *testing.T) {
	c := newCollector(t)
	url := c.srv.URL + "/v1/traces"
	huge := make([]byte, MaxOTLPBody+1)
	for _, tc := range []struct {
		name, ct, enc string
		body          []byte
		want          int
		msg           string
	}{
		{"text", "text/plain", "", []byte("hi"), http.StatusUnsupportedMediaType, "unsupported content type"},
		{"no content type", "", "", []byte("{}"), http.StatusUnsupportedMediaType, "unsupported content type"},
		{"brotli", "application/json", "br", []byte("{}"), http.StatusUnsupportedMediaType, "content encoding"},
		{"bad protobuf", "application/x-protobuf", "", []byte{0xff, 0xff, 0xff}, http.StatusBadRequest, "malformed application/x-protobuf"},
		{"bad json", "application/json", "", []byte(`{"resourceSpans": [`), http.StatusBadRequest, "invalid JSON"},
		{"json not an object", "application/json", "", []byte(`[1]`), http.StatusBadRequest, "JSON object"},
		{"json wrong shape", "application/json", "", []byte(`{"resourceSpans": 3}`), http.StatusBadRequest, "malformed application/json"},
		{"base64 ids", "application/json", "", []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}`), http.StatusBadRequest, "not hex"},
		{"bad gzip", "application/json", "gzip", []byte("not gzip"), http.StatusBadRequest, "gzip"},
		{"too large", "application/x-protobuf", "", huge, http.StatusRequestEntityTooLarge, "larger than"},
		{"gzip bomb", "application/x-protobuf", "gzip", gz(t, huge), http.StatusRequestEntityTooLarge, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, url, tc.ct, tc.enc, tc.body)
			if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.msg) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tc.want, tc.msg)
			}
		})
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
	if spans, _ := c.received(); len(spans) != 0 {
		t.Errorf("rejected input reached the sink: %v", spans)
	}
}

// emptySpans is an ExportTraceServiceRequest of n empty spans in one scope, in the
// protobuf wire format: 2 bytes a span (a tag, a zero length), so 8 MiB holds 4 million.
func emptySpans(n int) []byte {
	scope := make([]byte, 0, 2*n)
	for range n {
		scope = protowire.AppendTag(scope, 2, protowire.BytesType) // ScopeSpans.spans
		scope = protowire.AppendVarint(scope, 0)
	}
	var rs, req []byte
	rs = protowire.AppendTag(rs, 2, protowire.BytesType) // ResourceSpans.scope_spans
	rs = protowire.AppendBytes(rs, scope)
	req = protowire.AppendTag(req, 1, protowire.BytesType) // ExportTraceServiceRequest.resource_spans
	return protowire.AppendBytes(req, rs)
}

// A body within MaxOTLPBody, once decompressed, can still be millions of empty spans
// (an 8 KiB gzip body): gigabytes of heap if decoded. The receiver refuses it with 413
// before decoding, in either encoding, and what the request allocates (garbage
// included: a bound on the heap it ever took) stays a small multiple of the body.
func TestOTLPRefusesMillionsOfEmptySpans(t *testing.T) {
	c := newCollector(t)
	n := (MaxOTLPBody - 16) / 2
	pb := emptySpans(n)
	js := []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{}` + strings.Repeat(`,{}`, (MaxOTLPBody-64)/3) + `]}]}]}`)
	// One span of millions of empty attributes (Span.attributes is field 9): one span,
	// as many objects.
	scope := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), bytes.Repeat([]byte{9<<3 | 2, 0}, n-16))
	attrs := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType),
		protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), scope))
	for _, tc := range []struct {
		name, ct, want string
		body           []byte
	}{
		{"protobuf", "application/x-protobuf", "spans", pb},
		{"json", "application/json", "spans", js},
		{"attributes", "application/x-protobuf", "objects", attrs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.body) > MaxOTLPBody {
				t.Fatalf("test body %d bytes, over the body limit", len(tc.body))
			}
			body := gz(t, tc.body)
			t.Logf("%d bytes gzipped, %d decompressed", len(body), len(tc.body))
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp, msg := post(t, c.srv.URL+"/v1/traces", tc.ct, "gzip", body)
			runtime.ReadMemStats(&after)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(msg), tc.want) {
				t.Errorf("got %d %q, want 413 saying there are too many %s", resp.StatusCode, msg, tc.want)
			}
			const ceiling = 64 << 20
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("the request allocated %.1f MiB", float64(alloc)/(1<<20))
			if alloc > ceiling {
				t.Errorf("the request allocated %d MiB, ceiling %d MiB", alloc>>20, ceiling>>20)
			}
		})
	}
	refused, _ := c.received()
	if len(refused) != 0 {
		t.Errorf("%d spans of a refused request reached the sink", len(refused))
	}
	// Still a receiver: the next real export goes through.
	server, producer, began := exportTrace(t, c)
	spans, _ := c.received()
	checkExported(t, spans[len(refused):], server, producer, began)
}

// Within the limits, an export of many small spans is taken whole.
func TestOTLPTakesAFullBatch(t *testing.T) {
	c := newCollector(t)
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{}}}}}
	ss := req.ResourceSpans[0].ScopeSpans[0]
	for i := range 512 { // the SDK's batch
		tid, sid := make([]byte, 16), make([]byte, 8)
		tid[0], sid[0], sid[1] = 1, 1, byte(i)
		sid[2] = byte(i >> 8)
		sp := &tracepb.Span{TraceId: tid, SpanId: sid, Name: "GET /"}
		for k := range 20 {
			sp.Attributes = append(sp.Attributes, &commonpb.KeyValue{Key: fmt.Sprint("k", k),
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "v"}}})
		}
		ss.Spans = append(ss.Spans, sp)
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := post(t, c.srv.URL+"/v1/traces", "application/x-protobuf", "", raw); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if spans, _ := c.received(); len(spans) != 512 || len(spans[511].Attrs) != 20 {
		t.Errorf("received %d spans", len(spans))
	}
}
