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

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"microlab/observability"
	"microlab/services/platform/control"
	"microlab/services/platform/registry"
	"microlab/services/platform/testenv"
)

// release is a real HTTP server standing for one catalog instance of a version: it
// counts its product reads and, if failEvery > 0, answers every failEvery-th with 500
// (as catalog v2 does at deploy.catalog.v2=bad); down answers 503 everywhere.
type release struct {
	id, version string
	failEvery   int64
	srv         *httptest.Server
	down        atomic.Bool
	reads       atomic.Int64
}

func newRelease(t *testing.T, id, version string, failEvery int64) *release {
	r := &release{id: id, version: version, failEvery: failEvery}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.down.Load() {
			http.Error(w, `{"error":{"code":"down"}}`, http.StatusServiceUnavailable)
			return
		}
		if req.URL.Path != "/products" {
			return // /readyz
		}
		if n := r.reads.Add(1); r.failEvery > 0 && n%r.failEvery == 0 {
			http.Error(w, `{"error":{"code":"v2_bug"}}`, http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, `{"items":[]}`)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// metricValue is the value of the series of name with every one of labels (k=v), summed.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for _, kv := range labels {
				k, v, _ := strings.Cut(kv, "=")
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// canaryGateway is a gateway whose catalog instances are rels, registered in a real
// registry (the lab database's instances table, testenv), with settings read from a
// real control store through snapshot (reload re-reads it, as the watcher does when a
// change is announced).
type canaryGateway struct {
	g      *Gateway
	tel    *observability.Telemetry
	store  *control.Store
	plane  *control.Plane
	reload func()
}

func newCanaryGateway(t *testing.T, rels ...*release) *canaryGateway {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	labDB := testenv.DB(t, testenv.Name("t_lab_"))
	store, err := control.OpenStore(ctx, labDB) // migrates the instances table too
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	reg, err := registry.Open(ctx, labDB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	for _, r := range rels {
		if err := reg.Register(ctx, registry.Instance{Service: "catalog", ID: r.id, URL: r.srv.URL, Version: r.version}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Set(ctx, control.GatewayBreakerEnabled, "false", "test"); err != nil {
		t.Fatal(err)
	}
	var snapshot atomic.Pointer[control.Settings]
	reload := func() {
		s, err := store.Load(context.Background())
		if err != nil {
			t.Error(err)
			return
		}
		snapshot.Store(&s)
	}
	reload()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tel := observability.Nop(log)
	cfg := Config{CatalogURL: "http://127.0.0.1:1", UsersURL: "http://127.0.0.1:1", OrdersURL: "http://127.0.0.1:1",
		UpstreamTimeout: time.Second, UpstreamRetries: 0, BreakerFailures: 5, BreakerOpenFor: time.Second}
	g := New(cfg, log, tel)
	g.Follow(func() control.Settings { return *snapshot.Load() })
	g.catalog.pool.list = func(ctx context.Context) ([]registry.Instance, error) { return reg.Live(ctx, "catalog") }
	return &canaryGateway{g: g, tel: tel, store: store, plane: &control.Plane{Store: store}, reload: reload}
}

func (c *canaryGateway) set(t *testing.T, key, value string) {
	t.Helper()
	if _, err := c.plane.Set(context.Background(), key, value, "test"); err != nil {
		t.Fatal(err)
	}
	c.reload()
	c.g.catalog.pool.refresh(context.Background())
}

// read sends n product reads and returns how many failed.
func (c *canaryGateway) read(n int) (failed int) { return c.readIn(context.Background(), n) }

// readIn is read within ctx (a request's span, say).
func (c *canaryGateway) readIn(ctx context.Context, n int) (failed int) {
	for range n {
		if _, err := c.g.catalog.call(ctx, request{Method: http.MethodGet, Path: "/products"}); err != nil {
			failed++
		}
	}
	return failed
}

// The weights split catalog's traffic exactly (of every 100 attempts, the weight's
// number), with round-robin inside a version; they route through the registry even at
// gateway.discovery=static. Blue-green: v1:0,v2:100 sends everything to v2 at once, and
// back. A version with no healthy instance gets nothing: its share goes to the other,
// counted as a fallback.
func TestWeightedVersionsAndFallback(t *testing.T) {
	t.Parallel()
	a, b, v2 := newRelease(t, "catalog-1", "v1", 0), newRelease(t, "catalog-2", "v1", 0), newRelease(t, "catalog-v2-1", "v2", 0)
	c := newCanaryGateway(t, a, b, v2)
	counts := func() [3]int64 {
		out := [3]int64{a.reads.Load(), b.reads.Load(), v2.reads.Load()}
		a.reads.Store(0)
		b.reads.Store(0)
		v2.reads.Store(0)
		return out
	}

	c.set(t, control.DeployCatalogWeights, "v1:90,v2:10")
	if f := c.read(200); f != 0 {
		t.Fatalf("v1:90,v2:10: %d reads failed", f)
	}
	if got := counts(); got != [3]int64{90, 90, 20} {
		t.Fatalf("v1:90,v2:10 over 200 reads: catalog-1, catalog-2, catalog-v2-1 got %v, want 90, 90, 20", got)
	}
	if n := metricValue(t, c.tel.Registry, "gateway_upstream_responses_total", "version=v2", "code_class=2xx"); n != 20 {
		t.Fatalf("gateway_upstream_responses_total{version=v2,code_class=2xx} = %v, want 20", n)
	}

	c.set(t, control.DeployCatalogWeights, "v1:0,v2:100") // blue-green: switch
	c.read(30)
	if got := counts(); got != [3]int64{0, 0, 30} {
		t.Fatalf("v1:0,v2:100: reads %v, want all 30 on v2", got)
	}
	// And back. (At v1:100 with gateway.discovery=static the gateway would call its
	// CATALOG_URL again, catalog-1 in the lab; here, the registry's v1 instances.)
	c.set(t, control.GatewayDiscovery, control.DiscoveryRegistry)
	c.set(t, control.DeployCatalogWeights, control.WeightsAllV1)
	c.read(30)
	if got := counts(); got != [3]int64{15, 15, 0} {
		t.Fatalf("v1:100: reads %v, want 15, 15, 0", got)
	}

	// v2 down while it has every request: v1 takes them, each counted as a fallback.
	c.set(t, control.DeployCatalogWeights, "v1:0,v2:100")
	v2.down.Store(true)
	c.g.catalog.pool.refresh(context.Background())
	if f := c.read(10); f != 0 {
		t.Fatalf("v2 down: %d reads failed, want none (v1 takes them)", f)
	}
	if got := counts(); got != [3]int64{5, 5, 0} {
		t.Fatalf("v2 down: reads %v, want 5, 5, 0", got)
	}
	if n := metricValue(t, c.tel.Registry, "gateway_upstream_version_fallbacks_total", "wanted=v2"); n != 10 {
		t.Fatalf("fallbacks from v2: %v, want 10", n)
	}
}

// The canary, end to end inside one gateway: a bad v2 (one answer in four a 500) at
// v1:90,v2:10 is rolled back once its window holds CanaryMinSample answers above the
// bound: the rollback is counted once, the weights in the control store read v1:100
// (written by the gateway, with its reason on the timeline), and v2 gets not one
// request more. A good v2 at the same weights is never rolled back.
func TestCanaryRollsBackBadV2(t *testing.T) {
	t.Parallel()
	v1, bad := newRelease(t, "catalog-1", "v1", 0), newRelease(t, "catalog-v2-1", "v2", 4)
	c := newCanaryGateway(t, v1, bad)
	p := c.g.catalog.pool
	wrote := make(chan struct{}, 1)
	p.rollback = func(ctx context.Context, why string) error {
		err := rollbackWeights(ctx, c.plane, why)
		c.reload() // as the announcement would
		wrote <- struct{}{}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.RunCanary(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	c.set(t, control.DeployCatalogWeights, "v1:90,v2:10")

	rolledBack := func() float64 {
		return metricValue(t, c.tel.Registry, "gateway_canary_rollbacks_total", "upstream=catalog")
	}
	// Each read in a span of its own, as the gateway's server span would be: the one
	// whose answer tipped the window gets the event canary.rollback.
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	for i := 0; rolledBack() == 0; i++ {
		if i == 1000 {
			t.Fatalf("no rollback after 1000 reads; v2 answered %d", bad.reads.Load())
		}
		sctx, span := tracer.Start(context.Background(), "GET /api/v1/products")
		c.readIn(sctx, 1)
		span.End()
	}
	var events []string
	for _, s := range rec.Ended() {
		for _, e := range s.Events() {
			events = append(events, e.Name)
		}
	}
	if len(events) != 1 || events[0] != "canary.rollback" {
		t.Errorf("span events %v, want one canary.rollback", events)
	}
	// The window's first verdict comes at its minimum sample, not before.
	if n := bad.reads.Load(); n != control.CanaryMinSample {
		t.Errorf("rolled back after %d v2 answers, want %d (CanaryMinSample)", n, control.CanaryMinSample)
	}
	atV2 := bad.reads.Load()
	c.read(100) // at once, before the write lands: this gateway sends v1 only
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the rollback was never written")
	}
	c.read(100)
	if n := bad.reads.Load() - atV2; n != 0 {
		t.Fatalf("v2 got %d requests after the rollback, want 0", n)
	}
	if n := rolledBack(); n != 1 {
		t.Fatalf("gateway_canary_rollbacks_total = %v, want 1", n)
	}
	cur, err := c.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := cur.Get(control.DeployCatalogWeights); got != control.WeightsAllV1 {
		t.Fatalf("stored weights after the rollback: %q, want %s", got, control.WeightsAllV1)
	}
	changes, err := c.store.Changes(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	var why string
	for _, ch := range changes {
		if ch.Source != rollbackSource {
			continue
		}
		if ch.Key == CanaryRollbackKey {
			why = ch.New
		}
	}
	if !strings.Contains(why, "v2 failed 5 of its last 20 answers") {
		t.Fatalf("timeline: %+v, want the gateway's note saying v2 failed 5 of 20", changes)
	}

	// A good v2 at the same weights: traffic flows to it and stays.
	good := newRelease(t, "catalog-v2-2", "v2", 0)
	c2 := newCanaryGateway(t, v1, good)
	c2.set(t, control.DeployCatalogWeights, "v1:90,v2:10")
	c2.read(400)
	if n := metricValue(t, c2.tel.Registry, "gateway_canary_rollbacks_total"); n != 0 || good.reads.Load() != 40 {
		t.Fatalf("good v2: %v rollbacks and %d of 400 reads, want 0 and 40", n, good.reads.Load())
	}
}
