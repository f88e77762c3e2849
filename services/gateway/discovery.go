package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/observability"
	"microlab/services/platform/httpx"
	"microlab/services/platform/registry"
)

// Service discovery (gateway.discovery=registry): instead of the one URL in its Config,
// the gateway sends an upstream's requests to the instances registered in the lab's
// service registry, round-robin across the ones that passed their last health check.
//
// Two sources of truth, on purpose: the registry says which instances claim to be alive
// (a fresh heartbeat), the gateway's own probe of GET /readyz says which can serve now.
// An instance that is up but failing (a lab fault `down`, a lost database) still
// heartbeats; only the probe takes it out, within one probe interval, and puts it back
// at the first probe it passes.
const (
	probeEvery   = time.Second
	probeTimeout = 500 * time.Millisecond // below probeEvery: a hung instance cannot stall the round
)

// staticInstance labels requests sent to the Config's URL (gateway.discovery=static).
const staticInstance = "static"

var errNoRegistry = errors.New("no service registry")

// target is one healthy instance to send to.
type target struct{ id, url string }

// pool is one upstream's instances as the gateway last saw them.
type pool struct {
	upstream string
	list     func(ctx context.Context) ([]registry.Instance, error) // the registry's live instances
	probe    *http.Client                                           // untraced: a span a second per instance would drown the traces
	on       func() bool                                            // gateway.discovery=registry

	mu      sync.Mutex
	healthy []target // by id
	next    atomic.Uint64

	instances *prometheus.GaugeVec // gateway_upstream_instances{upstream,state}
}

func newPool(upstream string, list func(context.Context) ([]registry.Instance, error), on func() bool, tel *observability.Telemetry) *pool {
	p := &pool{upstream: upstream, list: list, on: on, probe: httpx.NewClient(probeTimeout)}
	if tel != nil {
		p.instances = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gateway_upstream_instances",
			Help: "Instances of an upstream the gateway knows from the service registry, by the result of its last /readyz probe (0 while gateway.discovery=static)."},
			[]string{"upstream", "state"})
		tel.Registry.MustRegister(p.instances)
		p.instances.WithLabelValues(upstream, "healthy")
		p.instances.WithLabelValues(upstream, "unhealthy")
	}
	return p
}

// pick returns the next healthy instance, round-robin; false: none known (or discovery
// is off), and the caller uses the Config's URL.
func (p *pool) pick() (target, bool) {
	if p == nil || !p.on() {
		return target{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.healthy) == 0 {
		return target{}, false
	}
	return p.healthy[int(p.next.Add(1)%uint64(len(p.healthy)))], true
}

// Run refreshes the pool every probeEvery until ctx ends.
func (p *pool) Run(ctx context.Context) error {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		p.refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refresh reads the registry and probes every live instance at once. A registry that
// cannot be read keeps the last healthy set (the instances did not go away because the
// lab database hiccupped), but each is still probed.
func (p *pool) refresh(ctx context.Context) {
	if !p.on() {
		p.set(nil, 0)
		return
	}
	var live []registry.Instance
	err := errNoRegistry
	if p.list != nil {
		live, err = p.list(ctx)
	}
	if err != nil {
		p.mu.Lock()
		for _, t := range p.healthy {
			live = append(live, registry.Instance{ID: t.id, URL: t.url})
		}
		p.mu.Unlock()
	}
	ok := make([]bool, len(live))
	var wg sync.WaitGroup
	for i, in := range live {
		wg.Go(func() { ok[i] = p.ready(ctx, in.URL) })
	}
	wg.Wait()
	var healthy []target
	for i, in := range live {
		if ok[i] {
			healthy = append(healthy, target{id: in.ID, url: in.URL})
		}
	}
	p.set(healthy, len(live)-len(healthy))
}

func (p *pool) set(healthy []target, unhealthy int) {
	slices.SortFunc(healthy, func(a, b target) int { return strings.Compare(a.id, b.id) })
	p.mu.Lock()
	p.healthy = healthy
	p.mu.Unlock()
	if p.instances != nil {
		p.instances.WithLabelValues(p.upstream, "healthy").Set(float64(len(healthy)))
		p.instances.WithLabelValues(p.upstream, "unhealthy").Set(float64(unhealthy))
	}
}

// ready probes base's /readyz: healthy is a 200 within probeTimeout.
func (p *pool) ready(ctx context.Context, base string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := p.probe.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// instanceKey carries the chosen instance from upstream.send to tagInstance, which runs
// inside otelhttp's transport and so sees the client span.
type instanceKey struct{}

// tagInstance puts the instance the gateway chose on its client span
// (upstream.instance), so a trace says which catalog answered.
type tagInstance struct{ next http.RoundTripper }

// upstreamNameKey carries the upstream's name (upstream.send) to tagInstance.
type upstreamNameKey struct{}

func (t tagInstance) RoundTrip(r *http.Request) (*http.Response, error) {
	if id, ok := r.Context().Value(instanceKey{}).(string); ok {
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("upstream.instance", id))
	}
	// peer.service (OpenTelemetry's name for the logical service called): which
	// upstream this client span went to, monolith or users/catalog/orders, whatever
	// its URL; the strangler fig's moves read off the waterfall.
	if name, ok := r.Context().Value(upstreamNameKey{}).(string); ok {
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("peer.service", name))
	}
	return t.next.RoundTrip(r)
}
