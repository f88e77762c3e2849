package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"microlab/services/platform/control"
	"microlab/services/platform/registry"
)

// instance is a real HTTP server standing for one catalog instance: it counts the
// product reads it answers, and answers 503 everywhere while down (as the lab's fault
// `down` does).
type instance struct {
	id    string
	srv   *httptest.Server
	down  atomic.Bool
	reads atomic.Int64
}

func newInstance(t *testing.T, id string) *instance {
	in := &instance{id: id}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if in.down.Load() {
			http.Error(w, `{"error":{"code":"down"}}`, http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/products" {
			in.reads.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `[]`)
	}))
	t.Cleanup(in.srv.Close)
	return in
}

// With gateway.discovery=registry the gateway round-robins catalog's requests across
// the registered instances that pass /readyz; one that turns unhealthy gets nothing
// after the next probe, and gets traffic again once it passes one. At static, only the
// Config's URL is called.
func TestDiscoveryBalancesAcrossHealthyInstances(t *testing.T) {
	t.Parallel()
	insts := []*instance{newInstance(t, "catalog-1"), newInstance(t, "catalog-2"), newInstance(t, "catalog-3")}
	mode := control.DiscoveryStatic
	cur := func() control.Settings {
		return control.Settings{Values: map[string]string{control.GatewayDiscovery: mode, control.GatewayBreakerEnabled: "false"}}
	}
	cfg := Config{CatalogURL: insts[0].srv.URL, UsersURL: "http://127.0.0.1:1", OrdersURL: "http://127.0.0.1:1",
		UpstreamTimeout: time.Second, UpstreamRetries: 0, BreakerFailures: 5, BreakerOpenFor: time.Second}
	g := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	g.Follow(cur)
	g.catalog.pool.list = func(context.Context) ([]registry.Instance, error) {
		var out []registry.Instance
		for _, in := range insts {
			out = append(out, registry.Instance{Service: "catalog", ID: in.id, URL: in.srv.URL})
		}
		return out, nil
	}
	ctx := context.Background()
	read := func(n int) (failed int) {
		for range n {
			if _, err := g.catalog.call(ctx, request{Method: http.MethodGet, Path: "/products"}); err != nil {
				failed++
			}
		}
		return failed
	}
	counts := func() [3]int64 { return [3]int64{insts[0].reads.Load(), insts[1].reads.Load(), insts[2].reads.Load()} }
	reset := func() {
		for _, in := range insts {
			in.reads.Store(0)
		}
	}

	g.catalog.pool.refresh(ctx) // static: the pool stays empty
	read(9)
	if c := counts(); c != [3]int64{9, 0, 0} {
		t.Fatalf("static: reads per instance %v, want all 9 on the Config's URL", c)
	}

	mode = control.DiscoveryRegistry
	g.catalog.pool.refresh(ctx)
	reset()
	if f := read(9); f != 0 {
		t.Fatalf("registry: %d reads failed", f)
	}
	if c := counts(); c != [3]int64{3, 3, 3} {
		t.Fatalf("registry: reads per instance %v, want 3 each (round-robin)", c)
	}

	insts[1].down.Store(true)
	g.catalog.pool.refresh(ctx) // the next probe round, at most probeEvery later in the gateway
	reset()
	if f := read(10); f != 0 {
		t.Fatalf("catalog-2 down: %d reads failed (it should have been skipped)", f)
	}
	if c := counts(); c[1] != 0 || c[0] != 5 || c[2] != 5 {
		t.Fatalf("catalog-2 down: reads per instance %v, want 5, 0, 5", c)
	}

	insts[1].down.Store(false)
	g.catalog.pool.refresh(ctx)
	reset()
	read(9)
	if c := counts(); c != [3]int64{3, 3, 3} {
		t.Fatalf("catalog-2 back: reads per instance %v, want 3 each", c)
	}
}

// The pool's own loop notices a failing instance within the probe interval, with no
// help from the test.
func TestDiscoveryRunRemovesWithinInterval(t *testing.T) {
	t.Parallel()
	a, b := newInstance(t, "catalog-1"), newInstance(t, "catalog-2")
	p := newPool("catalog", func(context.Context) ([]registry.Instance, error) {
		return []registry.Instance{{ID: a.id, URL: a.srv.URL}, {ID: b.id, URL: b.srv.URL}}, nil
	}, func() bool { return true }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx) }()
	healthy := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.healthy)
	}
	waitFor := func(want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for healthy() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d healthy after %s, want %d", healthy(), within, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(2, 2*probeEvery)
	b.down.Store(true)
	start := time.Now()
	waitFor(1, probeEvery+probeTimeout+200*time.Millisecond)
	t.Logf("catalog-2 removed %s after going down", time.Since(start).Round(time.Millisecond))
	if tg, _ := p.pick(); tg.id != "catalog-1" {
		t.Fatalf("picked %q with catalog-2 down", tg.id)
	}
	b.down.Store(false)
	waitFor(2, probeEvery+probeTimeout+200*time.Millisecond)
}

// The client span of a call the pool routed carries upstream.instance, the instance
// chosen (tagInstance runs inside otelhttp's transport, as newHTTPClient builds it).
func TestDiscoveryTagsClientSpan(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "catalog-7")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	client := &http.Client{Transport: otelhttp.NewTransport(tagInstance{http.DefaultTransport}, otelhttp.WithTracerProvider(tp))}
	u := newUpstream("catalog", "http://127.0.0.1:1", client, fixedKnobs(5, time.Second, time.Second), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	u.pool = newPool("catalog", func(context.Context) ([]registry.Instance, error) {
		return []registry.Instance{{ID: a.id, URL: a.srv.URL}}, nil
	}, func() bool { return true }, nil)
	u.pool.refresh(context.Background())
	if _, err := u.call(context.Background(), request{Method: http.MethodGet, Path: "/products"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range rec.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == "upstream.instance" {
				got = append(got, s.Name()+"="+kv.Value.Emit())
			}
		}
	}
	if len(got) != 1 || !strings.HasSuffix(got[0], "=catalog-7") {
		t.Fatalf("spans with upstream.instance: %v, want the one client span with catalog-7", got)
	}
	if a.reads.Load() != 1 {
		t.Fatalf("catalog-7 answered %d reads, want 1 (the static URL must not be used)", a.reads.Load())
	}
}
