package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"microlab/dashboard/ingest"
	"microlab/dashboard/views"
)

// grafanaHealth answers /api/health as Grafana does: 200 {"database": "ok"} when it
// can serve dashboards, 503 {"database": "failing"} when it cannot.
func grafanaHealth(ok bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/health" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"database":"failing","version":"12.3.0"}`)
			return
		}
		fmt.Fprint(w, `{"commit":"abc","database":"ok","version":"12.3.0"}`)
	})
}

// jaegerPage is a Jaeger query service's root: its UI's index.html (the element the
// real one mounts into), or the placeholder page a Jaeger built without the UI assets
// serves instead (jaeger's cmd/query/app/ui/placeholder, 200 and HTML too).
func jaegerPage(withUI bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if withUI {
			fmt.Fprint(w, `<!doctype html><html><head><title>Jaeger UI</title></head><body><div id="jaeger-ui-root"></div></body></html>`)
			return
		}
		fmt.Fprint(w, `<!DOCTYPE html><html><title>Test Page</title><body>
<h1>This is not the Jaeger UI you are looking for!</h1>
<p>This is a placeholder for the Jaeger UI home page. If you are seeing this, you are running a binary
that was not compiled with the UI assets.</p></body></html>`)
	})
}

// jaegerWithUI is the URL of a Jaeger whose UI answers.
func jaegerWithUI(t *testing.T) string {
	ts := httptest.NewServer(jaegerPage(true))
	t.Cleanup(ts.Close)
	return ts.URL
}

func hrefs(t *testing.T, page, testid string) []string {
	t.Helper()
	var out []string
	for _, n := range testIDs(t, page)[testid] {
		for _, a := range n.Attr {
			if a.Key == "href" {
				out = append(out, a.Val)
			}
		}
	}
	return out
}

// The metrics page links its panels to Grafana only while Grafana answers; otherwise
// it says, once, which of the three it is. The link base is the browser's address
// (GRAFANA_URL), the probe goes to the dashboard's (GRAFANA_HEALTH_URL).
func TestGrafanaLinksOnlyWhenItAnswers(t *testing.T) {
	t.Parallel()
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"orders"},"values":[[%d,"1"]]}]}}`, time.Now().Unix())
	}))
	defer prom.Close()
	up := httptest.NewServer(grafanaHealth(true))
	defer up.Close()
	failing := httptest.NewServer(grafanaHealth(false))
	defer failing.Close()
	notGrafana := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"status":"ok"}`) }))
	defer notGrafana.Close()
	closed := closedURL(t)

	for _, c := range []struct {
		name       string
		env        map[string]string
		links      bool
		state      string
		note       []string // what the note says (none when links)
		notInNote  string
		linkPrefix string
	}{
		{name: "answering", env: map[string]string{"GRAFANA_URL": "http://localhost:3000", "GRAFANA_HEALTH_URL": up.URL},
			links: true, linkPrefix: "http://localhost:3000/d/"},
		{name: "answering, one address", env: map[string]string{"GRAFANA_URL": up.URL},
			links: true, linkPrefix: up.URL + "/d/"},
		{name: "nothing listening", env: map[string]string{"GRAFANA_URL": "http://localhost:3000", "GRAFANA_HEALTH_URL": closed},
			state: views.UIDown, note: []string{"Grafana is not answering at " + closed + "/api/health", "connection refused", "no link until it does"}},
		{name: "database failing", env: map[string]string{"GRAFANA_URL": failing.URL},
			state: views.UIDown, note: []string{"Grafana is not answering at " + failing.URL, "HTTP 503"}},
		{name: "something else", env: map[string]string{"GRAFANA_URL": notGrafana.URL},
			state: views.UIDown, note: []string{"not as Grafana does"}},
		{name: "not configured", env: map[string]string{},
			state: views.UIAbsent, note: []string{"Grafana is not part of this lab (lab up runs none)", views.ComposeCommand, "to see these panels in Grafana"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"PROMETHEUS_URL": prom.URL, "RABBITMQ_MANAGEMENT_URL": closed}
			for k, v := range c.env {
				env[k] = v
			}
			f := newFixture(t, env, Sources{}, nil)
			f.srv.probeLinks(t.Context())
			for _, path := range []string{"/charts", "/charts/panels"} {
				_, page := f.do(t, "GET", path, "", nil)
				ids := testIDs(t, page)
				if len(ids["chart"]) == 0 {
					t.Fatalf("%s: no charts drawn (Prometheus answers)", path)
				}
				links := hrefs(t, page, "grafana-link")
				if !c.links {
					// Not even the link base is shown: only where the probe went.
					if len(links) != 0 || strings.Contains(page, "localhost:3000") {
						t.Errorf("%s: Grafana links %v while %s", path, links, c.state)
					}
					notes := ids["grafana-note"]
					if len(notes) != 1 {
						t.Fatalf("%s: %d grafana notes", path, len(notes))
					}
					got := nodeText(notes[0])
					for _, w := range c.note {
						if !strings.Contains(got, w) {
							t.Errorf("%s: note %q lacks %q", path, got, w)
						}
					}
					continue
				}
				if len(links) != len(panelDefs) || len(ids["grafana-note"]) != 0 {
					t.Errorf("%s: %d links for %d panels, %d notes", path, len(links), len(panelDefs), len(ids["grafana-note"]))
				}
				for _, l := range links {
					if !strings.HasPrefix(l, c.linkPrefix) {
						t.Errorf("%s: link %q, want it under %s", path, l, c.linkPrefix)
					}
				}
			}
		})
	}
}

// The trace page and GET /api/traces/{id} link to the trace in Jaeger's UI only while
// that UI answers. A Jaeger that answers with its no-UI placeholder does not count.
func TestJaegerLinksOnlyWhenTheUIAnswers(t *testing.T) {
	t.Parallel()
	id := "0123456789abcdef0123456789abcdef"
	traces := ingest.NewTraces(10, 100)
	traces.Add([]ingest.Span{{TraceID: id, SpanID: "a", Service: "gateway", Name: "POST /api/v1/orders", Kind: "server",
		Start: time.Now(), Duration: 20 * time.Millisecond}})
	withUI := httptest.NewServer(jaegerPage(true))
	defer withUI.Close()
	placeholder := httptest.NewServer(jaegerPage(false))
	defer placeholder.Close()
	closed := closedURL(t)

	for _, c := range []struct {
		name string
		env  map[string]string
		link string   // the href wanted; "" = none
		note []string // what is said instead
	}{
		{"answering", map[string]string{"JAEGER_URL": withUI.URL, "JAEGER_UI_URL": "http://localhost:16686"},
			"http://localhost:16686/trace/" + id, nil},
		{"built without its UI", map[string]string{"JAEGER_URL": placeholder.URL, "JAEGER_UI_URL": "http://localhost:16686"},
			"", []string{"Jaeger's UI is not answering at " + placeholder.URL, "this Jaeger was built without its UI"}},
		{"nothing listening", map[string]string{"JAEGER_URL": closed, "JAEGER_UI_URL": "http://localhost:16686"},
			"", []string{"Jaeger's UI is not answering at " + closed, "connection refused"}},
		{"not part of this lab", map[string]string{"JAEGER_URL": withUI.URL},
			"", []string{"Jaeger's UI is not part of this lab (lab up builds Jaeger without it)", views.ComposeCommand, "to open this trace in Jaeger"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"PROMETHEUS_URL": closed, "RABBITMQ_MANAGEMENT_URL": closed}
			for k, v := range c.env {
				env[k] = v
			}
			f := newFixture(t, env, Sources{Traces: traces}, nil)
			f.srv.probeLinks(t.Context())
			_, page := f.do(t, "GET", "/traces/"+id, "", nil)
			ids := testIDs(t, page)
			if len(ids["waterfall"]) != 1 {
				t.Fatal("no waterfall")
			}
			links := hrefs(t, page, "jaeger-link")
			_, body := f.do(t, "GET", "/api/traces/"+id, "", nil)
			var api struct {
				Jaeger     string `json:"jaeger"`
				JaegerNote string `json:"jaegerNote"`
			}
			if err := json.Unmarshal([]byte(body), &api); err != nil {
				t.Fatal(err)
			}
			if c.link != "" {
				if len(links) != 1 || links[0] != c.link || len(ids["jaeger-note"]) != 0 {
					t.Errorf("links %v (want %s), %d notes", links, c.link, len(ids["jaeger-note"]))
				}
				if api.Jaeger != c.link || api.JaegerNote != "" {
					t.Errorf("API: jaeger %q note %q", api.Jaeger, api.JaegerNote)
				}
				return
			}
			if len(links) != 0 || strings.Contains(page, "localhost:16686") {
				t.Errorf("Jaeger links %v while %s", links, c.name)
			}
			if len(ids["jaeger-note"]) != 1 {
				t.Fatalf("%d jaeger notes", len(ids["jaeger-note"]))
			}
			got := nodeText(ids["jaeger-note"][0])
			for _, w := range c.note {
				if !strings.Contains(got, w) {
					t.Errorf("note %q lacks %q", got, w)
				}
			}
			if api.Jaeger != "" || api.JaegerNote != got {
				t.Errorf("API: jaeger %q, note %q, want the page's %q", api.Jaeger, api.JaegerNote, got)
			}
		})
	}
}

// The state is re-probed in the background: a Grafana that starts answering after the
// dashboard gets its links within an interval, and loses them when it stops.
func TestLinksFollowTheProbe(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	grafana := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		grafanaHealth(healthy.Load()).ServeHTTP(w, r)
	}))
	defer grafana.Close()
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t), "GRAFANA_URL": grafana.URL}, Sources{}, nil)
	if st := f.srv.externals().Grafana.State; st != views.UIUnchecked {
		t.Fatalf("before any probe: %s, want %s", st, views.UIUnchecked)
	}
	go f.srv.watchLinks(t.Context(), 20*time.Millisecond)
	await := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for f.srv.externals().Grafana.State != want {
			if time.Now().After(deadline) {
				t.Fatalf("Grafana still %s, want %s", f.srv.externals().Grafana.State, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	await(views.UIDown)
	healthy.Store(true)
	await(views.UIUp)
	if g := f.srv.externals().Grafana; g.Link("/d/x") != grafana.URL+"/d/x" || g.Checked.IsZero() {
		t.Errorf("up: link %q, checked %v", g.Link("/d/x"), g.Checked)
	}
	healthy.Store(false)
	await(views.UIDown)
}

// An exercise's text names Jaeger's UI and Grafana by their compose addresses. Linked
// ([text](url) or <url>; a bare http://localhost:… is text already: GFM links only
// names with a dot), they are links only while the UI answers, and plain text saying
// why not otherwise.
func TestExerciseTextLinksToUIs(t *testing.T) {
	t.Parallel()
	src := "In compose mode, Jaeger (<http://localhost:16686>) shows it, and [Grafana](http://localhost:3000/d/x) charts it. " +
		"The [Saga view](http://localhost:8080/sagas) too."
	up := views.Externals{
		Jaeger:  views.UI{Name: "Jaeger's UI", Base: "http://localhost:16686", State: views.UIUp},
		Grafana: views.UI{Name: "Grafana", Base: "http://127.0.0.1:13000", State: views.UIUp},
	}
	if got := renderMarkdownFor(src, "", up); !strings.Contains(got, `<a href="http://localhost:16686">http://localhost:16686</a>`) ||
		!strings.Contains(got, `<a href="http://127.0.0.1:13000/d/x">Grafana</a>`) || !strings.Contains(got, `<a href="/sagas">`) {
		t.Errorf("UIs up: %s", got)
	}
	down := views.Externals{
		Jaeger:  views.UI{Name: "Jaeger's UI", State: views.UIAbsent},
		Grafana: views.UI{Name: "Grafana", Base: "http://localhost:3000", State: views.UIDown},
	}
	got := renderMarkdownFor(src, "", down)
	if strings.Contains(got, `href="http://localhost:16686`) || strings.Contains(got, `href="http://localhost:3000`) {
		t.Errorf("links to UIs that are not up: %s", got)
	}
	for _, want := range []string{"Jaeger (http://localhost:16686 (not part of this lab))", "Grafana (not answering) charts it", `<a href="/sagas">`} {
		if !strings.Contains(got, want) {
			t.Errorf("UIs not up: %s lacks %q", got, want)
		}
	}
}
