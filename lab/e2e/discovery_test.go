package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// Service discovery at the gateway, in a real lab: catalog scaled to three (each
// instance registers itself), gateway.discovery=registry balances product reads across
// them; the fault down on catalog-2 takes it out of the rotation within its health
// check's interval (its request count stops growing, and no read fails), and clearing
// the fault brings it back.
func TestServiceDiscoveryMovesTraffic(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{scaleUpTo: 3})
	plane := l.faultPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := plane.Set(ctx, control.ScaleKey("catalog"), "3", "e2e"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"catalog-2", "catalog-3"} {
		u := instanceURL(t, l, id)
		waitFor(t, 2*time.Minute, id+" answering /readyz", func() bool { return ready(u) })
	}
	l.set(control.GatewayDiscovery, control.DiscoveryRegistry)
	healthy := func(n int) func() bool {
		return func() bool {
			return l.metric(t, "gateway", "gateway_upstream_instances", `upstream="catalog"`, `state="healthy"`) == float64(n)
		}
	}
	waitFor(t, 30*time.Second, "the gateway balancing across 3 healthy catalog instances", healthy(3))

	reads := func(id string) float64 {
		return l.metric(t, "gateway", "gateway_upstream_requests_total", `upstream="catalog"`, `upstream_instance="`+id+`"`)
	}
	products := l.serviceURL("gateway") + "/api/v1/products"
	client := &http.Client{Timeout: 10 * time.Second}
	read := func(n int) {
		t.Helper()
		for range n {
			resp, err := client.Get(products)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /api/v1/products: %s (no read may fail while an instance is down)", resp.Status)
			}
		}
	}
	before := map[string]float64{}
	for _, id := range []string{"catalog-1", "catalog-2", "catalog-3"} {
		before[id] = reads(id)
	}
	read(30)
	for id, n := range before {
		if got := reads(id) - n; got < 5 {
			t.Fatalf("%s got %v of 30 reads, want about a third (round-robin)", id, got)
		}
	}

	// Down: out of the rotation within one probe interval (1s, plus its 500ms bound).
	downAt := time.Now()
	addFault(t, plane, control.FaultSpec{Service: "catalog", Instance: "catalog-2", Kind: control.FaultDown, For: "5m"})
	waitFor(t, 3*time.Second, "catalog-2 unhealthy at the gateway", healthy(2))
	t.Logf("catalog-2 out of the rotation %s after the fault", time.Since(downAt).Round(time.Millisecond))
	down := reads("catalog-2")
	one, three := reads("catalog-1"), reads("catalog-3")
	read(30)
	if got := reads("catalog-2") - down; got != 0 {
		t.Fatalf("catalog-2 got %v reads while down, want 0", got)
	}
	if got := reads("catalog-1") - one + reads("catalog-3") - three; got < 30 {
		t.Fatalf("catalog-1 and catalog-3 got %v of 30 reads", got)
	}

	// Back: in the rotation at its first passing probe.
	clearFaults(t, plane)
	waitFor(t, 3*time.Second, "catalog-2 healthy again", healthy(3))
	back := reads("catalog-2")
	read(30)
	if got := reads("catalog-2") - back; got < 5 {
		t.Fatalf("catalog-2 got %v of 30 reads after the fault cleared, want about a third", got)
	}
}
