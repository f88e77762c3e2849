package observability

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// receiver is a minimal OTLP/HTTP trace endpoint: it decodes what the exporter sends.
type receiver struct {
	mu    sync.Mutex
	names []string
	svc   []string
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
