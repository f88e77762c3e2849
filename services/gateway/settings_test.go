package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// The lab's settings applied live, in-process: a gateway whose settings snapshot the test
// sets (what the watcher hands it in a lab; TestSettings in lab/e2e goes through the real
// store and announcement), in front of real HTTP upstreams the test controls.

// liveSettings is a settings snapshot the test changes, as the watcher would.
type liveSettings struct {
	mu  sync.Mutex
	cur control.Settings
}

func (l *liveSettings) get() control.Settings {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

func (l *liveSettings) set(t *testing.T, key, value string) {
	t.Helper()
	v, err := control.Validate(key, value)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	values := map[string]string{}
	for k, v := range l.cur.Values {
		values[k] = v
	}
	values[key] = v
	l.cur = control.Settings{Values: values, Revision: l.cur.Revision + 1}
}

// fakeUpstream is every upstream of the gateway at once: it counts calls and answers as
// told — "fail" 500, "ok" 200 with an empty list, "slow" only once released (or when the
// gateway gives up).
type fakeUpstream struct {
	url      string
	calls    atomic.Int64
	mode     atomic.Value // string
	arrived  chan string  // paths of calls, as they arrive
	release  chan struct{}
	released sync.Once
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	u := &fakeUpstream{arrived: make(chan string, 100), release: make(chan struct{})}
	u.mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.calls.Add(1)
		select {
		case u.arrived <- r.URL.Path:
		default:
		}
		switch u.mode.Load().(string) {
		case "fail":
			http.Error(w, `{"error":{"code":"internal","message":"down"}}`, http.StatusInternalServerError)
			return
		case "slow":
			select {
			case <-u.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"items":[]}`)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(u.unblock) // before srv.Close: a blocked handler would hold Close up
	u.url = srv.URL
	return u
}

func (u *fakeUpstream) unblock() { u.released.Do(func() { close(u.release) }) }

// liveGateway starts a gateway (its whole HTTP surface, on a real listener) over up,
// following ls.
func liveGateway(t *testing.T, up *fakeUpstream, cfg Config) (string, *liveSettings) {
	t.Helper()
	cfg.UsersURL, cfg.CatalogURL, cfg.OrdersURL = up.url, up.url, up.url
	if cfg.UpstreamTimeout == 0 {
		cfg.UpstreamTimeout = time.Minute
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures, cfg.BreakerOpenFor = 5, 10*time.Second
	}
	ls := &liveSettings{cur: control.Defaults()}
	g := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	g.Follow(ls.get)
	mux := http.NewServeMux()
	g.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, ls
}

func breakerStates(t *testing.T, gw string) map[string]string {
	t.Helper()
	var states map[string]string
	do(t, "GET", gw+"/internal/breakers", "", nil, nil).decode(t, &states)
	return states
}

// TestBreakerSettingsLive: gateway.breaker.failures and .open_for replace the
// environment's at the next call (the breaker is rebuilt, closed); disabled, every call
// reaches the upstream however often it fails.
func TestBreakerSettingsLive(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	gw, ls := liveGateway(t, up, Config{})
	ls.set(t, control.HTTPRetries, "0") // one call, one failure
	ls.set(t, control.GatewayBreakerFailures, "2")
	ls.set(t, control.GatewayBreakerOpenFor, "1m")
	up.mode.Store("fail")
	products := func() answer { return do(t, "GET", gw+"/api/v1/products", "", nil, nil) }
	for i := range 2 {
		if a := products(); a.Status != 502 {
			t.Fatalf("failure %d: %d %s", i+1, a.Status, a.Body)
		}
	}
	calls := up.calls.Load()
	a := products()
	if code, _ := a.errorCode(); a.Status != 503 || code != "upstream_unavailable" || a.Header.Get("Retry-After") != "60" {
		t.Fatalf("after 2 failures (gateway.breaker.failures=2): %d %s Retry-After=%q", a.Status, a.Body, a.Header.Get("Retry-After"))
	}
	if n := up.calls.Load(); n != calls || calls != 2 {
		t.Fatalf("calls: %d before the open breaker, %d after; want 2 and 2", calls, n)
	}
	if s := breakerStates(t, gw); s["catalog"] != "open" {
		t.Fatalf("breakers %v", s)
	}

	// A change rebuilds the breaker, closed: three failures now.
	ls.set(t, control.GatewayBreakerFailures, "3")
	if s := breakerStates(t, gw); s["catalog"] != "closed" {
		t.Fatalf("after the change: breakers %v", s)
	}
	for i := range 3 {
		if a := products(); a.Status != 502 {
			t.Fatalf("failure %d under failures=3: %d %s", i+1, a.Status, a.Body)
		}
	}
	if a := products(); a.Status != 503 {
		t.Fatalf("after 3 failures: %d %s", a.Status, a.Body)
	}

	// Disabled: straight through, exported as closed.
	ls.set(t, control.GatewayBreakerEnabled, "false")
	calls = up.calls.Load()
	for i := range 10 {
		if a := products(); a.Status != 502 {
			t.Fatalf("breaker off, call %d: %d %s", i+1, a.Status, a.Body)
		}
	}
	if n := up.calls.Load() - calls; n != 10 {
		t.Fatalf("breaker off: %d of 10 calls reached the upstream", n)
	}
	if s := breakerStates(t, gw); s["catalog"] != "closed" {
		t.Fatalf("breaker off: breakers %v", s)
	}

	// http.retries: a failed GET is tried 1+retries times; a POST without an
	// Idempotency-Key once, whatever the setting.
	ls.set(t, control.HTTPRetries, "2")
	calls = up.calls.Load()
	if a := products(); a.Status != 502 {
		t.Fatalf("retried GET: %d %s", a.Status, a.Body)
	}
	if n := up.calls.Load() - calls; n != 3 {
		t.Fatalf("a failing GET with http.retries=2 was sent %d times, want 3", n)
	}
	calls = up.calls.Load()
	body := map[string]string{"email": "r@example.com", "name": "R", "password": "long-enough-secret"}
	if a := do(t, "POST", gw+"/api/v1/users", "", body, nil); a.Status != 502 {
		t.Fatalf("POST: %d %s", a.Status, a.Body)
	}
	if n := up.calls.Load() - calls; n != 1 {
		t.Fatalf("a failing POST was sent %d times, want once", n)
	}
}

// TestHTTPTimeoutSettingLive: http.timeout bounds each call from the next one on; a call
// that outlasts it is answered 504 naming the upstream and the bound, not left to hang.
func TestHTTPTimeoutSettingLive(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	gw, ls := liveGateway(t, up, Config{UpstreamTimeout: time.Minute})
	ls.set(t, control.HTTPRetries, "0")
	ls.set(t, control.HTTPTimeout, "150ms")
	up.mode.Store("slow")
	start := time.Now()
	a := doWith(t, &http.Client{Timeout: patience}, "GET", gw+"/api/v1/products", "", nil, nil)
	took := time.Since(start)
	code, msg := a.errorCode()
	if a.Status != 504 || code != "gateway_timeout" || !strings.Contains(msg, "catalog") || !strings.Contains(msg, "150ms") {
		t.Fatalf("slow catalog under http.timeout=150ms: %d %s", a.Status, a.Body)
	}
	if took < 150*time.Millisecond {
		t.Fatalf("answered after %s, before the 150ms timeout", took)
	}

	// Raised: the next call waits for the slow upstream, which answers once it has the
	// call (and the test has seen it arrive).
	ls.set(t, control.HTTPTimeout, "30s")
	done := make(chan answer, 1)
	go func() {
		resp, err := (&http.Client{Timeout: patience}).Get(gw + "/api/v1/products/LAB-SLOW")
		if err != nil {
			done <- answer{Status: -1, Body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- answer{Status: resp.StatusCode, Body: b}
	}()
	deadline := time.After(patience)
	for seen := false; !seen; {
		select {
		case p := <-up.arrived:
			seen = p == "/products/LAB-SLOW"
		case <-deadline:
			t.Fatal("the call under http.timeout=30s never reached the upstream")
		}
	}
	time.Sleep(200 * time.Millisecond) // past the old 150ms bound, on purpose: the subject
	up.unblock()
	if a := <-done; a.Status != 200 {
		t.Fatalf("under http.timeout=30s: %d %s", a.Status, a.Body)
	}
}

// TestRateLimitSettingsLive: gateway.rate_limit.rps switches limiting on and off and
// retunes the buckets while the gateway runs (its environment: off, as in `lab bench`).
func TestRateLimitSettingsLive(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	gw, ls := liveGateway(t, up, Config{RateLimitRPS: 0, RateLimitBurst: 1})
	openapi := func() answer { return do(t, "GET", gw+"/api/v1/openapi.json", "", nil, nil) }
	for i := range 20 {
		if a := openapi(); a.Status != 200 {
			t.Fatalf("RATE_LIMIT_RPS=0, request %d: %d", i+1, a.Status)
		}
	}
	// One token per 100 s: no refill during the test, the burst decides.
	ls.set(t, control.GatewayRateLimitRPS, "0.01")
	ls.set(t, control.GatewayRateLimitBurst, "2")
	for i := range 3 {
		a := openapi()
		if i < 2 && a.Status != 200 {
			t.Fatalf("within the burst, request %d: %d", i+1, a.Status)
		}
		if i == 2 {
			ra, err := strconv.Atoi(a.Header.Get("Retry-After"))
			if code, _ := a.errorCode(); a.Status != 429 || code != "rate_limited" || err != nil || ra < 1 || ra > 100 {
				t.Fatalf("over the burst: %d %s Retry-After=%q", a.Status, a.Body, a.Header.Get("Retry-After"))
			}
		}
	}
	ls.set(t, control.GatewayRateLimitRPS, "0")
	for i := range 20 {
		if a := openapi(); a.Status != 200 {
			t.Fatalf("gateway.rate_limit.rps=0, request %d: %d", i+1, a.Status)
		}
	}
}

// TestLimiterRetunesExistingBuckets: a new rate applies to the buckets clients already
// have (SetLimitAt/SetBurstAt), from the moment of the change on.
func TestLimiterRetunesExistingBuckets(t *testing.T) {
	t.Parallel()
	rps, burst := 0.01, 1
	l := newLimiter(func() (float64, int) { return rps, burst })
	t0 := time.Now()
	if ok, _ := l.allow("a", t0); !ok {
		t.Fatal("first request refused")
	}
	if ok, wait := l.allow("a", t0); ok || wait < 90*time.Second {
		t.Fatalf("at 0.01/s: ok=%v wait=%s, want a refusal for about 100s", ok, wait)
	}
	rps = 10
	t1 := t0.Add(time.Millisecond)
	ok, wait := l.allow("a", t1)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("at 10/s: ok=%v wait=%s, want a refusal for at most 100ms", ok, wait)
	}
	if ok, _ := l.allow("a", t1.Add(wait+time.Millisecond)); !ok {
		t.Fatalf("refused %s later, when the new rate had refilled a token", wait)
	}
	// A bigger bucket keeps the tokens it had at the change and fills up to its new size.
	burst = 3
	l.allow("a", t1.Add(time.Second))
	t2 := t1.Add(time.Hour) // long enough to refill any bucket
	for i := range 3 {
		if ok, _ := l.allow("a", t2); !ok {
			t.Fatalf("burst 3: request %d refused", i+1)
		}
	}
	if ok, _ := l.allow("a", t2); ok {
		t.Fatal("burst 3: the fourth request at once was allowed")
	}
}
