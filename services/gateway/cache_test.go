package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// TestCacheSettingLive: with gateway.cache.ttl at 0s (the default) every product read
// reaches catalog; on, a repeated read does not (counted at the upstream), until the TTL
// has passed; an answer that is not a 200 is never kept; other routes never go through
// the cache.
func TestCacheSettingLive(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	gw, ls := liveGateway(t, up, Config{RateLimitRPS: 0, RateLimitBurst: 1})
	get := func(path string) answer { return do(t, "GET", gw+path, "", nil, nil) }
	reads := func(path string, n int) int64 {
		t.Helper()
		before := up.calls.Load()
		for range n {
			if a := get(path); a.Status != 200 {
				t.Fatalf("GET %s: %d %s", path, a.Status, a.Body)
			}
		}
		return up.calls.Load() - before
	}

	if n := reads("/api/v1/products", 3); n != 3 {
		t.Fatalf("cache off: 3 reads made %d upstream calls, want 3", n)
	}
	ls.set(t, control.GatewayCacheTTL, "1h")
	if n := reads("/api/v1/products", 5); n != 1 {
		t.Fatalf("ttl=1h: 5 reads made %d upstream calls, want 1 (the first)", n)
	}
	if a := get("/api/v1/products"); a.Header.Get("X-Cache") != "hit" {
		t.Fatalf("a repeated read: X-Cache %q, want hit", a.Header.Get("X-Cache"))
	}
	// Each SKU is an entry of its own.
	if n := reads("/api/v1/products/LAB-MUG", 2) + reads("/api/v1/products/LAB-PEN", 2); n != 2 {
		t.Fatalf("two SKUs read twice each: %d upstream calls, want 2", n)
	}
	// The orders routes are never cached.
	if got := up.calls.Load(); do(t, "GET", gw+"/api/v1/openapi.json", "", nil, nil).Status != 200 || up.calls.Load() != got {
		t.Fatal("openapi.json reached an upstream")
	}

	// A TTL change flushes (entries kept under the old TTL would outlive the new one),
	// and an entry expires after its TTL.
	ls.set(t, control.GatewayCacheTTL, "300ms")
	if n := reads("/api/v1/products", 2); n != 1 {
		t.Fatalf("after the TTL change: 2 reads made %d upstream calls, want 1", n)
	}
	time.Sleep(400 * time.Millisecond)
	if n := reads("/api/v1/products", 1); n != 1 {
		t.Fatalf("after the TTL passed: %d upstream calls, want 1", n)
	}

	// An upstream failure is not cached: the next read asks again.
	ls.set(t, control.GatewayCacheTTL, "1h")
	ls.set(t, control.HTTPRetries, "0")
	up.mode.Store("fail")
	before := up.calls.Load()
	for range 2 {
		if a := get("/api/v1/products/LAB-CAP"); a.Status != http.StatusBadGateway {
			t.Fatalf("failing upstream: %d %s", a.Status, a.Body)
		}
	}
	if n := up.calls.Load() - before; n != 2 {
		t.Fatalf("two reads of a failing upstream: %d calls, want 2 (a failure is never cached)", n)
	}

	ls.set(t, control.GatewayCacheTTL, "0s")
	up.mode.Store("ok")
	if n := reads("/api/v1/products", 2); n != 2 {
		t.Fatalf("cache off again: 2 reads made %d upstream calls, want 2", n)
	}
}

// TestCacheBounds: the cache never holds more than its entries and bytes allow, evicting
// the least recently used first, and its byte count follows what it holds.
func TestCacheBounds(t *testing.T) {
	t.Parallel()
	c := newResponseCache(func() time.Duration { return time.Hour }, nil)
	c.maxBytes = 400
	c.on()
	body := []byte(strings.Repeat("x", 100))
	for i := range 10 {
		c.put(fmt.Sprintf("/products/K%d", i), body, time.Hour, c.generation())
	}
	if n, b := c.size(); n != 4 || b != 400 {
		t.Fatalf("10 answers of 100 bytes in 400: %d entries, %d bytes; want 4, 400", n, b)
	}
	if _, ok := c.get("/products/K0"); ok {
		t.Fatal("the oldest entry survived")
	}
	if _, ok := c.get("/products/K9"); !ok {
		t.Fatal("the newest entry was evicted")
	}
	c.put("/products/K9", []byte("short"), time.Hour, c.generation()) // replacing an entry gives its bytes back
	if n, b := c.size(); n != 4 || b != 305 {
		t.Fatalf("after a replacement: %d entries, %d bytes; want 4, 305", n, b)
	}
	c.put("/products/huge", []byte(strings.Repeat("y", 101)), time.Hour, c.generation()) // > a quarter of the bytes
	if _, ok := c.get("/products/huge"); ok {
		t.Fatal("an answer larger than a quarter of the cache was kept")
	}
	c.invalidate("K9")
	if _, ok := c.get("/products/K9"); ok {
		t.Fatal("invalidate kept the product")
	}
}

// TestCacheDropsAnAnswerOlderThanAnInvalidation: a miss that asked catalog before a
// price change, and whose answer arrives after the change's event, must not be stored:
// it may hold the old price, and would be served for a whole TTL.
func TestCacheDropsAnAnswerOlderThanAnInvalidation(t *testing.T) {
	t.Parallel()
	c := newResponseCache(func() time.Duration { return time.Hour }, nil)
	c.on()
	gen := c.generation()   // the miss begins
	c.invalidate("LAB-MUG") // the event arrives while catalog answers
	c.put("/products/LAB-MUG", []byte(`{"priceCents":1200}`), time.Hour, gen)
	if _, ok := c.get("/products/LAB-MUG"); ok {
		t.Fatal("an answer read before the invalidation was stored")
	}
	c.put("/products/LAB-MUG", []byte(`{"priceCents":1500}`), time.Hour, c.generation())
	if b, ok := c.get("/products/LAB-MUG"); !ok || string(b) != `{"priceCents":1500}` {
		t.Fatalf("a fresh answer was not stored: %q %v", b, ok)
	}
}

// TestCacheInvalidatedByPriceChange runs the real catalog (with its outbox) and a real
// gateway process-wide, with gateway.cache.ttl=1h set through the lab's store: a
// repeated read is a hit that catalog never sees (its own request counter says so);
// changing the price on catalog's internal API emits product.price_changed, which
// drops the gateway's copies, so the next read shows the new price long before the TTL.
// Bad price changes are refused and announce nothing.
func TestCacheInvalidatedByPriceChange(t *testing.T) {
	t.Parallel()
	up := startUpstreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	store, err := control.OpenStore(ctx, up.env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	plane := &control.Plane{Store: store, Pub: testenv.Dial(t, up.env["AMQP_URL"]).Pub}
	if _, err := plane.Set(ctx, control.GatewayCacheTTL, "1h", "test"); err != nil {
		t.Fatal(err)
	}
	tap := testenv.Dial(t, up.env["AMQP_URL"]).Tap(t, contracts.ExchangeEvents, contracts.ProductPriceChanged)
	gw := startGateway(t, up, map[string]string{"INSTANCE_ID": "gateway-cache-test"})
	// The gateway's queue is bound: a change from now on reaches it.
	awaitQueue(t, up.env["AMQP_URL"], "gateway.cache.gateway-cache-test")

	price := func(path string) int64 {
		t.Helper()
		a := do(t, "GET", gw+path, "", nil, nil)
		if a.Status != 200 {
			t.Fatalf("GET %s: %d %s", path, a.Status, a.Body)
		}
		var p struct {
			PriceCents int64 `json:"priceCents"`
			Items      []struct {
				SKU        string `json:"sku"`
				PriceCents int64  `json:"priceCents"`
			} `json:"items"`
		}
		if err := json.Unmarshal(a.Body, &p); err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			if it.SKU == "LAB-MUG" {
				return it.PriceCents
			}
		}
		return p.PriceCents
	}
	catalogReads := func() float64 { return productReads(t, up.catalog) }

	if p := price("/api/v1/products/LAB-MUG"); p != 1200 {
		t.Fatalf("LAB-MUG costs %d, want the seeded 1200", p)
	}
	price("/api/v1/products")
	before := catalogReads()
	if before < 2 {
		t.Fatalf("catalog counted %v product reads after two misses: the counter is not read right", before)
	}
	for range 5 {
		price("/api/v1/products/LAB-MUG")
		price("/api/v1/products")
	}
	if after := catalogReads(); after != before {
		t.Fatalf("10 cached reads reached catalog %v times, want 0", after-before)
	}

	// Bad input: refused with the error shape, nothing changed, nothing announced.
	for _, tc := range []struct {
		sku, body string
		status    int
		code      string
	}{
		{"LAB-NOPE", `{"priceCents":100}`, 404, "not_found"},
		{"LAB-MUG", `{"priceCents":-1}`, 400, "invalid_price"},
		{"LAB-MUG", `{}`, 400, "invalid_price"},
		{"LAB-MUG", `{"priceCents":"cheap"}`, 400, ""},
	} {
		status, body := testenv.PutPrice(t, up.catalog, tc.sku, tc.body)
		a := answer{Status: status, Body: body}
		if code, msg := a.errorCode(); a.Status != tc.status || msg == "" || (tc.code != "" && code != tc.code) {
			t.Errorf("PUT %s price %s: %d %s; want %d %s", tc.sku, tc.body, a.Status, a.Body, tc.status, tc.code)
		}
	}

	testenv.SetPrice(t, up.catalog, "LAB-MUG", 1350)
	// The one event on the tap is the good change: the refusals announced nothing.
	select {
	case d := <-tap:
		env, err := contracts.Decode(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		var data contracts.ProductPriceChangedData
		if err := env.DecodeData(&data); err != nil {
			t.Fatal(err)
		}
		want := contracts.ProductPriceChangedData{SKU: "LAB-MUG", OldPriceCents: 1200, PriceCents: 1350, Currency: "EUR"}
		if data != want || env.Source != "catalog" || env.CorrelationID != "LAB-MUG" {
			t.Fatalf("product.price_changed: %+v %+v, want %+v", env, data, want)
		}
	case <-time.After(patience):
		t.Fatal("no product.price_changed within patience")
	}
	deadline := time.Now().Add(patience)
	for price("/api/v1/products/LAB-MUG") != 1350 || price("/api/v1/products") != 1350 {
		if time.Now().After(deadline) {
			t.Fatal("the gateway still serves the old price after product.price_changed (TTL 1h)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Fresh again, and cached again.
	before = catalogReads()
	price("/api/v1/products/LAB-MUG")
	if after := catalogReads(); after != before {
		t.Fatalf("the fresh answer was not cached: %v catalog reads", after-before)
	}
}

// productReads is catalog's count of product reads it served, from its own /metrics.
func productReads(t *testing.T, catalog string) float64 {
	t.Helper()
	resp, err := http.Get(catalog + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "http_server_requests_total{") || !strings.Contains(line, `method="GET"`) ||
			!strings.Contains(line, "/products") {
			continue
		}
		var v float64
		if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
			total += v
		}
	}
	return total
}

// awaitQueue waits until the broker has queue in amqpURL's vhost.
func awaitQueue(t *testing.T, amqpURL, queue string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		bs, _ := testenv.ExchangeBindings(amqpURL, contracts.ExchangeEvents)
		for _, b := range bs {
			if b.Destination == queue {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s not bound to %s within %s", queue, contracts.ExchangeEvents, patience)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
