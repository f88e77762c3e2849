package observability

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
)

// HeaderTraceResponse is the W3C Trace Context response header
// (https://w3c.github.io/trace-context/#traceresponse-header): it tells the client
// which trace its request became, so anything can link a response to Jaeger.
const HeaderTraceResponse = "traceresponse"

// quiet paths are polled by machines (the supervisor, Prometheus); a span per poll would
// drown the checkouts in Jaeger. They are still counted in the RED metrics.
func quiet(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}

// Handler wraps a service's HTTP handler (usually its ServeMux): a server span per
// request named after the route (`POST /api/v1/orders`), context extracted from the
// incoming traceparent, the traceresponse header, and the RED metrics per route.
//
// mux must be the handler that routes (it sets Request.Pattern, which names the span and
// labels the metrics); wrappers around it go in between through inner.
func (t *Telemetry) Handler(mux http.Handler, inner ...func(http.Handler) http.Handler) http.Handler {
	var h http.Handler = t.red(Routed(mux))
	for i := len(inner) - 1; i >= 0; i-- {
		h = inner[i](h)
	}
	h = traceResponse(h)
	h = otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(t.TracerProvider()),
		otelhttp.WithPropagators(t.Propagator()),
		otelhttp.WithFilter(func(r *http.Request) bool { return !quiet(r) }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if rt := routeOf(r); rt != "unmatched" {
				return r.Method + " " + rt
			}
			return r.Method
		}),
	)
	return withRouteSlot(h)
}

// A route slot travels in the request context so that the innermost mux that matched
// names the route (the gateway's /api/v1/ sub-mux knows `/api/v1/orders/{id}`; the
// outer mux only knows `/api/v1/`), whatever request copies the middleware made.
type routeSlotKey struct{}

type routeSlot struct{ route string }

func withRouteSlot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeSlotKey{}, &routeSlot{})))
	})
}

// Routed wraps a ServeMux so that the pattern it matched names the request's span and
// metrics. Handler does it for the service's mux; a mux mounted inside it (the
// gateway's API) wraps itself too, and the innermost match wins.
func Routed(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		if slot, ok := r.Context().Value(routeSlotKey{}).(*routeSlot); ok && slot.route == "" && r.Pattern != "" {
			slot.route = route(r)
		}
	})
}

// routeOf is the route recorded for r, or "unmatched".
func routeOf(r *http.Request) string {
	if slot, ok := r.Context().Value(routeSlotKey{}).(*routeSlot); ok && slot.route != "" {
		return slot.route
	}
	return route(r)
}

// Transport wraps an HTTP client transport: a client span per call and the traceparent
// header, so the callee's server span joins the caller's trace.
func (t *Telemetry) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.TracerProvider()),
		otelhttp.WithPropagators(t.Propagator()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return fmt.Sprintf("%s %s", r.Method, r.URL.Path)
		}),
	)
}

func traceResponse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sc := trace.SpanContextFromContext(r.Context()); sc.IsValid() {
			w.Header().Set(HeaderTraceResponse, TraceResponse(sc))
		}
		next.ServeHTTP(w, r)
	})
}

// TraceResponse formats a span context as a traceresponse/traceparent value.
func TraceResponse(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// route is the matched mux pattern without its method ("/api/v1/orders/{id}"), or
// "unmatched": never the raw path, which would be a label value per order id.
func route(r *http.Request) string {
	p := r.Pattern
	if p == "" {
		return "unmatched"
	}
	if _, path, ok := strings.Cut(p, " "); ok {
		return path
	}
	return p
}

func (t *Telemetry) red(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	m := t.Metrics
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.HTTPInFlight.Inc()
		defer m.HTTPInFlight.Dec()
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		rt, method := routeOf(r), methodLabel(r.Method)
		m.HTTPRequests.WithLabelValues(rt, method, strconv.Itoa(sw.code)).Inc()
		m.HTTPDuration.WithLabelValues(rt, method).Observe(time.Since(start).Seconds())
	})
}

// methodLabel keeps the method label bounded: a client may send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
