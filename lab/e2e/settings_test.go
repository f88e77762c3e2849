package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/services/platform/control"
)

// TestSettingsLive: the gateway's and the outbound-call settings, and notifications.mode,
// each changed on a running lab the way `lab settings` changes it (stored, announced,
// awaited in every instance's lab_setting_info) and shown by its effect from outside.
// One lab, the checks one after the other: each changes settings (and stops services),
// so they share no lab with other tests, and each puts back what it changed.
func TestSettingsLive(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	for _, tc := range []struct {
		name string
		test func(*testing.T, *lab)
	}{
		{"RateLimit", testRateLimitSetting},
		{"Breaker", testBreakerSettings},
		{"HTTPTimeout", testHTTPTimeoutSetting},
		{"NotificationsMode", testNotificationsMode},
		{"TimeoutBelowInjectedLatency", testTimeoutBelowInjectedLatency},
		{"ErrorRateOpensBreaker", testErrorRateOpensBreaker},
		{"NotificationsModeUnderLatency", testNotificationsModeUnderLatency},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, l) })
	}
}

// rawAnswer is an answer with its headers (client.do keeps none).
type rawAnswer struct {
	status int
	header http.Header
	code   string // error code, if any
	msg    string
}

func rawCall(t *testing.T, method, url string) rawAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(raw, &e)
	return rawAnswer{status: resp.StatusCode, header: resp.Header, code: e.Error.Code, msg: e.Error.Message}
}

// logged reports whether some service of the lab logged a line containing every part.
func (l *lab) logged(parts ...string) bool {
	for _, line := range strings.Split(l.logs.Tail(4<<20), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// startStopped starts again a service stopped with l.sup.Stop, as Launch started it,
// and waits until it is ready.
func (l *lab) startStopped(t *testing.T, name string) {
	t.Helper()
	s, ok := stack.Find(name)
	if !ok {
		t.Fatalf("no service %s", name)
	}
	id := name + "-1"
	env, err := l.cfg.Env(s, id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = l.sup.Start(ctx, supervisor.Proc{Name: name, Instance: id, Path: filepath.Join(binaries(t), name),
		Env: env, HealthURL: l.cfg.URL(s) + "/readyz"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.sup.WaitHealthy(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// gateway.rate_limit.rps=5: a client sending faster than 5 a second gets 429 with
// Retry-After; rps=0: none, however fast.
func testRateLimitSetting(t *testing.T, l *lab) {
	url := l.api.base + "/api/v1/openapi.json" // no upstream: only the limiter decides
	l.set(control.GatewayRateLimitRPS, "5")
	l.set(control.GatewayRateLimitBurst, "5")
	limited := false
	for i := 0; i < 500 && !limited; i++ { // 5 a second and 5 at once: a few dozen at most
		a := rawCall(t, "GET", url)
		switch a.status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			limited = true
			if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || a.code != "rate_limited" {
				t.Fatalf("429 %s with Retry-After %q", a.code, a.header.Get("Retry-After"))
			}
		default:
			t.Fatalf("request %d: %d %s", i+1, a.status, a.msg)
		}
	}
	if !limited {
		t.Fatal("500 requests as fast as they go, never a 429 under gateway.rate_limit.rps=5")
	}
	l.set(control.GatewayRateLimitRPS, "0")
	for i := range 100 {
		if a := rawCall(t, "GET", url); a.status != http.StatusOK {
			t.Fatalf("gateway.rate_limit.rps=0, request %d: %d %s %s", i+1, a.status, a.code, a.msg)
		}
	}
	l.set(control.GatewayRateLimitRPS, control.FromEnv)
	l.set(control.GatewayRateLimitBurst, control.FromEnv)
}

// gateway.breaker.failures=2, open_for=2s: with catalog stopped the breaker opens after
// two failures (circuit_breaker_state 2), the gateway answers 503 without trying, and
// once catalog is back a trial call after the 2 s closes it again.
func testBreakerSettings(t *testing.T, l *lab) {
	products := l.api.base + "/api/v1/products"
	l.set(control.HTTPRetries, "0")
	l.set(control.GatewayBreakerFailures, "2")
	l.set(control.GatewayBreakerOpenFor, "2s")
	if err := l.sup.Stop("catalog"); err != nil {
		t.Fatal(err)
	}
	state := func() float64 { return l.metric(t, "gateway", "circuit_breaker_state", `upstream="catalog"`) }
	for i := 0; state() != 2; i++ {
		if i == 2 {
			t.Fatalf("after 2 failed calls to a stopped catalog: breaker state %v, want 2 (open)", state())
		}
		if a := rawCall(t, "GET", products); a.status != http.StatusBadGateway {
			t.Fatalf("catalog stopped, call %d: %d %s %s", i+1, a.status, a.code, a.msg)
		}
	}
	a := rawCall(t, "GET", products)
	if a.status != http.StatusServiceUnavailable || a.code != "upstream_unavailable" || a.header.Get("Retry-After") != "2" {
		t.Fatalf("open breaker: %d %s %q Retry-After=%q", a.status, a.code, a.msg, a.header.Get("Retry-After"))
	}
	l.startStopped(t, "catalog")
	waitFor(t, 2*time.Minute, "GET /api/v1/products answered 200 after catalog came back", func() bool {
		return rawCall(t, "GET", products).status == http.StatusOK
	})
	if s := state(); s != 0 {
		t.Fatalf("breaker state %v after a successful call, want 0 (closed)", s)
	}
	l.set(control.GatewayBreakerFailures, control.FromEnv)
	l.set(control.GatewayBreakerOpenFor, control.FromEnv)
}

// http.timeout=1s with catalog frozen (SIGSTOP: its port still accepts connections, and
// nothing answers): the gateway gives up after the second and answers 504 naming catalog
// and the bound.
func testHTTPTimeoutSetting(t *testing.T, l *lab) {
	products := l.api.base + "/api/v1/products"
	l.set(control.HTTPRetries, "0")
	l.set(control.HTTPTimeout, "1s")
	pid := l.sup.PID("catalog")
	if pid == 0 {
		t.Fatal("catalog is not running")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw) // before the lab is stopped (cleanups run last-in first-out)
	start := time.Now()
	a := rawCall(t, "GET", products)
	took := time.Since(start)
	thaw()
	if a.status != http.StatusGatewayTimeout || a.code != "gateway_timeout" || !strings.Contains(a.msg, "catalog") || !strings.Contains(a.msg, "1s") {
		t.Fatalf("frozen catalog under http.timeout=1s: %d %s %q", a.status, a.code, a.msg)
	}
	if took < time.Second {
		t.Fatalf("answered after %s, before the 1s timeout", took)
	}
	waitFor(t, 2*time.Minute, "GET /api/v1/products answered 200 after catalog was thawed", func() bool {
		return rawCall(t, "GET", products).status == http.StatusOK
	})
	l.set(control.HTTPTimeout, control.FromEnv)
	l.set(control.HTTPRetries, control.FromEnv)
}

// notifications.mode=sync: with notifications stopped an order cannot be confirmed (the
// outcome is retried; the order stays pending) and it confirms once notifications is
// back, with one email, the wait showing in saga_duration_seconds. async: orders confirm
// while notifications is down, and the email follows when it is back.
func testNotificationsMode(t *testing.T, l *lab) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	token := l.api.register(t, "settings")
	notifications := l.serviceURL("notifications")
	emails := func(id string) int {
		var out struct{ Items []struct{ Kind string } }
		if err := getJSON(ctx, notifications+"/notifications?orderId="+id, &out); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, it := range out.Items {
			if it.Kind == "order_confirmed" {
				n++
			}
		}
		return n
	}
	durationSum := func() float64 {
		return l.metric(t, "orders", "saga_duration_seconds_sum", `outcome="confirmed"`)
	}

	l.set(control.NotificationsMode, control.NotifySync)
	before := durationSum()
	if err := l.sup.Stop("notifications"); err != nil {
		t.Fatal(err)
	}
	id, err := placeOne(l, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	placed := time.Now() // after the order was created: its saga is older than this
	waitFor(t, 2*time.Minute, "orders failing to confirm "+id+" without notifications", func() bool {
		return l.logged("order not confirmed yet", id)
	})
	// Logged after the failed call, and nothing confirms without a call that worked.
	if o, err := l.api.get(ctx, token, id); err != nil || o.Status != "pending" {
		t.Fatalf("sync, notifications down: order %+v %v, want pending", o, err)
	}
	down := time.Since(placed)
	l.startStopped(t, "notifications")
	o, err := l.api.waitFinal(ctx, token, id)
	if err != nil || o.Status != "confirmed" {
		t.Fatalf("sync, notifications back: order %+v %v", o, err)
	}
	waitFor(t, 2*time.Minute, "notifications skipping the order.confirmed of "+id, func() bool {
		return l.logged("confirmation already sent synchronously", id)
	})
	if n := emails(id); n != 1 {
		t.Fatalf("sync: %d confirmation emails for %s, want 1", n, id)
	}
	// The order waited for notifications: its saga lasted at least as long as that (the
	// metric is observed just after the commit that the order's status shows).
	waitFor(t, time.Minute, fmt.Sprintf("saga_duration_seconds{outcome=confirmed} to grow by the %.2fs notifications was down", down.Seconds()),
		func() bool { return durationSum()-before >= down.Seconds() })

	l.set(control.NotificationsMode, control.NotifyAsync)
	if err := l.sup.Stop("notifications"); err != nil {
		t.Fatal(err)
	}
	id2, err := placeOne(l, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := l.api.waitFinal(ctx, token, id2); err != nil || o.Status != "confirmed" {
		t.Fatalf("async, notifications down: order %+v %v, want confirmed", o, err)
	}
	l.startStopped(t, "notifications")
	waitFor(t, 2*time.Minute, fmt.Sprintf("the email of %s once notifications is back", id2), func() bool { return emails(id2) == 1 })
}

// http.timeout below a latency fault on catalog: the gateway's call fails fast with a
// clear error naming the upstream and the bound, instead of waiting out the delay; once
// the fault is cleared, the same call answers.
func testTimeoutBelowInjectedLatency(t *testing.T, l *lab) {
	products := l.api.base + "/api/v1/products"
	plane := l.faultPlane(t)
	l.set(control.HTTPRetries, "0")
	l.set(control.HTTPTimeout, "300ms")
	addFault(t, plane, control.FaultSpec{Service: "catalog", Kind: control.FaultLatency, Value: "3s", On: control.OnHTTP, For: "5m"})
	waitFor(t, time.Minute, "catalog exporting its latency fault", func() bool { return l.faultActive("catalog", control.FaultLatency) })
	start := time.Now()
	a := rawCall(t, "GET", products)
	took := time.Since(start)
	if a.status != http.StatusGatewayTimeout || !strings.Contains(a.msg, "catalog") || !strings.Contains(a.msg, "300ms") {
		t.Fatalf("catalog 3s slow under http.timeout=300ms: %d %s %q", a.status, a.code, a.msg)
	}
	if took < 300*time.Millisecond {
		t.Fatalf("answered after %s, before the 300ms timeout", took)
	}
	clearFaults(t, plane)
	waitFor(t, 2*time.Minute, "GET /api/v1/products answered 200 once the fault was cleared", func() bool {
		return rawCall(t, "GET", products).status == http.StatusOK
	})
	l.set(control.HTTPTimeout, control.FromEnv)
	l.set(control.HTTPRetries, control.FromEnv)
}

// notifications.mode under a latency fault on notifications' HTTP: in sync mode the
// confirmation waits for the slow call (the order reads confirmed no sooner than the
// delay after it was placed); in async mode orders never calls it, so the confirmation
// does not wait for it (notifications' POST /notify count does not move).
func testNotificationsModeUnderLatency(t *testing.T, l *lab) {
	const delay = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	token := l.api.register(t, "slow-notify")
	plane := l.faultPlane(t)
	notifyCalls := func() float64 {
		return l.metric(t, "notifications", "http_server_requests_total", `route="/notify"`, `method="POST"`)
	}
	addFault(t, plane, control.FaultSpec{Service: "notifications", Kind: control.FaultLatency, Value: delay.String(), On: control.OnHTTP, For: "5m"})
	waitFor(t, time.Minute, "notifications exporting its latency fault", func() bool { return l.faultActive("notifications", control.FaultLatency) })
	l.set(control.NotificationsMode, control.NotifySync)
	calls := notifyCalls()
	placed := time.Now()
	id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := l.api.waitFinal(ctx, token, id)
	if err != nil || o.Status != "confirmed" {
		t.Fatalf("sync, slow notifications: %+v %v", o, err)
	}
	// The confirmation commits after the call returns: the order reads confirmed no
	// sooner than the delay after it was placed. (Its order/confirmed step is written
	// in that transaction before the call, so its timestamp does not show the wait.)
	if d := time.Since(placed); d < delay {
		t.Errorf("sync: the order read confirmed %s after it was placed, less than the %s notifications' call was delayed", d, delay)
	}
	if notifyCalls() <= calls {
		t.Errorf("sync: orders did not call POST /notify")
	}

	l.set(control.NotificationsMode, control.NotifyAsync)
	calls = notifyCalls()
	id2, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := l.api.waitFinal(ctx, token, id2); err != nil || o.Status != "confirmed" {
		t.Fatalf("async, slow notifications: %+v %v", o, err)
	}
	if got := notifyCalls(); got != calls {
		t.Errorf("async: POST /notify was called %v times during the confirmation, want none", got-calls)
	}
	clearFaults(t, plane)
}

// error_rate=1 on catalog's HTTP: the gateway's breaker opens (circuit_breaker_state 2)
// and answers 503 without calling; once the fault is cleared and open_for has passed it
// is half-open (1), and the first call that succeeds closes it (0).
func testErrorRateOpensBreaker(t *testing.T, l *lab) {
	products := l.api.base + "/api/v1/products"
	plane := l.faultPlane(t)
	l.set(control.HTTPRetries, "0")
	l.set(control.GatewayBreakerFailures, "2")
	l.set(control.GatewayBreakerOpenFor, "2s")
	addFault(t, plane, control.FaultSpec{Service: "catalog", Kind: control.FaultErrorRate, Value: "1", On: control.OnHTTP, For: "5m"})
	waitFor(t, time.Minute, "catalog exporting its error_rate fault", func() bool { return l.faultActive("catalog", control.FaultErrorRate) })
	state := func() float64 { return l.metric(t, "gateway", "circuit_breaker_state", `upstream="catalog"`) }
	for i := 0; state() != 2; i++ {
		if i == 2 {
			t.Fatalf("after 2 calls answered 500 by catalog: breaker state %v, want 2 (open)", state())
		}
		if a := rawCall(t, "GET", products); a.status != http.StatusBadGateway {
			t.Fatalf("catalog error_rate=1, call %d: %d %s %s", i+1, a.status, a.code, a.msg)
		}
	}
	if a := rawCall(t, "GET", products); a.status != http.StatusServiceUnavailable || a.code != "upstream_unavailable" {
		t.Fatalf("open breaker: %d %s %q", a.status, a.code, a.msg)
	}
	clearFaults(t, plane)
	waitFor(t, time.Minute, "catalog's fault gone", func() bool { return !l.faultActive("catalog", control.FaultErrorRate) })
	// Reading the states (what the dashboard does) moves an open breaker whose open_for
	// has passed to half-open, without a call.
	breakers := l.api.base + "/internal/breakers"
	waitFor(t, time.Minute, "the catalog breaker half-open after open_for", func() bool {
		var states map[string]string
		return getJSON(context.Background(), breakers, &states) == nil && states["catalog"] == "half-open" && state() == 1
	})
	if a := rawCall(t, "GET", products); a.status != http.StatusOK {
		t.Fatalf("trial call through the half-open breaker: %d %s %s", a.status, a.code, a.msg)
	}
	if s := state(); s != 0 {
		t.Fatalf("breaker state %v after a successful trial call, want 0 (closed)", s)
	}
	l.set(control.GatewayBreakerFailures, control.FromEnv)
	l.set(control.GatewayBreakerOpenFor, control.FromEnv)
	l.set(control.HTTPRetries, control.FromEnv)
}
