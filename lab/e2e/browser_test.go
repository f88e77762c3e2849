package e2e

import (
	"context"
	"fmt"
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

	"microlab/lab/stack"
	"microlab/services/platform/testenv"
)

// browser is a headless Chromium (Debian's package, never a downloaded one) driven by
// chromedp, collecting every console error and uncaught exception of the pages.
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
			if e.Entry.Level == cdplog.EntryLevelError {
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

// consoleErrors returns and forgets the errors collected so far.
func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.errors
	b.errors = nil
	return out
}

// screenshot saves the page as a PNG test artifact (ARTIFACTS_DIR, default
// artifacts/screenshots at the repository root).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := bget(b, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(), "artifacts", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// waitJS polls a JavaScript condition until it is true (the deadline is generous: a
// loaded machine runs a -race lab slowly, and only a condition that never holds fails).
func (b *browser) waitJS(what, cond string) {
	b.t.Helper()
	bget(b, what, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute)))
}

// shopOrder logs in (once per page load) and places an order through the shop view,
// then waits until the page shows it final. It returns the order id and the trace link.
func (b *browser) shopOrder(dash, sku, card, country, want string) (id, traceHref string) {
	b.t.Helper()
	b.do("open the shop", chromedp.Navigate(dash+"/shop"), chromedp.WaitVisible(`[data-testid=login-form]`))
	b.do("log in", chromedp.Click(`[data-testid=login-submit]`))
	b.waitJS("logged in", `!document.querySelector('[data-testid=login-state]').textContent.includes('not logged in')`)
	b.do("fill the order",
		chromedp.SetValue(`[data-testid=order-sku]`, sku),
		chromedp.SetValue(`[data-testid=order-card]`, card),
		chromedp.SetValue(`[data-testid=order-country]`, country),
		chromedp.Click(`[data-testid=order-submit]`))
	b.waitJS("order "+want, fmt.Sprintf(`document.querySelector('[data-testid=order-status]').textContent.trim() === %q`, want))
	id = bget(b, "read the order id", chromedp.Text(`[data-testid=order-id]`))
	href := bget(b, "read the trace link", chromedp.AttributeValue(`[data-testid=order-trace-link]`, "href"))
	return strings.TrimSpace(id), href.Value
}

// TestDashboardInBrowser drives the dashboard in headless Chromium as a learner would:
// every view loads without console errors; an order placed in the shop view shows up
// as a trace whose waterfall has spans from six services and as a saga timeline; the
// map animates while orders flow; an out-of-stock order's timeline shows the
// compensation; switching the saga mode in the switchboard changes the next order's
// flow. Screenshots of every view are saved as artifacts.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	l := startLab(t, labOptions{tracing: true})
	startPrometheus(t, l) // on the port the dashboard's PROMETHEUS_URL names
	d, _ := stack.Find(stack.Dashboard)
	dash := l.cfg.URL(d)

	for _, v := range []struct{ path, name string }{
		{"/", "overview"}, {"/traces", "traces"}, {"/events", "events"}, {"/sagas", "sagas"},
		{"/charts", "metrics"}, {"/switchboard", "switchboard"}, {"/shop", "shop"},
	} {
		b.do("open "+v.path, chromedp.Navigate(dash+v.path), chromedp.WaitVisible(`[data-testid=nav]`))
		b.waitJS("the live connection of "+v.path, `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
		b.screenshot("view-" + v.name)
		if errs := b.consoleErrors(); len(errs) > 0 {
			t.Errorf("%s: console errors:\n  %s", v.path, strings.Join(errs, "\n  "))
		}
	}

	// An order through the shop view: its trace and its saga.
	id, traceHref := b.shopOrder(dash, skuOK, "ok", "DE", "confirmed")
	b.screenshot("shop")
	if !strings.Contains(traceHref, "/traces/") {
		t.Fatalf("the order's trace link is %q", traceHref)
	}
	traceURL := traceHref
	if strings.HasPrefix(traceURL, "/") {
		traceURL = dash + traceURL
	}
	// Spans arrive in batches from eight processes: reload the waterfall until all are in.
	var services int
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		b.do("open the trace", chromedp.Navigate(traceURL), chromedp.WaitVisible(`[data-testid=nav]`))
		services = bget(b, "count the services", chromedp.Evaluate[int](`new Set([...document.querySelectorAll('[data-testid=span-row]')].map(r => r.dataset.service)).size`))
		if services >= 6 {
			break
		}
	}
	if services < 6 {
		t.Fatalf("the waterfall of order %s shows spans from %d services, want ≥ 6", id, services)
	}
	bars := bget(b, "count the bars", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=span-bar]').length`))
	critical := bget(b, "count the critical path", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=span-row].critical').length`))
	if bars == 0 || critical == 0 {
		t.Errorf("waterfall: %d bars, %d on the critical path", bars, critical)
	}
	b.screenshot("trace-waterfall")

	b.do("open the sagas", chromedp.Navigate(dash+"/sagas"), chromedp.WaitVisible(`[data-testid=nav]`))
	b.waitJS("the order's saga timeline", fmt.Sprintf(`document.querySelectorAll('[data-testid=saga][data-order-id=%q] [data-testid=saga-step]').length >= 4`, id))
	b.screenshot("sagas")

	// The map animates while orders flow.
	b.do("open the map", chromedp.Navigate(dash+"/"), chromedp.WaitVisible(`[data-testid=arch-map]`))
	stop := make(chan struct{})
	done := make(chan struct{})
	token := l.api.login(t, "bob@example.com", "bob-secret")
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = placeOne(l, token, newOrder(cardOK, skuOK, "DE"))
			time.Sleep(200 * time.Millisecond)
		}
	}()
	b.waitJS("dots moving on the map", `document.querySelectorAll('[data-testid=flows] circle').length > 0`)
	b.screenshot("overview")
	close(stop)
	<-done

	// The metrics view draws charts from the real Prometheus scraping this lab (two
	// scrapes are needed before a rate has a value).
	var charts, failed int
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		b.do("open the metrics", chromedp.Navigate(dash+"/charts"), chromedp.WaitVisible(`[data-testid=nav]`))
		charts = bget(b, "count the charts", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=chart]').length`))
		failed = bget(b, "count failed panels", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=panel-error], [data-testid=metrics-error]').length`))
		if charts >= 3 && failed == 0 {
			break
		}
	}
	if charts < 3 || failed > 0 {
		t.Errorf("metrics view: %d charts drawn, %d panels in error, with Prometheus scraping the lab", charts, failed)
	}
	b.screenshot("metrics")

	// Out of stock: the timeline shows the compensation, with its reason.
	oos, _ := b.shopOrder(dash, skuOOS, "ok", "DE", "cancelled")
	b.do("open the sagas", chromedp.Navigate(dash+"/sagas"), chromedp.WaitVisible(`[data-testid=nav]`))
	b.waitJS("a compensation on the out-of-stock timeline", fmt.Sprintf(
		`document.querySelectorAll('[data-testid=saga][data-order-id=%q] [data-testid=saga-step][data-class=compensation]').length > 0`, oos))
	b.screenshot("saga-compensation")

	// The switchboard: orchestration for the next order.
	b.do("open the switchboard", chromedp.Navigate(dash+"/switchboard"), chromedp.WaitVisible(`[data-testid=settings]`),
		chromedp.SetValue(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-input]`, "orchestration"),
		chromedp.Click(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-apply]`))
	b.waitJS("saga.mode shown as orchestration",
		`document.querySelector('tr:has([data-key="saga.mode"]) [data-testid=setting-value]').textContent.trim() === 'orchestration'`)
	b.screenshot("switchboard")
	l.awaitSetting("saga.mode", "orchestration") // every instance applies it on the announcement
	orch, _ := b.shopOrder(dash, skuOK, "ok", "DE", "confirmed")
	b.do("open the sagas", chromedp.Navigate(dash+"/sagas"), chromedp.WaitVisible(`[data-testid=nav]`))
	b.waitJS("the next order runs orchestrated, driven by commands", fmt.Sprintf(
		`(() => { const s = document.querySelector('[data-testid=saga][data-order-id=%q]');
		  return s && s.dataset.mode === 'orchestration' && !!s.querySelector('[data-testid=saga-step][data-event="payments.authorize"]') })()`, orch))

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors during the scenario:\n  %s", strings.Join(errs, "\n  "))
	}
}
