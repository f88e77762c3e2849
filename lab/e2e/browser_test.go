package e2e

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"microlab/internal/testbrowser"
	"microlab/lab/stack"
)

// browser is the tests' Chromium (internal/testbrowser), keeping screenshots under
// artifacts/screenshots unless ARTIFACTS_DIR says otherwise.
type browser struct{ *testbrowser.Browser }

func newBrowser(t *testing.T) *browser {
	b := &browser{testbrowser.New(t, nil)}
	b.ScreenshotDir = filepath.Join(repoRoot(), "artifacts", "screenshots")
	return b
}

// readmeScreenshot is the README's picture of the dashboard, rewritten by
// TestDashboardInBrowser when UPDATE_SCREENSHOTS=1 (TestReadmeScreenshot checks it).
const readmeScreenshot = "docs/images/dashboard.png"

// readmeShot captures the viewport at a README's size, 1280x1000 (the nav and the whole
// map; the full page would add what a README does not need), as the
// artifact readme-dashboard.png and, with UPDATE_SCREENSHOTS=1, as readmeScreenshot.
func (b *browser) readmeShot() {
	b.T.Helper()
	b.Do("a README-sized window", chromedp.EmulateViewport(1280, 1000))
	defer b.Do("the window as it was", chromedp.EmulateReset())
	png := testbrowser.Get(b.Browser, "the README's screenshot", chromedp.CaptureScreenshot())
	dirs := []string{cmp.Or(os.Getenv("ARTIFACTS_DIR"), b.ScreenshotDir)}
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		dirs = append(dirs, filepath.Join(repoRoot(), filepath.Dir(readmeScreenshot)))
	}
	for i, dir := range dirs {
		name := "readme-dashboard.png"
		if i > 0 {
			name = filepath.Base(readmeScreenshot)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.T.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			b.T.Fatal(err)
		}
	}
}

// noUILinks checks what the native lab must not do: link to Jaeger's UI or Grafana,
// neither of which it has (the dashboard is given no link base for either).
func (b *browser) noUILinks(where string) {
	b.T.Helper()
	links := testbrowser.Get(b.Browser, "links to Jaeger's UI or Grafana on "+where, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('a[href*=":16686"], a[href*=":3000"], [data-testid=jaeger-link], [data-testid=grafana-link]')].map(a => a.outerHTML)`))
	if len(links) > 0 {
		b.T.Errorf("%s links to a UI the native lab does not have:\n  %s", where, strings.Join(links, "\n  "))
	}
}

// shopOrder logs in (once per page load) and places an order through the shop view,
// then waits until the page shows it final. It returns the order id and the trace link.
func (b *browser) shopOrder(dash, sku, card, country, want string) (id, traceHref string) {
	b.T.Helper()
	b.Do("open the shop", chromedp.Navigate(dash+"/shop"), chromedp.WaitVisible(`[data-testid=login-form]`))
	b.Do("log in", chromedp.Click(`[data-testid=login-submit]`))
	b.WaitJS("logged in", `!document.querySelector('[data-testid=login-state]').textContent.includes('not logged in')`)
	b.Do("fill the order",
		chromedp.SetValue(`[data-testid=order-sku]`, sku),
		chromedp.SetValue(`[data-testid=order-card]`, card),
		chromedp.SetValue(`[data-testid=order-country]`, country),
		chromedp.Click(`[data-testid=order-submit]`))
	b.WaitJS("order "+want, fmt.Sprintf(`document.querySelector('[data-testid=order-status]').textContent.trim() === %q`, want))
	id = testbrowser.Get(b.Browser, "read the order id", chromedp.Text(`[data-testid=order-id]`))
	href := testbrowser.Get(b.Browser, "read the trace link", chromedp.AttributeValue(`[data-testid=order-trace-link]`, "href"))
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
		b.Do("open "+v.path, chromedp.Navigate(dash+v.path), chromedp.WaitVisible(`[data-testid=nav]`))
		b.WaitJS("the live connection of "+v.path, `document.querySelector('[data-testid=ws-state]').dataset.state === 'open'`)
		b.Screenshot("view-" + v.name)
		b.noUILinks(v.path)
		if errs := b.ConsoleErrors(); len(errs) > 0 {
			t.Errorf("%s: console errors:\n  %s", v.path, strings.Join(errs, "\n  "))
		}
	}

	// An order through the shop view: its trace and its saga.
	id, traceHref := b.shopOrder(dash, skuOK, "ok", "DE", "confirmed")
	b.Screenshot("shop")
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
		b.Do("open the trace", chromedp.Navigate(traceURL), chromedp.WaitVisible(`[data-testid=nav]`))
		services = testbrowser.Get(b.Browser, "count the services", chromedp.Evaluate[int](`new Set([...document.querySelectorAll('[data-testid=span-row]')].map(r => r.dataset.service)).size`))
		if services >= 6 {
			break
		}
	}
	if services < 6 {
		t.Fatalf("the waterfall of order %s shows spans from %d services, want ≥ 6", id, services)
	}
	bars := testbrowser.Get(b.Browser, "count the bars", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=span-bar]').length`))
	critical := testbrowser.Get(b.Browser, "count the critical path", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=span-row].critical').length`))
	if bars == 0 || critical == 0 {
		t.Errorf("waterfall: %d bars, %d on the critical path", bars, critical)
	}
	b.Screenshot("trace-waterfall")
	// No "open in Jaeger": this Jaeger has no UI, and the page says so where the link was.
	b.noUILinks("the trace page")
	if note := testbrowser.Get(b.Browser, "read the Jaeger note", chromedp.Text(`[data-testid=jaeger-note]`)); !strings.Contains(note, "Jaeger's UI is not part of this lab") ||
		!strings.Contains(note, "docker compose -f compose/docker-compose.yml up") {
		t.Errorf("the trace page says %q instead of the link to Jaeger", note)
	}

	b.Do("open the sagas", chromedp.Navigate(dash+"/sagas"), chromedp.WaitVisible(`[data-testid=nav]`))
	b.WaitJS("the order's saga timeline", fmt.Sprintf(`document.querySelectorAll('[data-testid=saga][data-order-id=%q] [data-testid=saga-step]').length >= 4`, id))
	b.Screenshot("sagas")
	// Its event stream, from the real orders' event store: placed first, confirmed last;
	// version 1 is the order as placed. Then the order history rebuilt from the streams.
	b.Do("open the order's event stream", chromedp.Click(fmt.Sprintf(`[data-testid=saga][data-order-id=%q] [data-testid=saga-stream]`, id)),
		chromedp.WaitVisible(`[data-testid=event-stream]`))
	b.WaitJS("the order's stream", `(() => { const rows = [...document.querySelectorAll('[data-testid=stream-event]')].map(r => r.dataset.type);
		return rows[0] === 'order.placed' && rows[rows.length - 1] === 'order.confirmed' &&
			document.querySelector('[data-testid=stream-state]').dataset.status === 'confirmed' })()`)
	b.Do("pick version 1", chromedp.Click(`[data-testid=stream-version][data-version="1"]`))
	b.WaitJS("the order as placed", `(() => { const s = document.querySelector('[data-testid=stream-state]');
		return s.dataset.version === '1' && s.dataset.status === 'pending' && document.querySelectorAll('[data-testid=state-step]').length === 1 })()`)
	b.Screenshot("saga-event-stream")
	b.Do("rebuild the order history", chromedp.Click(`[data-testid=rebuild-button]`))
	b.WaitJS("the rebuild completed", `(() => { const s = document.querySelector('[data-testid=rebuild-status]');
		return s.dataset.state === 'completed' && /(\d+) of \1 orders replayed/.test(s.textContent) })()`)

	// The map animates while orders flow.
	b.Do("open the map", chromedp.Navigate(dash+"/"), chromedp.WaitVisible(`[data-testid=arch-map]`))
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
	b.WaitJS("dots moving on the map", `document.querySelectorAll('[data-testid=flows] circle').length > 0`)
	b.Screenshot("overview")
	close(stop)
	<-done

	// The metrics view draws charts from the real Prometheus scraping this lab (two
	// scrapes are needed before a rate has a value).
	var charts, failed int
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		b.Do("open the metrics", chromedp.Navigate(dash+"/charts"), chromedp.WaitVisible(`[data-testid=nav]`))
		charts = testbrowser.Get(b.Browser, "count the charts", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=chart]').length`))
		failed = testbrowser.Get(b.Browser, "count failed panels", chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=panel-error], [data-testid=metrics-error]').length`))
		if charts >= 3 && failed == 0 {
			break
		}
	}
	if charts < 3 || failed > 0 {
		t.Errorf("metrics view: %d charts drawn, %d panels in error, with Prometheus scraping the lab", charts, failed)
	}
	b.Screenshot("metrics")
	b.noUILinks("the metrics page")
	if note := testbrowser.Get(b.Browser, "read the Grafana note", chromedp.Text(`[data-testid=grafana-note]`)); !strings.Contains(note, "Grafana is not part of this lab") {
		t.Errorf("the metrics page says %q instead of the links to Grafana", note)
	}

	// The README's picture: the map with orders flowing and every service's rates
	// from Prometheus (scraping for a while by now), not a blank map.
	b.Do("open the map", chromedp.Navigate(dash+"/"), chromedp.WaitVisible(`[data-testid=arch-map]`))
	stop, done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = placeOne(l, token, newOrder(cardOK, skuOK, "DE"))
			time.Sleep(150 * time.Millisecond)
		}
	}()
	b.WaitJS("every service's health from Prometheus", `[...document.querySelectorAll('g.node.service')].every(n => ['ok', 'warn'].includes(n.dataset.state))`)
	// Rates over the last minute catch up with the orders: the gateway's requests, and
	// payments handling the checkouts' messages.
	b.WaitJS("the orders' rates on the map", `(() => {
		const label = id => (document.querySelector('[data-testid=health-' + id + ']') || {}).textContent || '';
		const msgs = label('payments').match(/([\d.]+) msg\/s/);
		return parseFloat(label('gateway')) >= 1 && !!msgs && parseFloat(msgs[1]) > 0; })()`)
	b.WaitJS("dots moving on the map", `document.querySelectorAll('[data-testid=flows] circle').length > 2`)
	b.readmeShot()
	close(stop)
	<-done

	// Out of stock: the timeline shows the compensation, with its reason.
	oos, _ := b.shopOrder(dash, skuOOS, "ok", "DE", "cancelled")
	b.Do("open the sagas", chromedp.Navigate(dash+"/sagas"), chromedp.WaitVisible(`[data-testid=nav]`))
	b.WaitJS("a compensation on the out-of-stock timeline", fmt.Sprintf(
		`document.querySelectorAll('[data-testid=saga][data-order-id=%q] [data-testid=saga-step][data-class=compensation]').length > 0`, oos))
	b.Screenshot("saga-compensation")

	// The switchboard: orchestration for the next order.
	b.Do("open the switchboard", chromedp.Navigate(dash+"/switchboard"), chromedp.WaitVisible(`[data-testid=settings]`),
		chromedp.SetValue(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-input]`, "orchestration"),
		chromedp.Click(`[data-testid=setting-form][data-key="saga.mode"] [data-testid=setting-apply]`))
	b.WaitJS("saga.mode shown as orchestration",
		`document.querySelector('tr:has([data-key="saga.mode"]) [data-testid=setting-value]').textContent.trim() === 'orchestration'`)
	b.Screenshot("switchboard")
	l.awaitSetting("saga.mode", "orchestration") // every instance applies it on the announcement
	orch, _ := b.shopOrder(dash, skuOK, "ok", "DE", "confirmed")
	b.Do("open the sagas", chromedp.Navigate(dash+"/sagas"), chromedp.WaitVisible(`[data-testid=nav]`))
	b.WaitJS("the next order runs orchestrated, driven by commands", fmt.Sprintf(
		`(() => { const s = document.querySelector('[data-testid=saga][data-order-id=%q]');
		  return s && s.dataset.mode === 'orchestration' && !!s.querySelector('[data-testid=saga-step][data-event="payments.authorize"]') })()`, orch))

	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors during the scenario:\n  %s", strings.Join(errs, "\n  "))
	}
}
