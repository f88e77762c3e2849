package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"microlab/dashboard/hub"
	"microlab/dashboard/ingest"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/config"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// recorder is a hub that remembers what was broadcast.
type recorder struct {
	mu   sync.Mutex
	msgs []hub.Message
}

func (r *recorder) Broadcast(m hub.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
}

func (r *recorder) of(typ string) []hub.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []hub.Message
	for _, m := range r.msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// memSettings is a settings store for tests that are not about the database.
type memSettings struct{}

func (memSettings) List(context.Context) ([]control.Entry, error) {
	var out []control.Entry
	for _, d := range control.Defs() {
		out = append(out, control.Entry{Def: d, Value: d.Default})
	}
	return out, nil
}
func (memSettings) Faults(context.Context) ([]control.Fault, error)        { return nil, nil }
func (memSettings) Changes(context.Context, int) ([]control.Change, error) { return nil, nil }

type fixture struct {
	srv *server
	ts  *httptest.Server
	hub *recorder
}

// newFixture starts the dashboard's handler on a test server. env overrides Config.
// With the real control.Store (and pub, a real publisher on a vhost of the test's own,
// or nil) the switches work; with memSettings they are read-only.
func newFixture(t *testing.T, env map[string]string, src Sources, store settingsStore, pub ...*bus.Publisher) *fixture {
	t.Helper()
	var cfg Config
	if err := config.Load(func(k string) string { return env[k] }, &cfg); err != nil {
		t.Fatal(err)
	}
	f := &fixture{hub: &recorder{}}
	if src.Hub == nil {
		src.Hub = f.hub
	}
	if store == nil {
		store = memSettings{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var p *bus.Publisher
	if len(pub) > 0 {
		p = pub[0]
	}
	s, err := newServer(ctx, cfg, quiet(), src, store, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = s
	f.ts = httptest.NewServer(s.routes(nil, nil))
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// closedURL is an http URL nothing listens on.
func closedURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func testIDs(t *testing.T, page string) map[string][]*html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*html.Node{}
	for n := range doc.Descendants() {
		for _, a := range n.Attr {
			if a.Key == "data-testid" {
				out[a.Val] = append(out[a.Val], n)
			}
		}
	}
	return out
}

func nodeText(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// The settings API against a real lab database: list, change (stored, announced,
// broadcast, on the timeline), refuse bad values with control's message, refuse other
// origins.
func TestSettingsAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	b := testenv.Dial(t, testenv.VHost(t))
	anns := b.Tap(t, contracts.ExchangeControl, "") // as every service instance listens
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t), "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, store, b.Pub)

	resp, body := f.do(t, "GET", "/api/lab/settings", "", nil)
	var list struct {
		Settings []settingJSON `json:"settings"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET settings: %d %s", resp.StatusCode, body)
	}
	if len(list.Settings) != len(control.Defs()) || list.Settings[0].Key != control.SagaMode || list.Settings[0].Value != "choreography" {
		t.Fatalf("settings %+v", list.Settings)
	}

	resp, body = f.do(t, "POST", "/api/lab/settings", `{"key":"saga.mode","value":"orchestration"}`,
		map[string]string{"Origin": f.ts.URL})
	if resp.StatusCode != 200 {
		t.Fatalf("POST setting: %d %s", resp.StatusCode, body)
	}
	if cur, _ := store.Load(ctx); cur.SagaMode() != "orchestration" {
		t.Errorf("not stored: %v", cur.Values)
	}
	if a := awaitAnnouncement(t, anns); a.New != "orchestration" || a.Source != "dashboard" {
		t.Errorf("announced %+v", a)
	}
	if got := f.hub.of("setting"); len(got) != 1 || !strings.Contains(string(got[0].Data), `"new":"orchestration"`) {
		t.Errorf("broadcast %v", got)
	}

	// Bad input: 400 with control's one-line message, nothing stored.
	for _, tc := range []struct{ body, want string }{
		{`{"key":"saga.mode","value":"chaos"}`, "want one of choreography, orchestration"},
		{`{"key":"nope","value":"1"}`, "unknown setting"},
		{`{"key":"saga.step_timeout","value":"0s"}`, "between"},
		{`{"key":"scale.shipping","value":"10"}`, "want a whole number from 1 to 9"},
		{`{"key":"saga.mode"`, ""},
	} {
		resp, body = f.do(t, "POST", "/api/lab/settings", tc.body, map[string]string{"Origin": f.ts.URL})
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal([]byte(body), &eb)
		if resp.StatusCode != 400 || eb.Error.Code == "" || !strings.Contains(eb.Error.Message, tc.want) {
			t.Errorf("%s: %d %s", tc.body, resp.StatusCode, body)
		}
	}

	// Another site's page cannot flip a switch through the learner's browser.
	resp, body = f.do(t, "POST", "/api/lab/settings", `{"key":"saga.mode","value":"choreography"}`,
		map[string]string{"Origin": "http://evil.example"})
	if resp.StatusCode != 403 || !strings.Contains(body, "forbidden_origin") {
		t.Errorf("cross-origin POST: %d %s", resp.StatusCode, body)
	}
	resp, _ = f.do(t, "POST", "/api/lab/settings", `{"key":"saga.mode","value":"choreography"}`, nil)
	if resp.StatusCode != 403 {
		t.Errorf("POST without Origin: %d", resp.StatusCode)
	}
	if cur, _ := store.Load(ctx); cur.SagaMode() != "orchestration" {
		t.Error("a refused request changed the setting")
	}
	// Nothing refused was announced: the next announcement is the marker's.
	if resp, body := f.do(t, "POST", "/api/lab/settings", `{"key":"inbox.enabled","value":"false"}`,
		map[string]string{"Origin": f.ts.URL}); resp.StatusCode != 200 {
		t.Fatalf("marker: %d %s", resp.StatusCode, body)
	}
	if a := awaitAnnouncement(t, anns); a.Key != control.InboxEnabled {
		t.Errorf("a refused request was announced: %+v", a)
	}

	// The switchboard lists every setting and the change.
	_, page := f.do(t, "GET", "/switchboard", "", nil)
	ids := testIDs(t, page)
	for _, d := range control.Defs() {
		if len(ids["setting-"+d.Key]) != 1 {
			t.Errorf("switchboard lacks %s", d.Key)
		}
	}
	if len(ids["change"]) != 2 || !strings.Contains(nodeText(ids["change"][1]), "choreography → orchestration") ||
		!strings.Contains(nodeText(ids["change"][1]), "by browser") {
		t.Errorf("timeline %v", ids["change"])
	}
	resp, body = f.do(t, "GET", "/api/lab/settings/changes", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"key":"saga.mode"`) {
		t.Errorf("changes: %d %s", resp.StatusCode, body)
	}
}

func TestMetricsPrometheusUnreachable(t *testing.T) {
	t.Parallel()
	prom := closedURL(t)
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": prom, "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, nil)
	for _, path := range []string{"/charts", "/charts/panels"} {
		resp, page := f.do(t, "GET", path, "", nil)
		ids := testIDs(t, page)
		if resp.StatusCode != 200 || len(ids["metrics-error"]) != 1 {
			t.Fatalf("%s: %d, metrics-error %d", path, resp.StatusCode, len(ids["metrics-error"]))
		}
		if got := nodeText(ids["metrics-error"][0]); got != "Prometheus unreachable at "+prom {
			t.Errorf("%s says %q", path, got)
		}
		if len(ids["chart"]) != 0 {
			t.Errorf("%s draws charts without Prometheus", path)
		}
	}
	// The map says so too, and queue depths still come from RabbitMQ (here: neither).
	h := f.srv.readHealth(context.Background())
	if !strings.Contains(h.Error, "Prometheus unreachable at "+prom) {
		t.Errorf("health error %q", h.Error)
	}
}

// A Prometheus that answers: every panel is drawn from its query and links to the
// matching Grafana panel (Grafana answering: see links_test.go for when it does not);
// a failing query fails only its panel.
func TestMetricsPanels(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var queries []string
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		mu.Lock()
		queries = append(queries, q)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(q, "saga_compensated") {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"parse error"}`)
			return
		}
		now := float64(time.Now().Unix())
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[
			{"metric":{"job":"orders","queue":"orders.events","mode":"choreography","outcome":"confirmed"},"values":[[%f,"1"],[%f,"2"],[%f,"NaN"]]}]}}`,
			now-60, now-30, now)
	}))
	defer prom.Close()
	grafana := httptest.NewServer(grafanaHealth(true))
	defer grafana.Close()
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": prom.URL, "GRAFANA_URL": "http://grafana.test",
		"GRAFANA_HEALTH_URL": grafana.URL, "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, nil)
	f.srv.probeLinks(t.Context())
	_, page := f.do(t, "GET", "/charts", "", nil)
	ids := testIDs(t, page)
	if len(ids["metrics-error"]) != 0 {
		t.Fatal("metrics-error with Prometheus up")
	}
	for id, label := range map[string]string{"throughput": "orders", "latency": "orders", "errors": "orders",
		"sagas": "choreography confirmed", "queues": "orders.events", "dlq": "orders.events"} {
		p := ids["panel-"+id]
		if len(p) != 1 {
			t.Fatalf("panel %s missing", id)
		}
		if !strings.Contains(nodeText(p[0]), label) {
			t.Errorf("panel %s lacks the series label %q: %s", id, label, nodeText(p[0]))
		}
	}
	if len(ids["chart"]) != 6 || len(ids["panel-error"]) != 1 {
		t.Errorf("%d charts, %d failed panels", len(ids["chart"]), len(ids["panel-error"]))
	}
	links := map[string]bool{}
	for _, a := range ids["grafana-link"] {
		for _, at := range a.Attr {
			if at.Key == "href" {
				links[at.Val] = true
			}
		}
	}
	for _, want := range []string{"http://grafana.test/d/microlab-shop-overview?viewPanel=2",
		"http://grafana.test/d/microlab-checkout-saga?viewPanel=6", "http://grafana.test/d/microlab-messaging?viewPanel=10"} {
		if !links[want] {
			t.Errorf("no Grafana link %s (have %v)", want, links)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(queries, "\n"), "job:http_server_requests:rate1m") {
		t.Errorf("throughput does not use the recording rule: %v", queries)
	}
}

// The real stores satisfy the interfaces the dashboard declares (sources.go).
var (
	_ traceStore = (*ingest.Traces)(nil)
	_ eventStore = (*ingest.Events)(nil)
	_ sagaStore  = (*ingest.Sagas)(nil)
)

func TestPagesAndReadAPIs(t *testing.T) {
	t.Parallel()
	id := "0123456789abcdef0123456789abcdef"
	t0 := time.Now()
	traces := ingest.NewTraces(10, 100)
	traces.Add([]ingest.Span{
		{TraceID: id, SpanID: "a", Service: "gateway", Name: "POST /api/v1/orders", Kind: "server", Start: t0, Duration: 20 * time.Millisecond},
		{TraceID: id, SpanID: "b", ParentID: "a", Service: "orders", Name: "POST /orders", Kind: "server", Start: t0.Add(time.Millisecond), Duration: 10 * time.Millisecond},
	})
	events := ingest.NewEvents(10)
	events.Add(ingest.Event{ID: "e1", Type: "order.placed", Source: "orders", CorrelationID: "o1", Payload: json.RawMessage(`{"orderId":"o1"}`)})
	events.Add(ingest.Event{ID: "e2", Type: "order.placed", Source: "orders", CorrelationID: "o2"})
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t),
		"RABBITMQ_MANAGEMENT_URL": strings.Replace(closedURL(t), "http://", "http://guest:guest@", 1),
		"GATEWAY_URL":             closedURL(t), "JAEGER_URL": jaegerWithUI(t), "JAEGER_UI_URL": "http://jaeger.test"},
		Sources{Traces: traces, Events: events}, nil)
	f.srv.probeLinks(t.Context())

	for path, want := range map[string]string{"/": "arch-map", "/traces": "trace-list", "/events": "event-list",
		"/sagas": "saga-list", "/switchboard": "settings", "/shop": "order-form", "/traces/" + id: "waterfall"} {
		resp, page := f.do(t, "GET", path, "", nil)
		if resp.StatusCode != 200 || len(testIDs(t, page)[want]) != 1 {
			t.Errorf("%s: %d, no %s", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	_, page := f.do(t, "GET", "/traces/"+id, "", nil)
	ids := testIDs(t, page)
	if len(ids["span-bar"]) != 2 || len(ids["jaeger-link"]) != 1 {
		t.Errorf("waterfall: %d bars, %d Jaeger links", len(ids["span-bar"]), len(ids["jaeger-link"]))
	}
	// Not received (yet) is a state the page shows and waits out, not an error.
	if resp, body := f.do(t, "GET", "/traces/ffffffffffffffffffffffffffffffff", "", nil); resp.StatusCode != 200 ||
		len(testIDs(t, body)["trace-missing"]) != 1 {
		t.Errorf("unknown trace: %d, want 200 with the trace-missing notice", resp.StatusCode)
	}
	if resp, body := f.do(t, "GET", "/traces/nope", "", nil); resp.StatusCode != 400 || !strings.Contains(body, "invalid_trace_id") {
		t.Errorf("bad trace id: %d %s", resp.StatusCode, body)
	}
	// The event filter and the payload API.
	_, page = f.do(t, "GET", "/events?correlation=o2", "", nil)
	if rows := testIDs(t, page)["event-row"]; len(rows) != 1 {
		t.Errorf("%d rows for correlation o2", len(rows))
	}
	resp, body := f.do(t, "GET", "/api/events/e1", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `"payload":{"orderId":"o1"}`) {
		t.Errorf("event e1: %d %s", resp.StatusCode, body)
	}
	if resp, _ := f.do(t, "GET", "/api/events/zz", "", nil); resp.StatusCode != 404 {
		t.Errorf("unknown event: %d", resp.StatusCode)
	}
	// The DLQ section says the management API is unreachable, without its password.
	_, page = f.do(t, "GET", "/events", "", nil)
	if e := testIDs(t, page)["dlq-error"]; len(e) != 1 || !strings.Contains(nodeText(e[0]), "guest:****@") {
		t.Errorf("dlq error %v", e)
	} else if strings.Contains(page, "guest:guest") {
		t.Error("a password is rendered")
	}
	// The shop page still renders (with a notice) when the gateway is down.
	_, page = f.do(t, "GET", "/shop", "", nil)
	if len(testIDs(t, page)["shop-error"]) != 1 {
		t.Error("shop: no notice with the gateway down")
	}
	// Health endpoints.
	if resp, _ := f.do(t, "GET", "/healthz", "", nil); resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", "/readyz", "", nil); resp.StatusCode != 200 {
		t.Errorf("readyz %d", resp.StatusCode)
	}
}

func TestStaticAssets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t)}, Sources{}, nil)
	for _, name := range []string{"ws.js", "overview.js", "traces.js", "events.js", "sagas.js", "metrics.js",
		"switchboard.js", "shop.js", "traffic.js", "app.css"} {
		resp, body := f.do(t, "GET", "/static/"+name, "", nil)
		if resp.StatusCode != 200 || body == "" || resp.Header.Get("ETag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: %d, etag %q, cache %q", name, resp.StatusCode, resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"))
			continue
		}
		if strings.HasSuffix(name, ".js") && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
			t.Errorf("%s: Content-Type %q", name, resp.Header.Get("Content-Type"))
		}
		// Nothing fetched from elsewhere.
		for _, bad := range []string{"http://", "https://", "//cdn"} {
			if strings.Contains(body, bad) && !strings.Contains(body, "http://www.w3.org/2000/svg") {
				t.Errorf("%s mentions %s", name, bad)
			}
		}
		resp, _ = f.do(t, "GET", "/static/"+name, "", map[string]string{"If-None-Match": resp.Header.Get("ETag")})
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s: revalidation answered %d", name, resp.StatusCode)
		}
	}
	if resp, _ := f.do(t, "GET", "/static/nope.js", "", nil); resp.StatusCode != 404 {
		t.Errorf("unknown asset: %d", resp.StatusCode)
	}
}
