package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microlab/dashboard/views"
	"microlab/internal/testbrowser"
	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// browser is the tests' Chromium (internal/testbrowser); the refusals this test provokes
// on purpose are logged as failed loads, and are not errors.
type browser struct{ *testbrowser.Browser }

func newBrowser(t *testing.T) *browser {
	return &browser{testbrowser.New(t, func(msg string) bool { return strings.Contains(msg, "status of 400") })}
}

// The switchboard in the real headless Chromium, against the real dashboard (run) with
// a real lab database, broker and Prometheus: a setting changed, a bad value refused
// inline next to its control, a fault injected (its time left counting down in the
// page) and cleared, both on the timeline with who made them, a change made by the CLI's
// face arriving by itself, and the map marking the faulty service.
func TestSwitchboardInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	payments := httptest.NewServer(promhttp.Handler()) // a "payments" Prometheus scrapes: running
	defer payments.Close()
	prom := startPrometheus(t, map[string]string{"payments": strings.TrimPrefix(payments.URL, "http://")})
	labURL, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	base, stop := testenv.Start(t, run, testenv.Env{
		"HTTP_ADDR": testenv.AnyAddr, "LAB_DATABASE_URL": labURL, "AMQP_URL": vhost,
		"PROMETHEUS_URL": prom, "HEALTH_INTERVAL": "500ms", "RABBITMQ_MANAGEMENT_URL": closedURL(t),
		"GATEWAY_URL": closedURL(t),
	}, nil)
	defer stop()
	// Evidence that the dashboard's health shows payments running.
	for end := time.Now().Add(patience); ; time.Sleep(100 * time.Millisecond) {
		var h views.Health
		if resp, err := http.Get(base + "/api/health"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&h)
			_ = resp.Body.Close()
		}
		if h.Services["payments"].Answering == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the dashboard never saw payments answer: %+v", h)
		}
	}

	b.Do("open the switchboard", chromedp.Navigate(base+"/switchboard"), chromedp.WaitVisible(`[data-testid=settings]`))
	b.WaitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	// Grouped by pattern, each setting with what it does.
	groups := testbrowser.Get(b.Browser, "the groups", chromedp.Evaluate[[]string](`[...document.querySelectorAll('[data-testid^=group-]')].map(g => g.dataset.group)`))
	if len(groups) < 2 || groups[0] != "saga" || groups[1] != "reliability" {
		t.Errorf("setting groups %v, want saga, reliability, …", groups)
	}
	if n := testbrowser.Get(b.Browser, "saga's settings", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=group-saga] tr[data-key^="saga."] td.help').length`)); n != 2 {
		t.Errorf("the saga group shows %d settings with help, want 2", n)
	}

	// A setting: changed, shown, on the timeline as the browser's.
	b.Do("set saga.mode",
		chromedp.SetValue(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-input]`, "orchestration"),
		chromedp.Click(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-apply]`))
	b.WaitJS("saga.mode shown as orchestration",
		`document.querySelector('tr:has([data-key="saga.mode"]) [data-testid=setting-value]').textContent.trim() === 'orchestration'`)
	b.WaitJS("the setting on the timeline", `[...document.querySelectorAll('[data-testid=change]')].some(li =>
		li.textContent.includes('saga.mode') && li.textContent.includes('choreography → orchestration') &&
		li.querySelector('[data-testid=change-who]').textContent === 'browser')`)

	// A bad value: refused inline, next to its control, with control's message.
	b.Do("set saga.step_timeout to 0s",
		chromedp.SetValue(`[data-testid=setting-form][data-key="saga.step_timeout"] [data-testid=setting-input]`, "0s"),
		chromedp.Click(`[data-testid=setting-form][data-key="saga.step_timeout"] [data-testid=setting-apply]`))
	b.WaitJS("the inline error", `(() => { const e = document.querySelector('[data-testid=setting-form][data-key="saga.step_timeout"] [data-testid=setting-inline-error]');
		return e && !e.hidden && e.textContent.includes('bad value "0s" for saga.step_timeout') })()`)
	if v := testbrowser.Get(b.Browser, "step timeout value", chromedp.Evaluate[string](`document.querySelector('tr:has([data-key="saga.step_timeout"]) [data-testid=setting-value]').textContent.trim()`)); v != "15s" {
		t.Errorf("saga.step_timeout shows %q after a refusal", v)
	}

	// A bad fault: refused inline.
	b.Do("inject error_rate=1.5",
		chromedp.SetValue(`[data-testid=fault-service]`, "payments"),
		chromedp.SetValue(`[data-testid=fault-kind]`, "error_rate"),
		chromedp.SetValue(`[data-testid=fault-value]`, "1.5"),
		chromedp.Click(`[data-testid=fault-add]`))
	b.WaitJS("the fault form's error", `(() => { const e = document.querySelector('[data-testid=fault-error]');
		return !e.hidden && e.textContent.includes('fraction from 0 to 1') })()`)

	// A fault: listed with its time left, counting down; on the timeline.
	b.Do("inject latency into payments",
		chromedp.SetValue(`[data-testid=fault-kind]`, "latency"),
		chromedp.SetValue(`[data-testid=fault-value]`, "300ms"),
		chromedp.SetValue(`[data-testid=fault-on]`, "http"),
		chromedp.SetValue(`[data-testid=fault-for]`, "5m"),
		chromedp.Click(`[data-testid=fault-add]`))
	b.WaitJS("the fault listed", `document.querySelector('[data-testid=fault][data-target=payments]')?.textContent.includes('latency=300ms on=http')`)
	b.WaitJS("the error cleared", `document.querySelector('[data-testid=fault-error]').hidden`)
	first := testbrowser.Get(b.Browser, "time left", chromedp.Evaluate[string](`document.querySelector('[data-testid=fault][data-target=payments] [data-testid=fault-left]').textContent`))
	b.WaitJS("the time left counting down", fmt.Sprintf(
		`document.querySelector('[data-testid=fault][data-target=payments] [data-testid=fault-left]').textContent !== %q`, first))
	b.WaitJS("the fault on the timeline", `[...document.querySelectorAll('[data-testid=change]')].some(li =>
		li.textContent.includes('fault payments') && li.textContent.includes('latency=300ms on=http for 5m0s') &&
		li.querySelector('[data-testid=change-who]').textContent === 'browser')`)

	// The map marks payments, and only payments.
	b.Screenshot("switchboard-fault")
	b.Do("open the map", chromedp.Navigate(base+"/"), chromedp.WaitVisible(`[data-testid=arch-map]`))
	b.WaitJS("payments marked faulty", `(() => { const n = document.querySelector('[data-testid=node-payments]');
		return n.dataset.fault === 'true' && n.classList.contains('faulty') &&
		document.querySelector('[data-testid=fault-payments]').textContent.includes('latency=300ms') })()`)
	b.Screenshot("overview-fault")
	if f := testbrowser.Get(b.Browser, "orders' mark", chromedp.Evaluate[string](`document.querySelector('[data-testid=node-orders]').dataset.fault`)); f != "false" {
		t.Errorf("orders marked faulty: %q", f)
	}

	// Cleared from the switchboard: gone from the list, on the timeline.
	b.Do("back to the switchboard", chromedp.Navigate(base+"/switchboard"), chromedp.WaitVisible(`[data-testid=faults]`))
	b.WaitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	b.Do("clear payments' fault", chromedp.Click(`[data-testid=fault-clear][data-target=payments]`))
	b.WaitJS("the fault gone", `document.querySelectorAll('[data-testid=fault]').length === 0 && !document.querySelector('[data-testid=fault-empty]').hidden`)
	b.WaitJS("the clearing on the timeline", `[...document.querySelectorAll('[data-testid=change]')].some(li =>
		li.textContent.includes('fault payments') && li.textContent.includes('→ cleared'))`)

	// Another face (the CLI's source) changes a setting: it arrives by itself.
	ctx := context.Background()
	cli := &control.Plane{Store: store, Pub: testenv.Dial(t, vhost).Pub}
	ch, err := cli.Set(ctx, control.SagaStepTimeout, "30s", "lab settings")
	if err != nil {
		t.Fatal(err)
	}
	b.WaitJS("the CLI's change live", fmt.Sprintf(`(() => { const li = document.querySelector('[data-testid=change][data-revision="%d"]');
		return li && li.querySelector('[data-testid=change-who]').textContent === 'CLI' &&
		document.querySelector('tr:has([data-key="saga.step_timeout"]) [data-testid=setting-value]').textContent.trim() === '30s' })()`, ch.Revision))

	// Reset from the page.
	b.Do("reset the lab", chromedp.Click(`[data-testid=lab-reset]`))
	b.WaitJS("saga.mode back to choreography",
		`document.querySelector('tr:has([data-key="saga.mode"]) [data-testid=setting-value]').textContent.trim() === 'choreography'`)

	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}

// The map in the real headless Chromium, against the real dashboard (run): when
// db.topology changes (through the control plane, as the CLI or an exercise changes it),
// the map redraws itself from the live stream, in place: one shared database, shop,
// with a line from every service that has tables; then one database per service again.
// The page is never reloaded (a marker set on the window before the first switch is
// still there after the last), and the redrawn map stays live.
func TestMapRedrawsOnATopologySwitchInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	labURL, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	base, stop := testenv.Start(t, run, testenv.Env{
		"HTTP_ADDR": testenv.AnyAddr, "LAB_DATABASE_URL": labURL, "AMQP_URL": vhost,
		"PROMETHEUS_URL": closedURL(t), "HEALTH_INTERVAL": "500ms", "RABBITMQ_MANAGEMENT_URL": closedURL(t),
		"GATEWAY_URL": closedURL(t),
	}, nil)
	defer stop()
	plane := &control.Plane{Store: store, Pub: testenv.Dial(t, vhost).Pub}
	services := []string{"users", "catalog", "orders", "payments", "inventory", "shipping", "notifications"}
	// perService and shared are what the map's DOM shows in each topology.
	perService := fmt.Sprintf(`(() => { const m = document.querySelector('[data-testid=arch-map]');
		return m.dataset.topology === 'per-service' && !document.querySelector('[data-testid="node-%[1]s"]') &&
		document.querySelectorAll('[data-testid^="node-db-"]').length === 7 &&
		%[2]s.every(s => document.querySelector('[data-testid="edge-' + s + '>db-' + s + '"]')) })()`,
		views.SharedDBNode, jsArray(services))
	shared := fmt.Sprintf(`(() => { const m = document.querySelector('[data-testid=arch-map]');
		return m.dataset.topology === 'shared' && document.querySelectorAll('[data-testid^="node-db-"]').length === 1 &&
		!!document.querySelector('[data-testid="node-%[1]s"]') &&
		%[2]s.every(s => document.querySelector('[data-testid="edge-' + s + '>%[1]s"]')) })()`,
		views.SharedDBNode, jsArray(services))
	sameWindow := `window.beforeTheSwitch === 'still here'`

	b.Do("open the map", chromedp.Navigate(base+"/"), chromedp.WaitVisible(`[data-testid=arch-map]`))
	b.WaitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	b.WaitJS("one database per service", perService)
	b.Do("mark the window", chromedp.Evaluate[chromedp.Void](`window.beforeTheSwitch = 'still here'`))

	ctx := context.Background()
	if _, err := plane.Set(ctx, control.DBTopology, control.TopologyShared, "lab settings"); err != nil {
		t.Fatal(err)
	}
	b.WaitJS("one shared database", shared)
	b.Screenshot("overview-shared-db")
	if !testbrowser.Get(b.Browser, "the window", chromedp.Evaluate[bool](sameWindow)) {
		t.Fatal("the page was reloaded to redraw the map")
	}
	// The redrawn map is live: messages the wiretap sees run along its edges.
	broker := testenv.Dial(t, vhost)
	placed, err := contracts.NewEnvelope(contracts.OrderPlaced, "orders", "order-1", "", map[string]string{"orderId": "order-1"})
	if err != nil {
		t.Fatal(err)
	}
	flowing, done := make(chan struct{}), make(chan struct{})
	stopFlowing := sync.OnceFunc(func() { close(flowing); <-done })
	defer stopFlowing() // also when the wait below fails the test
	go func() {
		defer close(done)
		for {
			select {
			case <-flowing:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err := broker.Pub.PublishEnvelope(ctx, placed, nil); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	b.WaitJS("dots on the redrawn map", `document.querySelectorAll('[data-testid=arch-map] [data-testid=flows] circle').length > 0`)
	stopFlowing()

	if _, err := plane.Set(ctx, control.DBTopology, control.TopologyPerService, "lab settings"); err != nil {
		t.Fatal(err)
	}
	b.WaitJS("one database per service again", perService)
	b.Screenshot("overview-per-service-db")
	if !testbrowser.Get(b.Browser, "the window", chromedp.Evaluate[bool](sameWindow)) {
		t.Fatal("the page was reloaded to redraw the map")
	}
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}

// jsArray is a JavaScript array literal of strings.
func jsArray(ss []string) string {
	b, _ := json.Marshal(ss)
	return string(b)
}

// The switchboard refuses a fault on an instance that does not run, inline, with
// control's message, and takes one on an instance that does: the instances are the ones
// connected to the broker (here payments-1, connected as a running instance does).
func TestSwitchboardRefusesAFaultOnAnInstanceNotRunningInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	labURL, _ := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	instanceOf(t, vhost, "payments-1")
	env := testenv.Env{
		"HTTP_ADDR": testenv.AnyAddr, "LAB_DATABASE_URL": labURL, "AMQP_URL": vhost,
		"PROMETHEUS_URL": closedURL(t), "HEALTH_INTERVAL": "500ms", "GATEWAY_URL": closedURL(t),
	}
	if u := os.Getenv("RABBITMQ_MANAGEMENT_URL"); u != "" {
		env["RABBITMQ_MANAGEMENT_URL"] = u
	}
	base, stop := testenv.Start(t, run, env, nil)
	defer stop()
	// Evidence that the dashboard's health names payments-1.
	for end := time.Now().Add(patience); ; time.Sleep(100 * time.Millisecond) {
		var h views.Health
		if resp, err := http.Get(base + "/api/health"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&h)
			_ = resp.Body.Close()
		}
		if slices.Equal(h.Instances["payments"], []string{"payments-1"}) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the dashboard never saw payments-1 connected: %+v", h)
		}
	}

	b.Do("open the switchboard", chromedp.Navigate(base+"/switchboard"), chromedp.WaitVisible(`[data-testid=faults]`))
	b.Do("inject down into payments-9",
		chromedp.SetValue(`[data-testid=fault-service]`, "payments"),
		chromedp.SetValue(`[data-testid=fault-instance]`, "payments-9"),
		chromedp.SetValue(`[data-testid=fault-kind]`, "down"),
		chromedp.Click(`[data-testid=fault-add]`))
	b.WaitJS("the fault form's error", `(() => { const e = document.querySelector('[data-testid=fault-error]');
		return !e.hidden && e.textContent.includes('payments-9 is not running') })()`)
	if n := testbrowser.Get(b.Browser, "the faults listed", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=fault]').length`)); n != 0 {
		t.Errorf("%d faults listed after a refusal", n)
	}
	b.Do("inject down into payments-1",
		chromedp.SetValue(`[data-testid=fault-instance]`, "payments-1"),
		chromedp.Click(`[data-testid=fault-add]`))
	b.WaitJS("the fault listed", `!!document.querySelector('[data-testid=fault][data-target=payments-1]')`)
	b.WaitJS("the error cleared", `document.querySelector('[data-testid=fault-error]').hidden`)
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}
