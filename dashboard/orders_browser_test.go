package main

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microlab/internal/testbrowser"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// One order's saga page in the real headless Chromium, against the real dashboard (run)
// and the real orders service: the event stream shows its three events, picking version
// 1 shows the order as placed (pending, one step) without reloading the page, the
// rebuild button says inline that a rebuild is running (orders' 409) and, pressed again
// once it is not, shows the job to its completion. Then the map: a pattern switched on
// through the control plane appears in the strip and on its line, without a reload.
func TestEventStreamAndRebuildInBrowser(t *testing.T) {
	t.Parallel()
	// The 409 is provoked on purpose: the browser logs it as a failed load.
	b := &browser{testbrowser.New(t, func(msg string) bool { return strings.Contains(msg, "status of 409") })}
	orders := startOrders(t)
	id := orders.seedOrder(t)
	labURL, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	base, stop := testenv.Start(t, run, testenv.Env{
		"HTTP_ADDR": testenv.AnyAddr, "LAB_DATABASE_URL": labURL, "AMQP_URL": vhost, "ORDERS_URL": orders.URL,
		"PROMETHEUS_URL": closedURL(t), "HEALTH_INTERVAL": "500ms", "RABBITMQ_MANAGEMENT_URL": closedURL(t),
		"GATEWAY_URL": closedURL(t),
	}, nil)
	defer stop()

	b.Do("open the order's saga page", chromedp.Navigate(base+"/sagas?order="+id), chromedp.WaitVisible(`[data-testid=event-stream]`))
	b.WaitJS("three events", `[...document.querySelectorAll('[data-testid=stream-event]')].map(r => r.dataset.type).join(' ') ===
		'order.placed payment.authorized order.confirmed'`)
	b.WaitJS("the latest state", `document.querySelector('[data-testid=stream-state]').dataset.status === 'confirmed'`)
	b.Do("mark the window", chromedp.Evaluate[chromedp.Void](`window.beforeThePick = 'still here'`))
	b.Do("pick version 1", chromedp.Click(`[data-testid=stream-version][data-version="1"]`))
	b.WaitJS("the state at version 1", `(() => { const s = document.querySelector('[data-testid=stream-state]');
		return s.dataset.version === '1' && s.dataset.status === 'pending' &&
			document.querySelectorAll('[data-testid=state-step]').length === 1 &&
			document.querySelector('[data-testid=state-items]').textContent.includes('2 × LAB-MUG') &&
			document.querySelector('[data-testid=stream-event][data-version="1"]').classList.contains('selected') })()`)
	if !testbrowser.Get(b.Browser, "the window", chromedp.Evaluate[bool](`window.beforeThePick === 'still here'`)) {
		t.Error("picking a version reloaded the page")
	}
	b.Screenshot("saga-event-stream")

	// A rebuild running elsewhere: the button says so inline.
	busy := uuid.NewString()
	if _, err := orders.db.Exec(context.Background(), `INSERT INTO projection_rebuilds (job_id, projection) VALUES ($1, 'order-history')`, busy); err != nil {
		t.Fatal(err)
	}
	b.Do("press rebuild", chromedp.Click(`[data-testid=rebuild-button]`))
	b.WaitJS("the conflict inline", `(() => { const s = document.querySelector('[data-testid=rebuild-status]');
		return s.dataset.state === 'conflict' && s.textContent.includes('is running') })()`)
	if _, err := orders.db.Exec(context.Background(), `UPDATE projection_rebuilds SET status = 'completed' WHERE job_id = $1`, busy); err != nil {
		t.Fatal(err)
	}
	b.Do("press rebuild again", chromedp.Click(`[data-testid=rebuild-button]:not([disabled])`))
	b.WaitJS("the rebuild completed", `(() => { const s = document.querySelector('[data-testid=rebuild-status]');
		return s.dataset.state === 'completed' && s.textContent.includes('1 of 1 orders replayed') })()`)
	b.Screenshot("saga-rebuild-completed")

	// The map: catalog.transport=grpc through the control plane (as the CLI sets it).
	b.Do("open the map", chromedp.Navigate(base+"/"), chromedp.WaitVisible(`[data-testid=pattern-strip]`))
	b.WaitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	b.WaitJS("no pattern on", `!!document.querySelector('[data-testid=patterns-none]') &&
		document.querySelector('[data-testid="edge-label-orders>catalog"]').textContent === 'HTTP'`)
	plane := &control.Plane{Store: store, Pub: testenv.Dial(t, vhost).Pub}
	if _, err := plane.Set(context.Background(), control.CatalogTransport, control.TransportGRPC, "lab settings"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
		t.Fatal(err)
	}
	b.WaitJS("gRPC in the strip and on the line", fmt.Sprintf(`(() => {
		const li = document.querySelector('[data-testid="pattern-%s"]');
		const l = document.querySelector('[data-testid="edge-label-orders>catalog"]');
		return li && li.querySelector('a').getAttribute('href') === '/docs/patterns/grpc.md' && l.textContent === 'gRPC' &&
			document.querySelector('[data-testid="edge-orders>catalog"]').classList.contains('grpc') })()`, control.CatalogTransport))
	b.Screenshot("overview-pattern-grpc")
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}

// The strip's numbers, measured: a real Prometheus scrapes "gateway" (a process serving
// the gateway's metric names, as the gateway does) and the map words them — the cache's
// hit ratio over the last minute, the healthy instances behind the registry — and keeps
// them current from the health poll without redrawing the map.
func TestPatternNumbersFromPrometheusInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	reg := prometheus.NewRegistry()
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_cache_requests_total"}, []string{"result"})
	instances := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gateway_upstream_instances"}, []string{"upstream", "state"})
	reg.MustRegister(cache, instances)
	instances.WithLabelValues("catalog", "healthy").Set(2)
	instances.WithLabelValues("catalog", "unhealthy").Set(1)
	gw := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer gw.Close()
	stopReads := make(chan struct{})
	readsDone := make(chan struct{})
	go func() { // product reads: three hits to one miss
		defer close(readsDone)
		for {
			select {
			case <-stopReads:
				return
			case <-time.After(50 * time.Millisecond):
			}
			cache.WithLabelValues("hit").Add(3)
			cache.WithLabelValues("miss").Add(1)
		}
	}()
	defer func() { close(stopReads); <-readsDone }()
	prom := startPrometheus(t, map[string]string{"gateway": strings.TrimPrefix(gw.URL, "http://")})
	labURL, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	base, stop := testenv.Start(t, run, testenv.Env{
		"HTTP_ADDR": testenv.AnyAddr, "LAB_DATABASE_URL": labURL, "AMQP_URL": vhost,
		"PROMETHEUS_URL": prom, "HEALTH_INTERVAL": "500ms", "RABBITMQ_MANAGEMENT_URL": closedURL(t),
		"GATEWAY_URL": closedURL(t),
	}, nil)
	defer stop()
	plane := &control.Plane{Store: store, Pub: testenv.Dial(t, vhost).Pub}
	for k, v := range map[string]string{control.GatewayCacheTTL: "30s", control.GatewayDiscovery: control.DiscoveryRegistry} {
		if _, err := plane.Set(context.Background(), k, v, "lab settings"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
			t.Fatal(err)
		}
	}
	b.Do("open the map", chromedp.Navigate(base+"/"), chromedp.WaitVisible(`[data-testid=pattern-strip]`))
	b.WaitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	b.Do("mark the window", chromedp.Evaluate[chromedp.Void](`window.beforeTheNumbers = 'still here'`))
	b.WaitJS("2 healthy behind the registry", `document.querySelector('[data-testid="edge-label-gateway>catalog"]').textContent === 'registry, 2 healthy'`)
	b.WaitJS("the cache's hit ratio, about 75%", `(() => {
		const m = /^cache 30s · hit (\d+)%$/.exec(document.querySelector('[data-testid="badge-gateway.cache.ttl"]').textContent);
		const li = document.querySelector('[data-testid="pattern-gateway.cache.ttl"] .pattern-label');
		return m && Number(m[1]) >= 70 && Number(m[1]) <= 80 && li.textContent === m[0] })()`)
	instances.WithLabelValues("catalog", "healthy").Set(1)
	b.WaitJS("1 healthy, live", `document.querySelector('[data-testid="edge-label-gateway>catalog"]').textContent === 'registry, 1 healthy' &&
		document.querySelector('[data-testid="pattern-gateway.discovery"] .pattern-label').textContent === 'registry, 1 healthy'`)
	if !testbrowser.Get(b.Browser, "the window", chromedp.Evaluate[bool](`window.beforeTheNumbers === 'still here'`)) {
		t.Error("the page was reloaded for the numbers")
	}
	b.Screenshot("overview-pattern-numbers")
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}
