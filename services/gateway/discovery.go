package main

import (
	"cmp"
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
	"microlab/services/platform/control"
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
//
// Versions (deploy.catalog.weights, canary.go): each instance registers the version it
// runs, and pick first chooses a version by its weight, then an instance of it
// round-robin. Weights other than v1:100 turn the registry on by themselves (a canary
// is found only there), and a version with no healthy instance gets nothing: its share
// goes to the other, counted in gateway_upstream_version_fallbacks_total.
const (
	probeEvery   = time.Second
	probeTimeout = 500 * time.Millisecond // below probeEvery: a hung instance cannot stall the round
)

// staticInstance labels requests sent to the Config's URL (gateway.discovery=static).
const staticInstance = "static"

var errNoRegistry = errors.New("no service registry")

// target is one healthy instance to send to.
type target struct{ id, url, version string }

// staticVersion labels the responses of the Config's URL by version: the gateway does
// not know which version answers there.
const staticVersion = "static"

// pool is one upstream's instances as the gateway last saw them.
type pool struct {
	upstream string
	list     func(ctx context.Context) ([]registry.Instance, error) // the registry's live instances
	probe    *http.Client                                           // untraced: a span a second per instance would drown the traces
	on       func() bool                                            // gateway.discovery=registry, or weights sending to v2
	settings func() control.Settings                                // the lab's, live: the weights, the canary's bound (nil: defaults)
	// rollback writes deploy.catalog.weights=v1:100 through the control plane (main.go);
	// nil: the canary's verdict applies in this gateway only.
	rollback func(ctx context.Context, why string) error

	mu        sync.Mutex
	healthy   []target            // by id
	byVersion map[string][]target // healthy, by version, by id
	next      atomic.Uint64       // the weighted choice's slot
	rr        map[string]uint64   // round-robin position within each version

	canary canary

	instances *prometheus.GaugeVec   // gateway_upstream_instances{upstream,state}
	responses *prometheus.CounterVec // gateway_upstream_responses_total{upstream,version,code_class}
	fallbacks *prometheus.CounterVec // gateway_upstream_version_fallbacks_total{upstream,wanted}
	rollbacks *prometheus.CounterVec // gateway_canary_rollbacks_total{upstream}
}

func newPool(upstream string, list func(context.Context) ([]registry.Instance, error), on func() bool, tel *observability.Telemetry) *pool {
	p := &pool{upstream: upstream, list: list, on: on, probe: httpx.NewClient(probeTimeout), canary: canary{now: time.Now}}
	p.canary.wake = make(chan string, 1)
	if tel != nil {
		p.instances = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gateway_upstream_instances",
			Help: "Instances of an upstream the gateway knows from the service registry, by the result of its last /readyz probe (0 while gateway.discovery=static and deploy.catalog.weights give v2 nothing)."},
			[]string{"upstream", "state"})
		p.responses = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_upstream_responses_total",
			Help: "Answers to the gateway's attempts at an upstream, by the version of the instance that gave them (\"static\": the configured URL) and code class (2xx, 4xx, 5xx; \"error\": none, a timeout or a refused connection)."},
			[]string{"upstream", "version", "code_class"})
		p.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_upstream_version_fallbacks_total",
			Help: "Attempts whose weighted choice was a version with no healthy instance, sent to the other version instead, by the version wanted."},
			[]string{"upstream", "wanted"})
		p.rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_canary_rollbacks_total",
			Help: "Canary rollbacks: v2's error rate over its sliding window went above deploy.catalog.canary_max_error_rate, and the gateway set deploy.catalog.weights back to v1:100."},
			[]string{"upstream"})
		tel.Registry.MustRegister(p.instances, p.responses, p.fallbacks, p.rollbacks)
		p.instances.WithLabelValues(upstream, "healthy")
		p.instances.WithLabelValues(upstream, "unhealthy")
		// Every version's series exists from the start (0 until an answer), and the
		// rollback counter's: a rate of nothing is 0, not no data, and an increase from 0
		// is visible (the attempts counter is the upstream's: newUpstream).
		// The configured URL's answers too (static): without its 5xx series from the
		// start, the error ratio's numerator has no static series to divide, and the
		// recording rule says nothing about the lab's usual catalog until one fails.
		for _, v := range append([]string{staticVersion}, control.Versions...) {
			for _, class := range []string{"2xx", "5xx", "error"} {
				p.responses.WithLabelValues(upstream, v, class)
			}
		}
		for _, v := range control.Versions {
			p.fallbacks.WithLabelValues(upstream, v)
		}
		p.rollbacks.WithLabelValues(upstream)
	}
	return p
}

// pick returns the instance for the next attempt: a version by the weights in force
// (weighted), then the next healthy instance of it (round-robin); false: none known (or
// discovery is off), and the caller uses the Config's URL.
func (p *pool) pick() (target, bool) {
	if p == nil || !p.on() {
		return target{}, false
	}
	want := chooseVersion(p.weights(), p.next.Add(1))
	p.mu.Lock()
	defer p.mu.Unlock()
	version := want
	if len(p.byVersion[version]) == 0 {
		version = ""
		for _, v := range control.Versions { // the other version, if it has an instance
			if len(p.byVersion[v]) > 0 {
				version = v
				break
			}
		}
		if version == "" {
			return target{}, false
		}
		if p.fallbacks != nil {
			p.fallbacks.WithLabelValues(p.upstream, want).Inc()
		}
	}
	list := p.byVersion[version]
	if p.rr == nil {
		p.rr = map[string]uint64{}
	}
	p.rr[version]++
	return list[int(p.rr[version]%uint64(len(list)))], true
}

// chooseVersion maps the n-th attempt to a version so that, of every 100 consecutive
// attempts, exactly w[v] go to each version v, spread out rather than in a block: slot
// n·37 mod 100 runs through 0..99 once per 100 attempts (37 and 100 share no factor) in
// a scattered order, and the slots below w[v1] are v1's. Deterministic, unlike a dice
// roll, so a test (and a learner counting) sees 10 of 100 at v1:90,v2:10.
func chooseVersion(w control.Weights, n uint64) string {
	slot := int(n * 37 % 100)
	for _, v := range control.Versions {
		if slot < w[v] {
			return v
		}
		slot -= w[v]
	}
	return control.Versions[0]
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
			live = append(live, registry.Instance{ID: t.id, URL: t.url, Version: t.version})
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
			healthy = append(healthy, target{id: in.ID, url: in.URL, version: cmp.Or(in.Version, control.Versions[0])})
		}
	}
	p.set(healthy, len(live)-len(healthy))
}

func (p *pool) set(healthy []target, unhealthy int) {
	slices.SortFunc(healthy, func(a, b target) int { return strings.Compare(a.id, b.id) })
	byVersion := map[string][]target{}
	for _, t := range healthy {
		if slices.Contains(control.Versions, t.version) { // an unknown version gets no traffic
			byVersion[t.version] = append(byVersion[t.version], t)
		}
	}
	p.mu.Lock()
	p.healthy = healthy
	p.byVersion = byVersion
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
