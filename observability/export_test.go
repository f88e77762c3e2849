package observability

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// receiver is a minimal OTLP/HTTP trace endpoint: it decodes what the exporter sends.
type receiver struct {
	mu    sync.Mutex
	names []string
	svc   []string
	attrs []map[string]string // each span's string attributes
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want protobuf on /v1/traces", http.StatusBadRequest)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, _ := io.ReadAll(body)
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, a := range rs.Resource.Attributes {
			if a.Key == "service.name" {
				rc.svc = append(rc.svc, a.Value.GetStringValue())
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				rc.names = append(rc.names, s.Name)
				attrs := map[string]string{}
				for _, a := range s.Attributes {
					if v, ok := a.Value.Value.(*commonpb.AnyValue_StringValue); ok {
						attrs[a.Key] = v.StringValue
					}
				}
				rc.attrs = append(rc.attrs, attrs)
			}
		}
	}
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = io.Copy(w, bytes.NewReader(out))
}

// TestTwoExporters: every span goes over OTLP/HTTP both to Jaeger's endpoint and to the
// dashboard's, and Shutdown flushes what is buffered.
func TestTwoExporters(t *testing.T) {
	jaeger, dashboard := &receiver{}, &receiver{}
	js, ds := httptest.NewServer(jaeger), httptest.NewServer(dashboard)
	defer js.Close()
	defer ds.Close()
	tel, err := Setup(context.Background(), Process{Service: "orders", Instance: "orders-1"},
		Config{OTLPEndpoint: js.URL, DashboardEndpoint: ds.URL + "/", SampleRatio: 1, Environment: "test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer().Start(context.Background(), "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, rc := range map[string]*receiver{"jaeger": jaeger, "dashboard": dashboard} {
		rc.mu.Lock()
		if len(rc.names) != 1 || rc.names[0] != "POST /orders" || len(rc.svc) != 1 || rc.svc[0] != "orders" {
			t.Errorf("%s received spans %v from %v; want [POST /orders] from [orders]", name, rc.names, rc.svc)
		}
		rc.mu.Unlock()
	}
}

// A span keeps no attribute value longer than 4 KiB, by default: the gateway's server
// span records the client's User-Agent, which can be up to Go's 1 MiB header limit on
// any request, and would otherwise be exported whole to Jaeger and the dashboard. The
// same goes for attributes set by hand. What is exported is the first 4 KiB.
func TestLongAttributesAreExportedCut(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	tel, err := Setup(context.Background(), Process{Service: "gateway", Instance: "gateway-1"},
		Config{OTLPEndpoint: srv.URL, SampleRatio: 1, Environment: "test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/products", func(w http.ResponseWriter, r *http.Request) {
		_, span := tel.Tracer().Start(r.Context(), "list products")
		span.SetAttributes(attribute.String("big", strings.Repeat("b", 1<<20)), attribute.String("small", "s"))
		span.End()
	})
	api := httptest.NewServer(tel.Handler(mux))
	defer api.Close()
	req, _ := http.NewRequest(http.MethodGet, api.URL+"/api/v1/products", nil)
	ua := strings.Repeat("u", 1<<20-8<<10) // within Go's header limit
	req.Header.Set("User-Agent", ua)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	found := map[string]bool{}
	for i, name := range rc.names {
		a := rc.attrs[i]
		switch name {
		case "GET /api/v1/products":
			found[name] = true
			if got := a["user_agent.original"]; got != ua[:4096] {
				t.Errorf("server span exported a User-Agent of %d bytes, want its first 4096", len(got))
			}
		case "list products":
			found[name] = true
			if a["big"] != strings.Repeat("b", 4096) || a["small"] != "s" {
				t.Errorf("exported attributes of %d and %d bytes, want 4096 and 1", len(a["big"]), len(a["small"]))
			}
		}
	}
	if len(found) != 2 {
		t.Errorf("exported spans %v, want the server span and the hand-made one", rc.names)
	}
}

// Flush exports what has ended, at once, and the provider goes on: a process about to
// exit without Shutdown (crash_after_commit) flushes first. The batch timeout is a
// second, so without Flush nothing would have arrived yet.
func TestFlushExportsWhileRunning(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	tel, err := Setup(context.Background(), Process{Service: "payments", Instance: "payments-1"},
		Config{OTLPEndpoint: srv.URL, SampleRatio: 1, Environment: "test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	for _, name := range []string{"process order.placed", "process payment.authorized"} {
		_, span := tel.Tracer().Start(context.Background(), name, trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
		if err := tel.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		rc.mu.Lock()
		got := append([]string(nil), rc.names...)
		rc.mu.Unlock()
		if len(got) == 0 || got[len(got)-1] != name {
			t.Fatalf("after Flush the receiver has %v, want %s last", got, name)
		}
	}
	if err := Nop(nil).Flush(context.Background()); err != nil {
		t.Errorf("Flush without a provider: %v", err)
	}
}

// rawReceiver keeps the bodies it is sent; while hang is open it holds every request.
type rawReceiver struct {
	mu     sync.Mutex
	bodies [][]byte
	hang   chan struct{}
	status int // 0: 200
}

func (rc *rawReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rc.hang != nil {
		select {
		case <-rc.hang:
		case <-r.Context().Done():
			return
		}
	}
	raw, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, raw)
	rc.mu.Unlock()
	if rc.status != 0 {
		http.Error(w, "no", rc.status)
	}
}

// spans counts the spans of every body received.
func (rc *rawReceiver) spans() int {
	n := 0
	for _, raw := range rc.received() {
		var req coltrace.ExportTraceServiceRequest
		if proto.Unmarshal(raw, &req) == nil {
			for _, rs := range req.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					n += len(ss.Spans)
				}
			}
		}
	}
	return n
}

func (rc *rawReceiver) received() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...)
}

// Both destinations get the very same bytes: a batch is marshalled once, not once per
// destination.
func TestOneMarshalForBothDestinations(t *testing.T) {
	jaeger, dashboard := &rawReceiver{}, &rawReceiver{}
	js, ds := httptest.NewServer(jaeger), httptest.NewServer(dashboard)
	defer js.Close()
	defer ds.Close()
	tel, err := Setup(context.Background(), Process{Service: "orders", Instance: "orders-1"},
		Config{OTLPEndpoint: js.URL, DashboardEndpoint: ds.URL, SampleRatio: 1, Environment: "test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, span := tel.Tracer().Start(context.Background(), fmt.Sprintf("process %d", i), trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, d := jaeger.received(), dashboard.received()
	if len(j) == 0 || len(j) != len(d) {
		t.Fatalf("jaeger got %d requests, dashboard %d; want the same, at least one", len(j), len(d))
	}
	for i := range j {
		if !bytes.Equal(j[i], d[i]) {
			t.Errorf("request %d differs between the destinations (%d and %d bytes)", i, len(j[i]), len(d[i]))
		}
	}
}

// A destination that hangs holds up neither the process nor the other destination:
// its spans keep arriving at Jaeger, batch after batch, while the dashboard answers
// nothing; and what the hung destination cannot take is dropped and counted, not held
// without bound.
func TestHungDestinationBlocksNeitherTheOtherNorTheProcess(t *testing.T) {
	jaeger, dashboard := &rawReceiver{}, &rawReceiver{hang: make(chan struct{})}
	js, ds := httptest.NewServer(jaeger), httptest.NewServer(dashboard)
	defer js.Close()
	defer ds.Close()
	defer close(dashboard.hang) // before the servers close, or Close waits for the hung request
	tel, err := Setup(context.Background(), Process{Service: "orders", Instance: "orders-1"},
		Config{OTLPEndpoint: js.URL, DashboardEndpoint: ds.URL, SampleRatio: 1, Environment: "test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	batches := exportQueueBatches + 10
	start := time.Now()
	for i := range batches {
		_, span := tel.Tracer().Start(context.Background(), fmt.Sprintf("process %d", i), trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
		// The SDK hands the batch to the exporter; that must not wait for the dashboard.
		fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := tel.sdk.ForceFlush(fctx)
		cancel()
		if err != nil {
			t.Fatalf("batch %d: the SDK's flush waited on the hung destination: %v", i, err)
		}
		// And Jaeger has it soon after, however many batches the dashboard holds.
		deadline := time.Now().Add(5 * time.Second)
		for jaeger.spans() < i+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := jaeger.spans(); got != i+1 {
			t.Fatalf("after %d batches jaeger has %d spans (%v dropped) while the dashboard hangs", i+1, got,
				testutil.ToFloat64(tel.fanout.dests[0].dropped))
		}
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("%d batches took %s with one destination hung", batches, d)
	}
	// The dashboard's queue holds exportQueueBatches, one more is in flight; the rest is
	// dropped and counted under its name only.
	if got := testutil.ToFloat64(tel.fanout.dests[1].dropped); got < float64(batches-exportQueueBatches-1) {
		t.Errorf("dashboard dropped %v spans, want at least %d", got, batches-exportQueueBatches-1)
	}
	if got := testutil.ToFloat64(tel.fanout.dests[0].dropped); got != 0 {
		t.Errorf("jaeger dropped %v spans, want 0", got)
	}
	// Shutdown is bounded by its context even with a request hung.
	sctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := tel.Shutdown(sctx); err == nil {
		t.Error("Shutdown reported success with the dashboard's spans unsent")
	}
}

// A receiver that refuses a batch (4xx) is not retried: the spans are counted dropped.
func TestRefusedBatchIsCountedDropped(t *testing.T) {
	rc := &rawReceiver{status: http.StatusBadRequest}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	tel, err := Setup(context.Background(), Process{Service: "orders", Instance: "orders-1"},
		Config{OTLPEndpoint: srv.URL, SampleRatio: 1, Environment: "test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, span := tel.Tracer().Start(context.Background(), fmt.Sprintf("GET /%d", i), trace.WithSpanKind(trace.SpanKindServer))
		span.End()
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rc.received()); n != 1 {
		t.Errorf("refused batch sent %d times, want once", n)
	}
	if got := testutil.ToFloat64(tel.fanout.dests[0].dropped); got != 2 {
		t.Errorf("dropped %v spans, want 2", got)
	}
}
