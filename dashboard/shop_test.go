package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/dashboard/views"
)

// fakeGW is a stand-in for the gateway's public API (the real one is exercised end to end
// in lab/e2e): it checks what the dashboard sends.
type fakeGW struct {
	*httptest.Server
	mu     sync.Mutex
	orders []map[string]any
	conns  map[net.Conn]bool // open connections
}

// placed returns the orders received so far.
func (g *fakeGW) placed() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.orders...)
}

// open is how many connections to the gateway are open. A connection is closed only
// once its last request has been read and handled.
func (g *fakeGW) open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

func fakeGateway(t *testing.T) *fakeGW {
	g := &fakeGW{conns: map[net.Conn]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		name, _, _ := strings.Cut(in["email"], "@")
		if (name != "alice" && name != "bob") || in["email"] != name+"@example.com" || in["password"] != name+"-secret" {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":{"code":"invalid_credentials","message":"wrong email or password"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"token":"jwt-` + name + `","expiresAt":"` + time.Now().Add(time.Hour).Format(time.RFC3339) + `"}`))
	})
	mux.HandleFunc("POST /api/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains([]string{"Bearer jwt-alice", "Bearer jwt-bob"}, r.Header.Get("Authorization")) || r.Header.Get("Idempotency-Key") == "" {
			w.WriteHeader(401)
			return
		}
		var in map[string]any
		_ = json.NewDecoder(r.Body).Decode(&in)
		g.mu.Lock()
		g.orders = append(g.orders, in)
		g.mu.Unlock()
		if strings.Contains(mustJSON(in), "LAB-NOPE") {
			w.WriteHeader(422)
			_, _ = w.Write([]byte(`{"error":{"code":"unknown_sku","message":"no product LAB-NOPE"}}`))
			return
		}
		w.WriteHeader(202)
		_, _ = w.Write([]byte(`{"orderId":"o-1","status":"pending","traceId":"0123456789abcdef0123456789abcdef"}`))
	})
	mux.HandleFunc("GET /api/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"orderId":"` + r.PathValue("id") + `","status":"cancelled","cancelReason":"payment_declined","steps":[]}`))
	})
	mux.HandleFunc("GET /api/v1/products", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"items":[{"sku":"LAB-MUG","name":"Lab mug","priceCents":1200,"currency":"EUR"}]}`))
	})
	g.Server = httptest.NewUnstartedServer(mux)
	g.Config.ConnState = func(c net.Conn, st http.ConnState) {
		g.mu.Lock()
		defer g.mu.Unlock()
		switch st {
		case http.StateNew:
			g.conns[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(g.conns, c)
		}
	}
	g.Start()
	t.Cleanup(g.Close)
	return g
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestShopThroughTheGateway(t *testing.T) {
	t.Parallel()
	gw := fakeGateway(t)
	placed := gw.placed
	f := newFixture(t, map[string]string{"GATEWAY_URL": gw.URL, "PROMETHEUS_URL": closedURL(t)}, Sources{}, nil)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	post := func(path, body string) (int, string) {
		req, _ := http.NewRequest("POST", f.ts.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", f.ts.URL)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// The page lists the catalog as the gateway returns it, and no password.
	_, page := f.do(t, "GET", "/shop", "", nil)
	if !strings.Contains(page, "LAB-MUG") || strings.Contains(page, "secret") {
		t.Error("shop page: catalog missing or a password rendered")
	}
	order := `{"sku":"LAB-MUG","qty":1,"card":"declined","country":"XX"}`
	if code, body := post("/api/shop/orders", order); code != 401 || !strings.Contains(body, "not_logged_in") {
		t.Errorf("order before login: %d %s", code, body)
	}
	if code, body := post("/api/shop/login", `{"email":"mallory@example.com"}`); code != 400 {
		t.Errorf("unknown user: %d %s", code, body)
	}
	code, body := post("/api/shop/login", `{"email":"alice@example.com"}`)
	if code != 200 || strings.Contains(body, "jwt-alice") {
		t.Fatalf("login: %d %s (the token must stay on the server)", code, body)
	}
	code, body = post("/api/shop/orders", order)
	if code != 202 || !strings.Contains(body, `"orderId":"o-1"`) || !strings.Contains(body, `"traceId"`) {
		t.Fatalf("order: %d %s", code, body)
	}
	got := placed()
	if len(got) != 1 || !strings.Contains(mustJSON(got[0]), `"card":"4000 0000 0000 0002"`) || !strings.Contains(mustJSON(got[0]), `"country":"XX"`) {
		t.Errorf("the gateway got %v", got)
	}
	// Bad input is ours to refuse; the gateway's 4xx passes through.
	if code, _ := post("/api/shop/orders", `{"sku":"LAB-MUG","qty":1,"card":"stolen","country":"DE"}`); code != 400 {
		t.Errorf("bad card: %d", code)
	}
	if code, body := post("/api/shop/orders", `{"sku":"LAB-NOPE","qty":1,"card":"ok","country":"DE"}`); code != 422 || !strings.Contains(body, "unknown_sku") {
		t.Errorf("unknown SKU: %d %s", code, body)
	}
	req, _ := http.NewRequest("GET", f.ts.URL+"/api/shop/orders/o-1", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&o)
	resp.Body.Close()
	if o["status"] != "cancelled" {
		t.Errorf("order status %v", o)
	}
}

func TestTrafficStartsStopsAndIsBounded(t *testing.T) {
	t.Parallel()
	gw := fakeGateway(t)
	f := newFixture(t, map[string]string{"GATEWAY_URL": gw.URL, "PROMETHEUS_URL": closedURL(t)}, Sources{}, nil)
	origin := map[string]string{"Origin": f.ts.URL}
	for _, bad := range []string{`{"rate":0}`, `{"rate":1000}`, `{"rate":1,"minutes":60}`} {
		if resp, _ := f.do(t, "POST", "/api/lab/traffic", bad, origin); resp.StatusCode != 400 {
			t.Errorf("%s: %d", bad, resp.StatusCode)
		}
	}
	// Ten minutes, the longest allowed: within the test, only stop can end this traffic.
	resp, body := f.do(t, "POST", "/api/lab/traffic", `{"rate":20,"minutes":10}`, origin)
	if resp.StatusCode != 200 || !strings.Contains(body, `"running":true`) {
		t.Fatalf("start: %d %s", resp.StatusCode, body)
	}
	for end := time.Now().Add(time.Minute); len(gw.placed()) < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no traffic reached the gateway")
		}
	}
	resp, body = f.do(t, "POST", "/api/lab/traffic/stop", "", origin)
	if resp.StatusCode != 200 || !strings.Contains(body, `"running":false`) {
		t.Fatalf("stop: %d %s", resp.StatusCode, body)
	}
	// The generator announces its end (a third "traffic" broadcast, after start's and
	// stop's) once its loop has returned and every order it had in flight is done.
	for end := time.Now().Add(time.Minute); len(f.hub.of("traffic")) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("traffic goes on after stop: the generator has not ended a minute later (broadcasts %v)", f.hub.of("traffic"))
		}
	}
	// An order given up on at stop may still be on its way to the gateway. Once the
	// dashboard has let go of its idle connections and the gateway has closed every
	// connection, it has handled all that was ever sent to it.
	f.srv.gateway.http.CloseIdleConnections()
	for end := time.Now().Add(time.Minute); gw.open() > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d connections to the gateway still open a minute after the traffic ended", gw.open())
		}
	}
	n, st := len(gw.placed()), f.srv.traffic.state()
	if st.Running || st.Placed+st.Failed == 0 {
		t.Errorf("state after the end: %+v", st)
	}
	// Nothing runs that could place an order; a generator that did not really end
	// (20 orders/s) would show here.
	time.Sleep(300 * time.Millisecond)
	if got := len(gw.placed()); got != n || gw.open() != 0 || f.srv.traffic.state() != st {
		t.Errorf("traffic goes on after stop: %d orders, then %d; state %+v, then %+v", n, got, st, f.srv.traffic.state())
	}
	msgs := f.hub.of("traffic")
	for i, m := range msgs {
		var s views.TrafficState
		if err := json.Unmarshal(m.Data, &s); err != nil || s.Running != (i == 0) {
			t.Errorf("traffic broadcast %d of %d: %s (%v); want the start's running, the others not", i, len(msgs), m.Data, err)
		}
	}
}
