package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"microlab/dashboard/ingest"
	"microlab/services/platform/app"
	"microlab/services/platform/testenv"
)

// run starts against a real lab database and broker, serves, answers ready, exposes
// its metrics, logs its config with passwords masked, and stops on cancel.
func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	env := testenv.Env{
		"HTTP_ADDR":        testenv.AnyAddr,
		"LAB_DATABASE_URL": testenv.DB(t, testenv.Name("t_dash_")),
		"AMQP_URL":         testenv.VHost(t),
		"PROMETHEUS_URL":   closedURL(t),
		"HEALTH_INTERVAL":  "1s",
	}
	var logs testenv.LogBuffer
	base, stop := testenv.Start(t, run, env, &logs)
	defer stop()
	for _, path := range []string{"/", "/metrics", "/static/ws.js"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
		if path == "/metrics" && !strings.Contains(string(b), "http_server_requests_total") {
			t.Error("/metrics lacks the RED metrics")
		}
	}
	stop()
	out := logs.String()
	if !strings.Contains(out, `"msg":"starting"`) || !strings.Contains(out, "guest:****@") || strings.Contains(out, "guest:guest@") {
		t.Errorf("config not logged once, masked:\n%s", out)
	}
	// No INSTANCE_ID: the process is named as a service would be (by its pid here, by
	// its container's id in compose), not by a fixed name every replica would share.
	if want := app.DefaultInstanceID(func(string) string { return "" }, "dashboard"); !strings.Contains(out, `"INSTANCE_ID":"`+want+`"`) {
		t.Errorf("INSTANCE_ID unset: want it logged as %q:\n%s", want, out)
	}
}

// The real dashboard under telemetry far larger than it keeps: an 8 KiB gzip body of
// four million empty spans is refused (413); a client's 1 MB attributes under one trace
// id are held cut to 4 KiB with a marker; the store stays within its budget (its own
// metrics say so); and a real trace exported afterwards, through the SDK exporter the
// services use, arrives whole.
func TestRunKeepsItsBudgetUnderHugeTelemetry(t *testing.T) {
	t.Parallel()
	env := testenv.Env{
		"HTTP_ADDR":        testenv.AnyAddr,
		"LAB_DATABASE_URL": testenv.DB(t, testenv.Name("t_dash_")),
		"AMQP_URL":         testenv.VHost(t),
		"PROMETHEUS_URL":   closedURL(t),
	}
	base, stop := testenv.Start(t, run, env, nil)
	defer stop()
	post := func(body []byte, gzipped bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/traces", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		if gzipped {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Four million empty spans: 2 bytes each on the wire.
	scope := bytes.Repeat([]byte{2<<3 | 2, 0}, 4<<20-16) // ScopeSpans.spans, length 0
	rs := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), scope)
	bomb := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rs)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(bomb)
	_ = zw.Close()
	if code, body := post(gz.Bytes(), true); code != http.StatusRequestEntityTooLarge {
		t.Errorf("%d bytes of gzip (%d of empty spans): %d %q, want 413", gz.Len(), len(bomb), code, body)
	}

	// A flood of spans with 1 MB attributes under one trace id, 4 to a request.
	flood := make([]byte, 16)
	flood[0] = 0xf1
	for i := range 25 {
		req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
			Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strAttr("service.name", "gateway")}},
			ScopeSpans: []*tracepb.ScopeSpans{{}}}}}
		for j := range 4 {
			sid := []byte{1, 2, 3, 4, 5, 6, byte(i), byte(j + 1)}
			req.ResourceSpans[0].ScopeSpans[0].Spans = append(req.ResourceSpans[0].ScopeSpans[0].Spans, &tracepb.Span{
				TraceId: flood, SpanId: sid, Name: "GET /", Kind: tracepb.Span_SPAN_KIND_SERVER,
				StartTimeUnixNano: uint64(time.Now().UnixNano()), EndTimeUnixNano: uint64(time.Now().UnixNano()) + 1000,
				Attributes: []*commonpb.KeyValue{strAttr("user_agent.original", strings.Repeat("u", 1<<20))}})
		}
		raw, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := post(raw, false); code != http.StatusOK {
			t.Fatalf("flood request %d: %d %q", i, code, body)
		}
	}

	// A real trace, as the services export it.
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(base+"/v1/traces"),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "orders"))))
	ctx, root := tp.Tracer("test").Start(context.Background(), "POST /api/v1/orders", trace.WithSpanKind(trace.SpanKindServer))
	_, child := tp.Tracer("test").Start(ctx, "publish order.placed", trace.WithSpanKind(trace.SpanKindProducer))
	child.End()
	root.End() // WithSyncer: exported (and answered) before End returns
	_ = tp.Shutdown(context.Background())

	getTrace := func(id string) []ingest.Span {
		t.Helper()
		resp, err := http.Get(base + "/api/traces/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Spans []ingest.Span }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Errorf("GET /api/traces/%s: %d %v", id, resp.StatusCode, err)
		}
		return out.Spans
	}
	if spans := getTrace(root.SpanContext().TraceID().String()); len(spans) != 2 {
		t.Errorf("the real trace has %d spans, want 2", len(spans))
	}
	spans := getTrace(hex.EncodeToString(flood))
	if len(spans) == 0 {
		t.Error("no span of the flood held: cut, not dropped, is what the budget asks")
	}
	for _, s := range spans {
		if ua := s.Attrs["user_agent.original"]; len(ua) > 4<<10+64 || !strings.Contains(ua, "[truncated ") {
			t.Errorf("a flood span is held with a User-Agent of %d bytes, want 4 KiB and a marker", len(ua))
			break
		}
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var held, budget float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `dashboard_store_bytes{store="traces"} `); ok {
			held, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(sc.Text(), `dashboard_store_budget_bytes{store="traces"} `); ok {
			budget, _ = strconv.ParseFloat(v, 64)
		}
	}
	if held <= 0 || budget != 32<<20 || held > budget || held > 2<<20 {
		t.Errorf("trace store: %.0f bytes held of a budget of %.0f; want the flood cut to under 2 MiB", held, budget)
	}
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}
