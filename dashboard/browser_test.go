package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microlab/dashboard/views"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// browser is a headless Chromium (Debian's package) driven by chromedp, collecting the
// pages' console errors and uncaught exceptions (as lab/e2e's browser tests do).
type browser struct {
	t   *testing.T
	ctx context.Context

	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, "Chromium", "apt-get install -y chromium", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in a container
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}
	// Listen's callback runs in the tab's read loop: it only records, under a lock.
	err = chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *cdpruntime.EventConsoleAPICalled:
			if e.Type == cdpruntime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				msg = "console.error: " + strings.Join(parts, " ")
			}
		case *cdplog.EventEntryAdded:
			// The refusals this test provokes on purpose are logged as failed loads.
			if e.Entry.Level == cdplog.EntryLevelError && !strings.Contains(e.Entry.Text, "status of 400") {
				msg = "log: " + e.Entry.Text + " " + e.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enable the log domain: %v", err)
	}
	return b
}

// do runs actions with a deadline, failing the test with what was being done.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// bget runs one action that returns a value.
func bget[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true (generous: only a condition that
// never holds fails).
func (b *browser) waitJS(what, cond string) {
	b.t.Helper()
	bget(b, what, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute)))
}

// screenshot saves the page as a PNG into ARTIFACTS_DIR, when it is set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		return
	}
	png := bget(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.errors
	b.errors = nil
	return out
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
	labURL := testenv.DB(t, testenv.Name("t_dash_"))
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

	b.do("open the switchboard", chromedp.Navigate(base+"/switchboard"), chromedp.WaitVisible(`[data-testid=settings]`))
	b.waitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	// Grouped by pattern, each setting with what it does.
	groups := bget(b, "the groups", chromedp.Evaluate[[]string](`[...document.querySelectorAll('[data-testid^=group-]')].map(g => g.dataset.group)`))
	if len(groups) < 2 || groups[0] != "saga" || groups[1] != "reliability" {
		t.Errorf("setting groups %v, want saga, reliability, …", groups)
	}
	if n := bget(b, "saga's settings", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=group-saga] tr[data-key^="saga."] td.help').length`)); n != 2 {
		t.Errorf("the saga group shows %d settings with help, want 2", n)
	}

	// A setting: changed, shown, on the timeline as the browser's.
	b.do("set saga.mode",
		chromedp.SetValue(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-input]`, "orchestration"),
		chromedp.Click(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-apply]`))
	b.waitJS("saga.mode shown as orchestration",
		`document.querySelector('tr:has([data-key="saga.mode"]) [data-testid=setting-value]').textContent.trim() === 'orchestration'`)
	b.waitJS("the setting on the timeline", `[...document.querySelectorAll('[data-testid=change]')].some(li =>
		li.textContent.includes('saga.mode') && li.textContent.includes('choreography → orchestration') &&
		li.querySelector('[data-testid=change-who]').textContent === 'browser')`)

	// A bad value: refused inline, next to its control, with control's message.
	b.do("set saga.step_timeout to 0s",
		chromedp.SetValue(`[data-testid=setting-form][data-key="saga.step_timeout"] [data-testid=setting-input]`, "0s"),
		chromedp.Click(`[data-testid=setting-form][data-key="saga.step_timeout"] [data-testid=setting-apply]`))
	b.waitJS("the inline error", `(() => { const e = document.querySelector('[data-testid=setting-form][data-key="saga.step_timeout"] [data-testid=setting-inline-error]');
		return e && !e.hidden && e.textContent.includes('bad value "0s" for saga.step_timeout') })()`)
	if v := bget(b, "step timeout value", chromedp.Evaluate[string](`document.querySelector('tr:has([data-key="saga.step_timeout"]) [data-testid=setting-value]').textContent.trim()`)); v != "15s" {
		t.Errorf("saga.step_timeout shows %q after a refusal", v)
	}

	// A bad fault: refused inline.
	b.do("inject error_rate=1.5",
		chromedp.SetValue(`[data-testid=fault-service]`, "payments"),
		chromedp.SetValue(`[data-testid=fault-kind]`, "error_rate"),
		chromedp.SetValue(`[data-testid=fault-value]`, "1.5"),
		chromedp.Click(`[data-testid=fault-add]`))
	b.waitJS("the fault form's error", `(() => { const e = document.querySelector('[data-testid=fault-error]');
		return !e.hidden && e.textContent.includes('fraction from 0 to 1') })()`)

	// A fault: listed with its time left, counting down; on the timeline.
	b.do("inject latency into payments",
		chromedp.SetValue(`[data-testid=fault-kind]`, "latency"),
		chromedp.SetValue(`[data-testid=fault-value]`, "300ms"),
		chromedp.SetValue(`[data-testid=fault-on]`, "http"),
		chromedp.SetValue(`[data-testid=fault-for]`, "5m"),
		chromedp.Click(`[data-testid=fault-add]`))
	b.waitJS("the fault listed", `document.querySelector('[data-testid=fault][data-target=payments]')?.textContent.includes('latency=300ms on=http')`)
	b.waitJS("the error cleared", `document.querySelector('[data-testid=fault-error]').hidden`)
	first := bget(b, "time left", chromedp.Evaluate[string](`document.querySelector('[data-testid=fault][data-target=payments] [data-testid=fault-left]').textContent`))
	b.waitJS("the time left counting down", fmt.Sprintf(
		`document.querySelector('[data-testid=fault][data-target=payments] [data-testid=fault-left]').textContent !== %q`, first))
	b.waitJS("the fault on the timeline", `[...document.querySelectorAll('[data-testid=change]')].some(li =>
		li.textContent.includes('fault payments') && li.textContent.includes('latency=300ms on=http for 5m0s') &&
		li.querySelector('[data-testid=change-who]').textContent === 'browser')`)

	// The map marks payments, and only payments.
	b.screenshot("switchboard-fault")
	b.do("open the map", chromedp.Navigate(base+"/"), chromedp.WaitVisible(`[data-testid=arch-map]`))
	b.waitJS("payments marked faulty", `(() => { const n = document.querySelector('[data-testid=node-payments]');
		return n.dataset.fault === 'true' && n.classList.contains('faulty') &&
		document.querySelector('[data-testid=fault-payments]').textContent.includes('latency=300ms') })()`)
	b.screenshot("overview-fault")
	if f := bget(b, "orders' mark", chromedp.Evaluate[string](`document.querySelector('[data-testid=node-orders]').dataset.fault`)); f != "false" {
		t.Errorf("orders marked faulty: %q", f)
	}

	// Cleared from the switchboard: gone from the list, on the timeline.
	b.do("back to the switchboard", chromedp.Navigate(base+"/switchboard"), chromedp.WaitVisible(`[data-testid=faults]`))
	b.waitJS("the live connection", `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
	b.do("clear payments' fault", chromedp.Click(`[data-testid=fault-clear][data-target=payments]`))
	b.waitJS("the fault gone", `document.querySelectorAll('[data-testid=fault]').length === 0 && !document.querySelector('[data-testid=fault-empty]').hidden`)
	b.waitJS("the clearing on the timeline", `[...document.querySelectorAll('[data-testid=change]')].some(li =>
		li.textContent.includes('fault payments') && li.textContent.includes('→ cleared'))`)

	// Another face (the CLI's source) changes a setting: it arrives by itself.
	ctx := context.Background()
	store, err := control.OpenStore(ctx, labURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cli := &control.Plane{Store: store, Pub: testenv.Dial(t, vhost).Pub}
	ch, err := cli.Set(ctx, control.SagaStepTimeout, "30s", "lab settings")
	if err != nil {
		t.Fatal(err)
	}
	b.waitJS("the CLI's change live", fmt.Sprintf(`(() => { const li = document.querySelector('[data-testid=change][data-revision="%d"]');
		return li && li.querySelector('[data-testid=change-who]').textContent === 'CLI' &&
		document.querySelector('tr:has([data-key="saga.step_timeout"]) [data-testid=setting-value]').textContent.trim() === '30s' })()`, ch.Revision))

	// Reset from the page.
	b.do("reset the lab", chromedp.Click(`[data-testid=lab-reset]`))
	b.waitJS("saga.mode back to choreography",
		`document.querySelector('tr:has([data-key="saga.mode"]) [data-testid=setting-value]').textContent.trim() === 'choreography'`)

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors:\n  %s", strings.Join(errs, "\n  "))
	}
}
