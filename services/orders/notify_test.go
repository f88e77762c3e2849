package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// notificationsFront is the REAL notifications service behind a switch the test holds:
// up, calls pass through to it; down, they are answered 503 (and counted per order), as
// a notifications that is failing would answer.
type notificationsFront struct {
	url   string
	real  string
	logs  *testenv.LogBuffer // the real notifications'
	down  atomic.Bool
	mu    sync.Mutex
	calls map[string]int // POST /notify per order id, up or down
}

func startNotificationsFront(t *testing.T, env testenv.Env) *notificationsFront {
	t.Helper()
	bin := filepath.Join(testenv.Build(t, "./services/notifications"), "notifications")
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("notifications log tail:\n%s", tail(logs.String(), 3000))
		}
	})
	f := &notificationsFront{real: testenv.Exec(t, bin, env.Share(t, "notifications", true), logs).URL, logs: logs, calls: map[string]int{}}
	target, err := url.Parse(f.real)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/notify" {
			raw, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(raw)))
			var in contracts.OrderConfirmedData
			_ = json.Unmarshal(raw, &in)
			f.mu.Lock()
			f.calls[in.OrderID]++
			f.mu.Unlock()
		}
		if f.down.Load() {
			http.Error(w, `{"error":{"code":"unavailable","message":"notifications is down (test)"}}`, http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *notificationsFront) callsFor(orderID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[orderID]
}

// sent lists the real notifications' order_confirmed notifications of an order.
func (f *notificationsFront) sent(t *testing.T, orderID string) int {
	t.Helper()
	resp, err := http.Get(f.real + "/notifications?orderId=" + url.QueryEscape(orderID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Items []struct{ Kind string } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, it := range body.Items {
		if it.Kind == "order_confirmed" {
			n++
		}
	}
	return n
}

// awaitSetting waits until orders exports key=value (lab_setting_info).
func (l *lab) awaitSetting(key, value string) {
	l.t.Helper()
	want := fmt.Sprintf(`lab_setting_info{key=%q,value=%q} 1`, key, value)
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get(l.base + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("orders never applied %s=%s", key, value)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNotificationsSync: with notifications.mode=sync the customer's confirmation is
// part of confirming the order — while notifications fails, the order stays pending and
// the outcome is retried (the failure is transient: never dead-lettered); once it is
// back, the order confirms and the customer has exactly one email (the order.confirmed
// that follows sends no second one). Switched to async, live, orders confirms without
// calling notifications at all.
func TestNotificationsSync(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "orders", true)
	env["LOG_LEVEL"] = "info"
	testenv.SetLab(t, env["LAB_DATABASE_URL"], nil, control.SagaMode, contracts.ModeChoreography)
	testenv.SetLab(t, env["LAB_DATABASE_URL"], nil, control.NotificationsMode, control.NotifySync)
	env["CATALOG_URL"] = startCatalog(t, env)
	front := startNotificationsFront(t, env)
	env["NOTIFICATIONS_URL"] = front.url
	l := startLab(t, env)

	// confirmable places an order and brings it to its last step: the next reply,
	// shipment.scheduled, confirms it.
	confirmable := func(user string) (string, contracts.Checkout) {
		id := l.place(user, order(cardOK, "LAB-HOODIE", 1, "FR"), nil)
		checkout := placedCheckout(t, l.tap.await(t, id, 1, wait)[0]).Checkout
		for _, r := range []string{contracts.PaymentAuthorized, contracts.StockReserved} {
			before := len(l.get(user, id).Steps)
			l.reply(r, checkout, "", "")
			l.waitStep(user, id, before, r)
		}
		return id, checkout
	}

	front.down.Store(true)
	user := testenv.Name("u")
	id, checkout := confirmable(user)
	l.reply(contracts.ShipmentScheduled, checkout, "", "")
	// The broker redelivers the outcome while notifications answers 503: two calls at
	// least, and the order still pending (a confirmation commits only after a call that
	// worked, and none has).
	deadline := time.Now().Add(wait)
	for front.callsFor(id) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("orders called notifications %d time(s) for a retried confirmation, want 2 or more", front.callsFor(id))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if o := l.get(user, id); o.Status != statusPending {
		t.Fatalf("confirmed while notifications was down: %+v", o)
	}
	if n := l.tap.count(id, contracts.OrderConfirmed); n != 0 {
		t.Fatalf("order.confirmed emitted %d times while notifications was down", n)
	}
	l.waitLog(wait, "order not confirmed yet", id)

	front.down.Store(false)
	if o := l.waitFinal(user, id, wait); o.Status != statusConfirmed {
		t.Fatalf("after notifications came back: %+v", o)
	}
	l.tap.await(t, id, 2, wait) // order.placed, order.confirmed
	// The real notifications shares the vhost: it receives the order.confirmed too, and
	// sends nothing more for it.
	if !front.logs.AwaitLine(wait, "confirmation already sent synchronously", id) {
		t.Fatal("notifications never handled the order.confirmed that followed the call")
	}
	if n := front.sent(t, id); n != 1 {
		t.Fatalf("customer has %d confirmation emails, want 1", n)
	}

	// async, live: no call, and the order confirms while notifications is still down.
	testenv.SetLab(t, env["LAB_DATABASE_URL"], l.pub, control.NotificationsMode, control.NotifyAsync)
	l.awaitSetting(control.NotificationsMode, control.NotifyAsync)
	front.down.Store(true)
	id2, checkout2 := confirmable(user)
	l.reply(contracts.ShipmentScheduled, checkout2, "", "")
	if o := l.waitFinal(user, id2, wait); o.Status != statusConfirmed {
		t.Fatalf("async: %+v", o)
	}
	if n := front.callsFor(id2); n != 0 {
		t.Fatalf("async: orders called notifications %d time(s)", n)
	}
}
