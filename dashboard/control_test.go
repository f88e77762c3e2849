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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/net/html"

	"microlab/dashboard/views"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// patience bounds waits for what must happen; it costs time only when a test fails.
const patience = 3 * time.Minute

// awaitAnnouncement returns the next change announced on lab.control.
func awaitAnnouncement(t *testing.T, anns <-chan amqp.Delivery) control.Change {
	t.Helper()
	select {
	case m := <-anns:
		var c control.Change
		if err := json.Unmarshal(m.Body, &c); err != nil {
			t.Fatalf("announcement %q: %v", m.Body, err)
		}
		return c
	case <-time.After(patience):
		t.Fatal("no announcement on lab.control")
	}
	return control.Change{}
}

// startPrometheus runs the real Prometheus (Debian's package), scraping every second
// the targets given per job, and returns its URL once it is ready.
func startPrometheus(t *testing.T, jobs map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Missing(t, "Prometheus", "apt-get install -y prometheus", err)
	}
	dir := t.TempDir()
	cfg := "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\nscrape_configs:\n"
	for job, addr := range jobs {
		cfg += fmt.Sprintf("  - job_name: %s\n    static_configs: [{targets: [%q]}]\n", job, addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = logf.Close()
	})
	for end := time.Now().Add(patience); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/-/ready"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "http://" + addr
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus exited:\n%s", b)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("prometheus not ready at %s", addr)
		}
	}
}

// controlLab is a dashboard with its real parts: a lab database and a broker vhost of
// the test's own, and a real Prometheus that scrapes "payments" (a process answering
// its scrape: running) and "shipping" (nothing listens: not running), so the Plane's
// Running hook reads the same health the map shows.
type controlLab struct {
	*fixture
	store *control.Store
	anns  <-chan amqp.Delivery
	b     *testenv.Bus
}

func newControlLab(t *testing.T) *controlLab {
	t.Helper()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	b := testenv.Dial(t, vhost)
	anns := b.Tap(t, contracts.ExchangeControl, "")
	payments := httptest.NewServer(promhttp.Handler())
	t.Cleanup(payments.Close)
	prom := startPrometheus(t, map[string]string{"payments": strings.TrimPrefix(payments.URL, "http://"),
		"shipping": strings.TrimPrefix(closedURL(t), "http://")})
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": prom, "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, store, b.Pub)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go f.srv.pollHealth(ctx, 500*time.Millisecond)
	go f.srv.watchChanges(ctx, store, b.Conn, 500*time.Millisecond)
	// Evidence that the dashboard's health knows both: payments answers, shipping not.
	for end := time.Now().Add(patience); ; time.Sleep(100 * time.Millisecond) {
		h := f.srv.currentHealth()
		if p, s := h.Services["payments"], h.Services["shipping"]; p.Answering == 1 && s.Instances == 1 && s.Answering == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("health never showed payments up and shipping down: %+v", h)
		}
	}
	return &controlLab{fixture: f, store: store, anns: anns, b: b}
}

func (l *controlLab) call(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	resp, out := l.do(t, method, path, body, map[string]string{"Origin": l.ts.URL})
	return resp.StatusCode, out
}

type errorJSON struct {
	Error struct{ Code, Message string } `json:"error"`
}

// The fault API end to end: add (stored, listed with its time left, announced,
// broadcast, on the timeline as the browser's), refuse bad input with control's
// message and nothing stored or announced, clear by target and all, reset; and a
// change made by another face (the CLI's source) reaches the timeline by itself.
func TestFaultsAPI(t *testing.T) {
	t.Parallel()
	l := newControlLab(t)
	ctx := context.Background()

	code, body := l.call(t, "POST", "/api/lab/faults", `{"service":"payments","kind":"latency","value":"300ms±50ms","on":"http","for":"5m"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST fault: %d %s", code, body)
	}
	var added struct {
		Fault     views.FaultRow  `json:"fault"`
		Change    views.ChangeRow `json:"change"`
		Announced bool            `json:"announced"`
	}
	if err := json.Unmarshal([]byte(body), &added); err != nil {
		t.Fatal(err)
	}
	if added.Fault.ID == 0 || added.Fault.Value != "300ms±50ms" || added.Fault.On != "http" || !added.Announced ||
		added.Change.Key != "fault payments" || added.Change.Who != "browser" {
		t.Errorf("added %+v", added)
	}
	if a := awaitAnnouncement(t, l.anns); a.Key != "fault payments" || a.Source != "dashboard" {
		t.Errorf("announced %+v", a)
	}
	code, body = l.call(t, "GET", "/api/lab/faults", "")
	var list struct {
		Faults []map[string]any `json:"faults"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list.Faults) != 1 {
		t.Fatalf("GET faults: %d %s", code, body)
	}
	for _, k := range []string{"id", "service", "instance", "kind", "value", "on", "created", "expires", "source", "secondsLeft"} {
		if _, ok := list.Faults[0][k]; !ok {
			t.Errorf("a listed fault lacks %q: %v", k, list.Faults[0])
		}
	}
	if left, _ := list.Faults[0]["secondsLeft"].(float64); left <= 0 || left > 300 {
		t.Errorf("secondsLeft %v, want in (0, 300]", list.Faults[0]["secondsLeft"])
	}

	// Refused: 400 with control's one-line message; nothing stored, nothing announced.
	before, _ := l.store.Changes(ctx, 1)
	for _, tc := range []struct{ method, path, body, code, want string }{
		{"POST", "/api/lab/faults", `{"service":"nosuch","kind":"down"}`, "invalid_fault", `unknown service "nosuch"`},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"melt"}`, "invalid_fault", `unknown fault "melt"`},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"latency","value":"fast"}`, "invalid_fault", `bad latency "fast"`},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"error_rate","value":"1.5"}`, "invalid_fault", "fraction from 0 to 1"},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"down","for":"0s"}`, "invalid_fault", `bad for="0s"`},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"down","for":"-1m"}`, "invalid_fault", `bad for="-1m"`},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"down","for":"2h"}`, "invalid_fault", "at most 1h0m0s"},
		{"POST", "/api/lab/faults", `{"service":"payments","instance":"orders-1","kind":"down"}`, "invalid_fault", "not an instance of payments"},
		{"POST", "/api/lab/faults", `{"service":"shipping","kind":"down"}`, "invalid_fault", "shipping is not running"},
		{"POST", "/api/lab/faults", `{"service":"payments",`, "malformed_json", ""},
		{"POST", "/api/lab/faults", `{"service":"payments","kind":"down","bogus":1}`, "", "bogus"},
		{"DELETE", "/api/lab/faults?target=paymints", "", "invalid_fault", `unknown target "paymints"`},
		{"POST", "/api/lab/settings", `{"key":"saga.mode","value":"sideways"}`, "invalid_setting", `bad value "sideways"`},
		{"POST", "/api/lab/settings", `{"key":"gateway.cache.ttl","value":"-1s"}`, "invalid_setting", `bad value "-1s" for gateway.cache.ttl: want a duration between 0s and 1h0m0s`},
		{"POST", "/api/lab/settings", `{"key":"gateway.cache.ttl","value":"2h"}`, "invalid_setting", `bad value "2h" for gateway.cache.ttl`},
		{"POST", "/api/lab/settings", `{"key":"gateway.cache.ttl","value":"soon"}`, "invalid_setting", `bad value "soon" for gateway.cache.ttl`},
		{"POST", "/api/lab/settings", `{"key":"nope","value":"1"}`, "invalid_setting", `unknown setting "nope"`},
		{"POST", "/api/lab/settings", `{"key":"catalog.transport","value":"soap"}`, "invalid_setting", `bad value "soap" for catalog.transport: want one of http, grpc`},
		{"POST", "/api/lab/settings", `{"key":"catalog.transport","value":""}`, "invalid_setting", `bad value "" for catalog.transport`},
		{"POST", "/api/lab/settings", `{"key":"gateway.discovery","value":"sideways"}`, "invalid_setting", `bad value "sideways" for gateway.discovery: want one of static, registry`},
		{"POST", "/api/lab/settings", `{"key":"deploy.catalog.weights","value":"v1:-10,v2:110"}`, "invalid_setting", `bad value "v1:-10,v2:110" for deploy.catalog.weights: v1: want a whole percent from 0 to 100`},
		{"POST", "/api/lab/settings", `{"key":"deploy.catalog.weights","value":"v1:50,v1:50"}`, "invalid_setting", `v1 named twice`},
		{"POST", "/api/lab/settings", `{"key":"strangler.routes","value":"payments=monolith"}`, "invalid_setting", `unknown route family "payments": want users, products, orders`},
		{"POST", "/api/lab/settings", `{"key":"strangler.routes","value":"orders=mainframe"}`, "invalid_setting", `orders="mainframe": want services or monolith`},
	} {
		code, body := l.call(t, tc.method, tc.path, tc.body)
		var eb errorJSON
		_ = json.Unmarshal([]byte(body), &eb)
		if code != 400 || eb.Error.Code == "" || (tc.code != "" && eb.Error.Code != tc.code) ||
			!strings.Contains(eb.Error.Message, tc.want) || strings.Contains(eb.Error.Message, "\n") {
			t.Errorf("%s %s %s: %d %s; want 400 %s %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.want)
		}
	}
	if after, _ := l.store.Changes(ctx, 1); after[0].Revision != before[0].Revision {
		t.Errorf("a refused request was recorded: %+v", after[0])
	}
	if fs, _ := l.store.Faults(ctx); len(fs) != 1 {
		t.Errorf("%d faults after refusals, want 1", len(fs))
	}

	// A second fault, on an instance: clearing the service clears both.
	if code, body := l.call(t, "POST", "/api/lab/faults", `{"service":"payments","instance":"payments-2","kind":"down"}`); code != 201 {
		t.Fatalf("POST instance fault: %d %s", code, body)
	}
	if a := awaitAnnouncement(t, l.anns); a.Key != "fault payments-2" { // the marker: nothing refused came before it
		t.Errorf("a refused request was announced, or the marker was not: %+v", a)
	}
	// The map marks the faulty service.
	_, page := l.do(t, "GET", "/", "", nil)
	ids := testIDs(t, page)
	if n := ids["node-payments"]; len(n) != 1 || attr(n[0], "data-fault") != "true" || !strings.Contains(attr(n[0], "class"), "faulty") {
		t.Errorf("map: payments not marked faulty")
	}
	if b := ids["fault-payments"]; len(b) != 1 || !strings.Contains(nodeText(b[0]), "latency=300ms±50ms on=http") ||
		!strings.Contains(nodeText(b[0]), "payments-2: down") {
		t.Errorf("map badge %v", b)
	}
	if n := ids["node-orders"]; len(n) != 1 || attr(n[0], "data-fault") != "false" {
		t.Errorf("map: orders marked faulty")
	}
	// The switchboard lists both, each with a clear button and its time left.
	_, page = l.do(t, "GET", "/switchboard", "", nil)
	ids = testIDs(t, page)
	if len(ids["fault"]) != 2 || len(ids["fault-clear"]) != 2 || !strings.HasPrefix(nodeText(ids["fault-left"][0]), "4:") {
		t.Errorf("switchboard faults: %d rows", len(ids["fault"]))
	}

	code, body = l.call(t, "DELETE", "/api/lab/faults?target=payments", "")
	var cleared struct {
		Changes []views.ChangeRow `json:"changes"`
	}
	_ = json.Unmarshal([]byte(body), &cleared)
	if code != 200 || len(cleared.Changes) != 2 || cleared.Changes[0].New != "cleared" {
		t.Errorf("DELETE ?target=payments: %d %s", code, body)
	}
	if fs, _ := l.store.Faults(ctx); len(fs) != 0 {
		t.Errorf("faults left: %+v", fs)
	}

	// Reset: settings back to their defaults, faults gone.
	if code, body := l.call(t, "POST", "/api/lab/settings", `{"key":"saga.mode","value":"orchestration"}`); code != 200 {
		t.Fatalf("set: %d %s", code, body)
	}
	if code, body := l.call(t, "POST", "/api/lab/faults", `{"service":"payments","kind":"error_rate","value":"0.5"}`); code != 201 {
		t.Fatalf("add: %d %s", code, body)
	}
	code, body = l.call(t, "POST", "/api/lab/reset", "")
	if code != 200 || !strings.Contains(body, `"key":"saga.mode","old":"orchestration","new":"choreography"`) ||
		!strings.Contains(body, `"key":"fault payments"`) {
		t.Errorf("reset: %d %s", code, body)
	}
	if cur, _ := l.store.Load(ctx); cur.SagaMode() != "choreography" || len(cur.Faults) != 0 {
		t.Errorf("after reset: %v, %d faults", cur.Values, len(cur.Faults))
	}
	code, body = l.call(t, "DELETE", "/api/lab/faults", "")
	if code != 200 || !strings.Contains(body, `"changes":[]`) {
		t.Errorf("DELETE all with none in force: %d %s", code, body)
	}

	// Another face (the CLI's source), through its own Plane: the dashboard notices the
	// revision and pushes it to the browsers, as the CLI's.
	cli := &control.Plane{Store: l.store, Pub: l.b.Pub}
	_, ch, err := cli.AddFault(ctx, control.FaultSpec{Service: "orders", Kind: "down", For: "1m"}, "lab fault")
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(patience); ; time.Sleep(50 * time.Millisecond) {
		var got *views.ChangeRow
		for _, m := range l.hub.of("setting") {
			var c views.ChangeRow
			if json.Unmarshal(m.Data, &c) == nil && c.Revision == ch.Revision {
				got = &c
			}
		}
		if got != nil {
			if got.Who != "CLI" || got.Key != "fault orders" {
				t.Errorf("pushed %+v", got)
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the CLI's change (revision %d) never reached the browsers", ch.Revision)
		}
	}
	_, page = l.do(t, "GET", "/switchboard", "", nil)
	if !strings.Contains(page, "by <span data-testid=\"change-who\">CLI</span> (lab fault)") {
		t.Error("the timeline does not show the CLI's change as the CLI's")
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// The dashboard answers only under its own names, whatever the Origin says: a page of
// evil.example rebound to 127.0.0.1 sends Host and Origin evil.example, which match each
// other (so the Origin check alone lets it through) but not the dashboard. And a foreign
// Origin on the dashboard's own Host is refused as before, on the fault routes too.
// Nothing refused is stored.
func TestForeignHostsAndOrigins(t *testing.T) {
	t.Parallel()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t), "RABBITMQ_MANAGEMENT_URL": closedURL(t)}, Sources{}, store)
	port := f.ts.URL[strings.LastIndex(f.ts.URL, ":"):]
	evil := "evil.example" + port
	fault := `{"service":"payments","kind":"down"}`
	for _, tc := range []struct {
		method, path, body, host, origin, code string
	}{
		{"POST", "/api/lab/faults", fault, evil, "http://" + evil, "forbidden_host"},
		{"DELETE", "/api/lab/faults", "", evil, "http://" + evil, "forbidden_host"},
		{"POST", "/api/lab/reset", "", evil, "http://" + evil, "forbidden_host"},
		{"POST", "/api/lab/settings", `{"key":"saga.mode","value":"orchestration"}`, evil, "http://" + evil, "forbidden_host"},
		{"GET", "/api/lab/faults", "", evil, "", "forbidden_host"},
		{"GET", "/switchboard", "", evil, "", "forbidden_host"},
		{"GET", "/ws", "", evil, "http://" + evil, "forbidden_host"},
		{"POST", "/api/lab/faults", fault, "", "http://evil.example", "forbidden_origin"},
		{"DELETE", "/api/lab/faults?target=payments", "", "", "http://evil.example", "forbidden_origin"},
		{"POST", "/api/lab/reset", "", "", "http://evil.example", "forbidden_origin"},
		{"POST", "/api/lab/faults", fault, "", "", "forbidden_origin"},
	} {
		req, err := http.NewRequest(tc.method, f.ts.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if tc.host != "" {
			req.Host = tc.host
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb errorJSON
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		_ = resp.Body.Close()
		if resp.StatusCode != 403 || eb.Error.Code != tc.code {
			t.Errorf("%s %s (Host %q, Origin %q): %d %+v, want 403 %s", tc.method, tc.path, tc.host, tc.origin, resp.StatusCode, eb, tc.code)
		}
	}
	if chs, _ := store.Changes(context.Background(), 10); len(chs) != 0 {
		t.Errorf("refused requests changed the lab: %+v", chs)
	}
	// Its own names, and what other processes reach it under (spans, scrapes, probes).
	for _, host := range []string{"localhost" + port, "127.0.0.1" + port, "[::1]" + port} {
		req, _ := http.NewRequest("GET", f.ts.URL+"/api/lab/faults", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Host %s: %d", host, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", f.ts.URL+"/healthz", nil)
	req.Host = "dashboard:8080"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("/healthz under the compose name: %v %v", resp, err)
	} else {
		_ = resp.Body.Close()
	}
}

// instanceOf connects to the broker as an instance of a service does (app.Start dials
// twice, naming the connections "<instance>/consume" and "<instance>/publish"), until
// the returned stop is called or the test ends.
func instanceOf(t *testing.T, vhost, instance string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	var conns []*bus.Conn
	for _, role := range []string{"consume", "publish"} {
		c, err := bus.Dial(ctx, vhost, instance+"/"+role, quiet())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	stop = sync.OnceFunc(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	t.Cleanup(stop)
	return stop
}

// A fault on one instance is checked against that instance, not its service: with
// payments-1 and payments-2 connected to the broker (as running instances are), a fault
// on payments-9 is refused with control's one-line message, nothing stored or
// announced, while one on payments-1 is accepted; once payments-2 stops, a fault on it
// is refused too. The map shows the same instances the check reads.
func TestFaultOnAnInstanceNeedsThatInstanceRunning(t *testing.T) {
	t.Parallel()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	vhost := testenv.VHost(t)
	b := testenv.Dial(t, vhost)
	anns := b.Tap(t, contracts.ExchangeControl, "")
	instanceOf(t, vhost, "payments-1")
	stop2 := instanceOf(t, vhost, "payments-2")
	instanceOf(t, vhost, "orders-1")
	env := map[string]string{"AMQP_URL": vhost, "PROMETHEUS_URL": closedURL(t)} // Prometheus knows nothing: the broker decides
	if u := os.Getenv("RABBITMQ_MANAGEMENT_URL"); u != "" {
		env["RABBITMQ_MANAGEMENT_URL"] = u
	}
	f := newFixture(t, env, Sources{}, store, b.Pub)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go f.srv.pollHealth(ctx, 200*time.Millisecond)
	awaitInstances := func(want ...string) {
		t.Helper()
		for end := time.Now().Add(patience); ; time.Sleep(50 * time.Millisecond) {
			got := f.srv.currentHealth().Instances["payments"]
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("the dashboard's health names payments' instances %v, want %v", got, want)
			}
		}
	}
	awaitInstances("payments-1", "payments-2")
	call := func(body string) (int, errorJSON) {
		t.Helper()
		resp, out := f.do(t, "POST", "/api/lab/faults", body, map[string]string{"Origin": f.ts.URL})
		var eb errorJSON
		_ = json.Unmarshal([]byte(out), &eb)
		return resp.StatusCode, eb
	}
	refused := func(instance string) {
		t.Helper()
		code, eb := call(`{"service":"payments","instance":"` + instance + `","kind":"down"}`)
		if code != 400 || eb.Error.Code != "invalid_fault" || !strings.Contains(eb.Error.Message, instance+" is not running") ||
			strings.Contains(eb.Error.Message, "\n") {
			t.Errorf("a fault on %s, which is not running: %d %+v; want 400 invalid_fault %q", instance, code, eb, instance+" is not running")
		}
	}

	refused("payments-9")
	if fs, _ := store.Faults(ctx); len(fs) != 0 {
		t.Errorf("a refused fault was stored: %+v", fs)
	}
	if chs, _ := store.Changes(ctx, 10); len(chs) != 0 {
		t.Errorf("a refused fault is on the timeline: %+v", chs)
	}
	if code, eb := call(`{"service":"payments","instance":"payments-1","kind":"down"}`); code != 201 {
		t.Fatalf("a fault on payments-1, which runs: %d %+v", code, eb)
	}
	if a := awaitAnnouncement(t, anns); a.Key != "fault payments-1" { // the first: nothing refused was announced
		t.Errorf("announced %+v, want the fault on payments-1 first", a)
	}

	// The map names the instances the check reads.
	_, page := f.do(t, "GET", "/", "", nil)
	if n := testIDs(t, page)["node-payments"]; len(n) != 1 || attr(n[0], "data-instances") != "payments-1 payments-2" {
		t.Errorf("the map's payments box does not name payments-1 and payments-2")
	}

	stop2() // payments-2 stops: its connections close
	awaitInstances("payments-1")
	refused("payments-2")
	if code, eb := call(`{"service":"payments","instance":"payments-1","kind":"latency","value":"100ms"}`); code != 201 {
		t.Errorf("payments-1 still runs: %d %+v", code, eb)
	}
}

// Instance names come from the connection names the instances give themselves; the
// dashboard's own, the CLI's and a malformed one are no instance of anything.
func TestInstancesOfConnectionNames(t *testing.T) {
	got := instancesOf([]string{"payments-2/consume", "payments-1/consume", "payments-1/publish", "payments-2/publish",
		"orders-1/consume", "dashboard", "lab-cli", "payments-/consume", "paymentsx-1/consume", "gateway-host-42"},
		control.FaultServices)
	want := map[string][]string{"payments": {"payments-1", "payments-2"}, "orders": {"orders-1"}, "gateway": {"gateway-host-42"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("instancesOf = %v, want %v", got, want)
	}
}
