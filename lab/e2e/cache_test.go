package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// TestGatewayCache: with gateway.cache.ttl on, a repeated product read is answered by
// the gateway alone — its trace in Jaeger has the gateway's span, marked cache.hit=true,
// and nothing from catalog — and a price changed on catalog's internal API reaches the
// next read through product.price_changed, long before the 10-minute TTL.
func TestGatewayCache(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{tracing: true})
	l.set(control.GatewayCacheTTL, "10m0s")
	t.Cleanup(func() {
		testenv.SetPrice(t, l.serviceURL("catalog"), "LAB-PEN", 250)
		l.set(control.GatewayCacheTTL, "0s")
	})

	miss, price := readProduct(t, l, "LAB-PEN")
	if price != 250 {
		t.Fatalf("LAB-PEN costs %d, want the seeded 250", price)
	}
	hit, _ := readProduct(t, l, "LAB-PEN")
	// A later miss on another product: catalog exports its spans in order, so once this
	// one's catalog span is in Jaeger, a catalog span of the hit would be there too.
	after, _ := readProduct(t, l, "LAB-CAP")

	tr := awaitTrace(t, l.jaeger, miss, func(tr *jaegerTrace) bool { return len(tr.find("catalog", "")) > 0 })
	if len(tr.find("catalog", "")) == 0 {
		t.Fatalf("the first read (a miss) did not reach catalog: %s", describe(tr))
	}
	awaitTrace(t, l.jaeger, after, func(tr *jaegerTrace) bool { return len(tr.find("catalog", "")) > 0 })
	tr = awaitTrace(t, l.jaeger, hit, func(tr *jaegerTrace) bool { return len(tr.find("gateway", "")) > 0 })
	var marked bool
	for _, s := range tr.find("gateway", "") {
		marked = marked || s.tag("cache.hit") == "true"
	}
	if !marked || len(tr.find("catalog", "")) > 0 || len(tr.services()) != 1 {
		t.Fatalf("the repeated read: want one gateway span with cache.hit=true and nothing else, got %s", describe(tr))
	}
	if n := l.metric(t, "gateway", "gateway_cache_requests_total", `result="hit"`); n < 1 {
		t.Fatalf("gateway_cache_requests_total{result=\"hit\"} = %v after a hit", n)
	}

	// The price changes on catalog; the event drops the gateway's copy.
	testenv.SetPrice(t, l.serviceURL("catalog"), "LAB-PEN", 300)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, p := readProduct(t, l, "LAB-PEN"); p == 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("30 s after the price change the gateway still serves the old price (TTL 10m): product.price_changed did not invalidate")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readProduct reads a product through the gateway: the trace id of the answer
// (traceresponse) and its price.
func readProduct(t *testing.T, l *lab, sku string) (traceID string, priceCents int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.api.base+"/api/v1/products/"+sku, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct {
		PriceCents int64 `json:"priceCents"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/products/%s: %d %v", sku, resp.StatusCode, err)
	}
	parts := strings.Split(resp.Header.Get("traceresponse"), "-")
	if len(parts) != 4 {
		t.Fatalf("no traceresponse on GET /api/v1/products/%s: %q", sku, resp.Header.Get("traceresponse"))
	}
	return parts[1], p.PriceCents
}
