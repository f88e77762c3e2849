package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestHalfOpenTrialMarked: the one call a half-open breaker lets through is marked on
// the caller's span (circuit_breaker.state=half_open, circuit_breaker.upstream), a
// failed trial as well as the one that closes the breaker; a call made while the
// breaker is closed, and one refused while it is open, are not.
func TestHalfOpenTrialMarked(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, `{"error":{"code":"boom","message":"boom"}}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	defer srv.Close()

	const openFor = 100 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	u := newUpstream("orders", srv.URL, newHTTPClient(nil), fixedKnobs(1, openFor, time.Second), log, nil)
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")

	// call makes one plain POST (no retries) under a span of its own and reports
	// whether that span came out marked as a trial, and the breaker's state after it.
	call := func(name string) (marked bool, state string) {
		t.Helper()
		ctx, span := tracer.Start(context.Background(), name)
		_, _ = u.call(ctx, request{Method: http.MethodPost, Path: "/orders", Body: []byte(`{}`)})
		span.End()
		ended := rec.Ended()
		s := ended[len(ended)-1]
		if s.Name() != name {
			t.Fatalf("last span %q, want %q", s.Name(), name)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs["circuit_breaker.state"] == "half_open" {
			if attrs["circuit_breaker.upstream"] != "orders" {
				t.Errorf("%s: a trial marked for upstream %q, want orders", name, attrs["circuit_breaker.upstream"])
			}
			return true, u.State()
		}
		if len(attrs) != 0 {
			t.Errorf("%s: attributes %v on a call that was no trial", name, attrs)
		}
		return false, u.State()
	}
	for _, c := range []struct {
		name       string
		wait       time.Duration
		healthy    bool
		trial      bool
		stateAfter string
	}{
		{"closed, fails", 0, false, false, "open"},
		{"open, refused", 0, false, false, "open"},
		{"half-open, trial fails", openFor + 50*time.Millisecond, false, true, "open"},
		{"open again, refused", 0, false, false, "open"},
		{"half-open, trial succeeds", openFor + 50*time.Millisecond, true, true, "closed"},
		{"closed again", 0, true, false, "closed"},
	} {
		time.Sleep(c.wait)
		healthy.Store(c.healthy)
		if trial, state := call(c.name); trial != c.trial || state != c.stateAfter {
			t.Errorf("%s: marked as trial %v, breaker %s after; want %v, %s", c.name, trial, state, c.trial, c.stateAfter)
		}
	}
}
