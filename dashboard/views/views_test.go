package views

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/a-h/templ"
	"golang.org/x/net/html"

	"microlab/dashboard/ingest"
)

// render renders c inside the layout (as the server does) and parses the result.
func render(t *testing.T, active string, c templ.Component) *html.Node {
	t.Helper()
	var buf bytes.Buffer
	ctx := templ.WithChildren(context.Background(), c)
	if err := Layout(Page{Title: active, Active: active}).Render(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, class string) bool {
	v, _ := attr(n, "class")
	return slices.Contains(strings.Fields(v), class)
}

// all returns every element under n whose data-testid is id.
func all(n *html.Node, id string) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode {
			if v, ok := attr(d, "data-testid"); ok && v == id {
				out = append(out, d)
			}
		}
	}
	return out
}

func one(t *testing.T, n *html.Node, id string) *html.Node {
	t.Helper()
	got := all(n, id)
	if len(got) != 1 {
		t.Fatalf("want one element data-testid=%q, got %d", id, len(got))
	}
	return got[0]
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

func TestLayoutNavAndConnectionState(t *testing.T) {
	doc := render(t, "overview", Overview(OverviewModel{Arch: ShopArch()}))
	for _, n := range Nav {
		a := one(t, doc, "nav-"+n.ID)
		if href, _ := attr(a, "href"); href != n.Href {
			t.Errorf("nav %s href %q", n.ID, href)
		}
	}
	if !hasClass(one(t, doc, "nav-overview"), "active") || hasClass(one(t, doc, "nav-traces"), "active") {
		t.Error("the active nav entry is not marked")
	}
	one(t, doc, "ws-state")
	one(t, doc, "ws-drops")
	// Nothing from elsewhere: every script and stylesheet is ours.
	for d := range doc.Descendants() {
		for _, k := range []string{"src", "href"} {
			if v, ok := attr(d, k); ok && strings.Contains(v, "//") {
				t.Errorf("external URL in the layout: <%s %s=%q>", d.Data, k, v)
			}
		}
	}
}

func TestOverviewMapHasEveryNodeAndHealth(t *testing.T) {
	a := ShopArch()
	h := Health{Services: map[string]ServiceHealth{
		"payments": {Rate: 3, MsgRate: 4.25, Consumes: true, ErrorPct: 12, P95Ms: 40, Up: true, State: "bad"},
		"orders":   {Rate: 2, P95Ms: 30, Up: true, State: "ok"},
	}, Queues: map[string]int{"shipping.events": 7}}
	doc := render(t, "overview", Overview(OverviewModel{Arch: a, Health: h}))
	for _, name := range []string{"gateway", "users", "catalog", "orders", "payments", "inventory", "shipping",
		"notifications", "shop.events", "shop.commands", "orders.events", "payments.events", "db-orders"} {
		one(t, doc, "node-"+name)
	}
	if st, _ := attr(one(t, doc, "node-payments"), "data-state"); st != "bad" {
		t.Errorf("payments state %q, want bad", st)
	}
	if st, _ := attr(one(t, doc, "node-gateway"), "data-state"); st != "unknown" {
		t.Errorf("gateway (no data) state %q, want unknown", st)
	}
	if got := text(one(t, doc, "health-payments")); got != "3.0 req/s · 4.2 msg/s · 12.0% · p95 40ms" {
		t.Errorf("payments health label %q", got)
	}
	if got := text(one(t, doc, "health-orders")); got != "2.0 req/s · 0.0% · p95 30ms" { // consumes nothing here
		t.Errorf("orders health label %q", got)
	}
	if got := text(one(t, doc, "depth-shipping.events")); got != "7" {
		t.Errorf("shipping.events depth %q", got)
	}
	// Publisher → exchange → queue → consumer, each an edge on the map.
	for _, id := range a.FlowEdges("payments", "shop.events", "payment.authorized") {
		one(t, doc, "edge-"+id)
	}
	if got := a.FlowEdges("payments", "shop.events", "payment.authorized"); !slices.Equal(got, []string{
		"payments>shop.events", "shop.events>inventory.events", "inventory.events>inventory",
		"shop.events>orders.events", "orders.events>orders"}) {
		t.Errorf("FlowEdges = %v", got)
	}
	if got := a.FlowEdges("payments", "", "orders.events"); !slices.Equal(got, []string{"orders.events>orders"}) {
		t.Errorf("FlowEdges of a retry = %v", got)
	}
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func span(id, parent, svc, name, kind string, startMs, durMs int) ingest.Span {
	return ingest.Span{TraceID: "abc", SpanID: id, ParentID: parent, Service: svc, Name: name, Kind: kind,
		Start: t0.Add(time.Duration(startMs) * time.Millisecond), Duration: time.Duration(durMs) * time.Millisecond}
}

func TestWaterfallBarsCriticalPathHopsAndJaegerLink(t *testing.T) {
	failed := span("e", "d", "inventory", "reserve stock", "internal", 60, 10)
	failed.Error, failed.Status = true, "out of stock"
	failed.Attrs = map[string]string{"sku": "LAB-UNICORN"}
	failed.Events = []ingest.SpanEvent{{Name: "exception", At: t0.Add(65 * time.Millisecond), Attrs: map[string]string{"exception.message": "no stock"}}}
	spans := []ingest.Span{
		span("a", "", "gateway", "POST /api/v1/orders", "server", 0, 40),
		span("b", "a", "orders", "POST /orders", "server", 5, 30),
		span("c", "b", "orders", "publish order.placed", "producer", 20, 5), // ends at 25
		span("x", "b", "orders", "INSERT orders", "client", 6, 4),           // ends at 10
		span("d", "c", "payments", "process order.placed", "consumer", 50, 40),
		failed,
		span("f", "d", "payments", "publish payment.authorized", "producer", 80, 2), // ends last under d
		span("o", "zzz", "shipping", "orphan", "internal", 30, 1),
	}
	w := NewWaterfall("abc", spans)
	doc := render(t, "traces", Trace(TraceModel{Waterfall: w, Jaeger: UI{Name: "Jaeger's UI", Base: "http://127.0.0.1:16686/", State: UIUp}}))

	if href, _ := attr(one(t, doc, "jaeger-link"), "href"); href != "http://127.0.0.1:16686/trace/abc" {
		t.Errorf("Jaeger link %q", href)
	}
	if len(all(doc, "jaeger-note")) != 0 {
		t.Error("a note about Jaeger's UI while it is up")
	}
	rows := all(doc, "span-row")
	bars := all(doc, "span-bar")
	if len(rows) != len(spans) || len(bars) != len(spans) {
		t.Fatalf("%d rows, %d bars for %d spans", len(rows), len(bars), len(spans))
	}
	critical := map[string]bool{}
	for i, r := range rows {
		id, _ := attr(r, "data-span-id")
		if hasClass(bars[i], "critical") {
			critical[id] = true
		}
	}
	// a → b → c (ends at 25, after x) → d → f (ends at 82, after e at 70).
	want := map[string]bool{"a": true, "b": true, "c": true, "d": true, "f": true}
	if fmt.Sprint(critical) != fmt.Sprint(want) {
		t.Errorf("critical path %v, want %v", critical, want)
	}
	// Bars are positioned by start and duration: the trace runs 0..90ms.
	for i, r := range rows {
		if id, _ := attr(r, "data-span-id"); id == "d" {
			style, _ := attr(bars[i], "style")
			if !strings.Contains(style, "left:55.556%") || !strings.Contains(style, "width:44.444%") {
				t.Errorf("bar of d: style %q", style)
			}
			if from, _ := attr(r, "data-hop-from"); from != "c" || !hasClass(r, "amqp-consumer") {
				t.Errorf("consumer d is not marked as the hop from producer c (hop %q)", from)
			}
		}
		if id, _ := attr(r, "data-span-id"); id == "e" {
			if !hasClass(r, "error") || !strings.Contains(text(one(t, r, "span-error")), "out of stock") {
				t.Error("failed span not marked with its status")
			}
			if !strings.Contains(text(one(t, r, "span-attrs")), "LAB-UNICORN") ||
				!strings.Contains(text(one(t, r, "span-events")), "no stock") {
				t.Error("span details lack attributes or events")
			}
		}
	}
	if w.Hops != 1 || w.Errors != 1 || w.Duration != 90*time.Millisecond {
		t.Errorf("hops %d errors %d duration %s", w.Hops, w.Errors, w.Duration)
	}
}

func TestTraceMissing(t *testing.T) {
	doc := render(t, "traces", Trace(TraceModel{Waterfall: NewWaterfall("nope", nil), Missing: true,
		Jaeger: UI{Name: "Jaeger's UI", Base: "http://j", State: UIUp}}))
	one(t, doc, "trace-missing")
	one(t, doc, "jaeger-link") // Jaeger may well have it: it keeps more
	if len(all(doc, "span-row")) != 0 {
		t.Error("rows for a missing trace")
	}
}

func TestTraceListFilters(t *testing.T) {
	ts := []ingest.TraceSummary{
		{TraceID: "1", RootService: "gateway", RootName: "POST /api/v1/orders", Duration: 300 * time.Millisecond, Spans: 40, Services: []string{"gateway", "orders"}},
		{TraceID: "2", RootService: "gateway", RootName: "GET /api/v1/products", Duration: 3 * time.Millisecond, Spans: 3, Error: true, Services: []string{"gateway", "catalog"}},
	}
	doc := render(t, "traces", Traces(TracesModel{Traces: ts, Services: []string{"catalog", "gateway", "orders"}}))
	if n := len(all(doc, "trace-row")); n != 2 {
		t.Fatalf("%d rows", n)
	}
	doc = render(t, "traces", Traces(TracesModel{Traces: ts, Service: "catalog", ErrorsOnly: true}))
	rows := all(doc, "trace-row")
	if len(rows) != 1 {
		t.Fatalf("%d rows after filtering", len(rows))
	}
	if id, _ := attr(rows[0], "data-trace-id"); id != "2" {
		t.Errorf("kept %s", id)
	}
	if href, _ := attr(one(t, rows[0], "trace-link"), "href"); href != "/traces/2" {
		t.Errorf("trace link %q", href)
	}
	doc = render(t, "traces", Traces(TracesModel{Traces: ts, MinMs: 100}))
	if n := len(all(doc, "trace-row")); n != 1 {
		t.Errorf("%d rows slower than 100ms", n)
	}
}

func TestEventsAndDLQ(t *testing.T) {
	evs := []ingest.Event{{ID: "e1", Type: "order.placed", Source: "orders", CorrelationID: "o1",
		Exchange: "shop.events", RoutingKey: "order.placed", At: t0, TraceID: "abc"}}
	dlq := DLQModel{Queues: []DLQQueue{
		{Name: "payments.dlq", Messages: 2, Peek: []DLQMessage{{MessageID: "m1", Type: "order.placed", LastError: "boom", Attempt: 4}}},
		{Name: "shipping.dlq"},
	}}
	doc := render(t, "events", Events(EventsModel{Events: evs, DLQ: dlq}))
	row := one(t, doc, "event-row")
	if id, _ := attr(row, "data-event-id"); id != "e1" {
		t.Errorf("event row id %q", id)
	}
	one(t, doc, "event-payload")
	q := one(t, doc, "dlq-queue-payments.dlq")
	if got := text(one(t, q, "dlq-count")); got != "2" {
		t.Errorf("dlq count %q", got)
	}
	if m := one(t, q, "dlq-message"); !strings.Contains(text(m), "boom") {
		t.Errorf("dlq message %q", text(m))
	}
	if _, disabled := attr(one(t, one(t, doc, "dlq-queue-shipping.dlq"), "dlq-replay"), "disabled"); !disabled {
		t.Error("replay enabled on an empty DLQ")
	}
	doc = render(t, "events", Events(EventsModel{DLQ: DLQModel{Error: "RabbitMQ management API unreachable at http://guest:****@x"}}))
	if got := text(one(t, doc, "dlq-error")); !strings.Contains(got, "****") {
		t.Errorf("dlq error %q", got)
	}
}

func TestSagaTimelines(t *testing.T) {
	ss := []ingest.Saga{
		{OrderID: "o1", Mode: "choreography", Outcome: "cancelled", Reason: "out_of_stock", Start: t0, TraceID: "abc",
			Steps: []ingest.SagaStep{
				{Event: "order.placed", Service: "orders"},
				{Event: "payment.authorized", Service: "payments", Since: 100 * time.Millisecond},
				{Event: "stock.rejected", Service: "inventory", Since: 200 * time.Millisecond, Failed: true, Reason: "out of stock"},
				{Event: "payment.refunded", Service: "payments", Since: 400 * time.Millisecond, Compensation: true, Reason: "stock rejected"},
			}},
		{OrderID: "o2", Mode: "orchestration", Outcome: "confirmed", Start: t0},
	}
	var tl []SagaTimeline
	for _, s := range ss {
		tl = append(tl, NewSagaTimeline(s))
	}
	doc := render(t, "sagas", Sagas(SagasModel{Sagas: tl}, ""))
	if n := len(all(doc, "saga")); n != 2 {
		t.Fatalf("%d sagas", n)
	}
	steps := all(all(doc, "saga")[0], "saga-step")
	if len(steps) != 4 {
		t.Fatalf("%d steps", len(steps))
	}
	wantClass := []string{"step", "step", "failed", "compensation"}
	wantLeft := []string{"left:0.000%", "left:25.000%", "left:50.000%", "left:100.000%"}
	for i, s := range steps {
		if !hasClass(s, wantClass[i]) {
			t.Errorf("step %d: want class %s", i, wantClass[i])
		}
		if style, _ := attr(s, "style"); strings.TrimSuffix(style, ";") != wantLeft[i] {
			t.Errorf("step %d: style %q, want %q", i, style, wantLeft[i])
		}
	}
	if title, _ := attr(steps[3], "title"); !strings.Contains(title, "stock rejected") {
		t.Errorf("compensation without its reason: %q", title)
	}
	// Each card leads to its order's page, where the event stream is; the list itself
	// has no stream section (it is one order's).
	if href, _ := attr(one(t, all(doc, "saga")[0], "saga-stream"), "href"); href != "/sagas?order=o1#event-stream" {
		t.Errorf("event stream link %q", href)
	}
	if n := len(all(doc, "event-stream")); n != 0 {
		t.Errorf("the list of all sagas shows %d event streams", n)
	}
	doc = render(t, "sagas", Sagas(SagasModel{Sagas: tl, Outcome: "confirmed", Mode: "orchestration"}, ""))
	got := all(doc, "saga")
	if len(got) != 1 {
		t.Fatalf("%d sagas after filtering", len(got))
	}
	if id, _ := attr(got[0], "data-order-id"); id != "o2" {
		t.Errorf("kept %s", id)
	}
}

func TestMetricsUnreachableAndPanels(t *testing.T) {
	doc := render(t, "metrics", Metrics(MetricsModel{Prometheus: "http://127.0.0.1:9090", Unreachable: true}))
	if got := text(one(t, doc, "metrics-error")); got != "Prometheus unreachable at http://127.0.0.1:9090" {
		t.Errorf("metrics-error says %q", got)
	}
	if len(all(doc, "chart")) != 0 {
		t.Error("charts drawn without Prometheus")
	}

	p := Panel{ID: "throughput", Title: "Throughput", Unit: "/s", Grafana: "http://g/d/u?viewPanel=2", Query: "q",
		Series: []Series{{Label: "orders", Points: []Point{{t0, 1}, {t0.Add(time.Minute), 3}}}}}
	doc = render(t, "metrics", Metrics(MetricsModel{Prometheus: "http://p", Panels: []Panel{p, {ID: "bad", Error: errors.New("parse error").Error()}, {ID: "none"}},
		Grafana: UI{Name: "Grafana", Base: "http://g", State: UIUp}}))
	panel := one(t, doc, "panel-throughput")
	if href, _ := attr(one(t, panel, "grafana-link"), "href"); href != "http://g/d/u?viewPanel=2" {
		t.Errorf("grafana link %q", href)
	}
	s := one(t, panel, "series")
	if pts, _ := attr(s, "points"); pts != "0.0,106.7 600.0,0.0" {
		t.Errorf("points %q", pts)
	}
	one(t, one(t, doc, "panel-bad"), "panel-error")
	one(t, one(t, doc, "panel-none"), "panel-empty")
	if len(all(doc, "metrics-error")) != 0 {
		t.Error("metrics-error shown while Prometheus answers")
	}
}

func TestSwitchboardListsEverySetting(t *testing.T) {
	m := SwitchboardModel{Settings: []SettingRow{
		{Key: "saga.mode", Value: "orchestration", Default: "choreography", Allowed: []string{"choreography", "orchestration"}},
		{Key: "outbox.enabled", Value: "true", Default: "true"},
	}, Changes: []ChangeRow{{Revision: 3, Key: "saga.mode", Old: "choreography", New: "orchestration", Source: "dashboard", At: t0}}}
	doc := render(t, "switchboard", Switchboard(m))
	row := one(t, doc, "setting-saga.mode")
	if got := text(one(t, row, "setting-value")); got != "orchestration" {
		t.Errorf("value %q", got)
	}
	sel := one(t, row, "setting-input")
	if sel.Data != "select" {
		t.Errorf("enumeration rendered as <%s>", sel.Data)
	}
	if in := one(t, one(t, doc, "setting-outbox.enabled"), "setting-input"); in.Data != "input" {
		t.Errorf("free value rendered as <%s>", in.Data)
	}
	if c := one(t, doc, "change"); !strings.Contains(text(c), "choreography → orchestration") {
		t.Errorf("change %q", text(c))
	}
	if _, hidden := attr(one(t, doc, "setting-error"), "hidden"); !hidden {
		t.Error("error box visible without an error")
	}
	one(t, doc, "traffic-start")
}

// Settings are grouped by their key's prefix; one no group claims (a key added to
// control.Defs later) still shows, under "other"; empty groups are left out.
func TestSwitchboardGroupsByPattern(t *testing.T) {
	m := SwitchboardModel{Settings: []SettingRow{
		{Key: "saga.mode"}, {Key: "outbox.enabled"}, {Key: "gateway.breaker.enabled"}, {Key: "http.timeout"},
		{Key: "amqp.retry.delays"}, {Key: "read.model"}, {Key: "brand.new"}, {Key: "saga.step_timeout"},
	}, FaultServices: []string{"payments"}, FaultKinds: []string{"latency"}}
	var got []string
	for _, g := range m.Groups() {
		var keys []string
		for _, s := range g.Settings {
			keys = append(keys, s.Key)
		}
		got = append(got, g.ID+": "+strings.Join(keys, " "))
	}
	want := []string{"saga: saga.mode saga.step_timeout", "reliability: outbox.enabled amqp.retry.delays",
		"resilience: gateway.breaker.enabled http.timeout", "data: read.model", "other: brand.new"}
	if !slices.Equal(got, want) {
		t.Errorf("groups\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	doc := render(t, "switchboard", Switchboard(m))
	one(t, one(t, doc, "group-other"), "setting-brand.new")
	one(t, doc, "fault-form")
	if _, hidden := attr(one(t, doc, "fault-empty"), "hidden"); hidden {
		t.Error("no fault in force, and the page does not say so")
	}
}

func TestShop(t *testing.T) {
	doc := render(t, "shop", Shop(ShopModel{Gateway: "http://127.0.0.1:8000",
		Users:    []DemoUser{{Email: "alice@example.com"}},
		Products: []Product{{SKU: "LAB-MUG", Name: "Lab mug", PriceCents: 1200, Currency: "EUR"}}}))
	if got := text(one(t, doc, "order-sku")); !strings.Contains(got, "12.00 EUR") {
		t.Errorf("product option %q", got)
	}
	for _, id := range []string{"login-form", "order-card", "order-country", "order-submit", "order-result", "order-status", "order-trace-link", "order-saga-link"} {
		one(t, doc, id)
	}
	// No password in the page: the server logs the demo user in.
	var buf bytes.Buffer
	_ = html.Render(&buf, doc)
	if strings.Contains(buf.String(), "secret") {
		t.Error("a password is rendered")
	}
}

// A UI that is not up is never linked to, and the page says which of three things is
// true instead: not part of this lab, not answering (what the probe found, and when),
// or not checked yet.
func TestUINotes(t *testing.T) {
	at := time.Date(2026, 12, 4, 1, 2, 3, 0, time.UTC)
	for _, c := range []struct {
		ui   UI
		want []string
	}{
		{UI{Name: "Jaeger's UI", State: UIAbsent, Without: "the native lab builds Jaeger without it"},
			[]string{"Jaeger's UI is not part of this lab (the native lab builds Jaeger without it)", ComposeCommand, "to open this trace in Jaeger."}},
		{UI{Name: "Jaeger's UI", Base: "http://localhost:16686", Probed: "http://jaeger:16686/", State: UIDown, Checked: at, Detail: "connection refused"},
			[]string{"Jaeger's UI is not answering at http://jaeger:16686/ (checked at 01:02:03.000: connection refused)"}},
		{UI{Name: "Jaeger's UI", Base: "http://localhost:16686", State: UIUnchecked},
			[]string{"Jaeger's UI at http://localhost:16686 has not been checked yet"}},
	} {
		if c.ui.Link("/trace/x") != "" {
			t.Errorf("%s: a link while %s", c.ui.Name, c.ui.State)
		}
		doc := render(t, "traces", Trace(TraceModel{Waterfall: NewWaterfall("x", nil), Missing: true, Jaeger: c.ui}))
		if len(all(doc, "jaeger-link")) != 0 {
			t.Errorf("%s: jaeger-link rendered", c.ui.State)
		}
		note := text(one(t, doc, "jaeger-note"))
		for _, w := range c.want {
			if !strings.Contains(note, w) {
				t.Errorf("%s: note %q lacks %q", c.ui.State, note, w)
			}
		}
	}
	// The metrics page: no panel links, one note.
	g := UI{Name: "Grafana", State: UIAbsent, Without: "the native lab runs none"}
	doc := render(t, "metrics", Metrics(MetricsModel{Prometheus: "http://p", Grafana: g, Panels: []Panel{{ID: "a"}, {ID: "b"}}}))
	if len(all(doc, "grafana-link")) != 0 {
		t.Error("grafana-link rendered without Grafana")
	}
	if note := text(one(t, doc, "grafana-note")); !strings.Contains(note, "Grafana is not part of this lab") {
		t.Errorf("grafana-note %q", note)
	}
}
