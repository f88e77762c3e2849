package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"microlab/lab/stack"
	"microlab/services/platform/control"
)

// Releases of catalog in a real lab, through the settings alone (docs/patterns/
// blue-green-and-canary.md). deploy.catalog.v2=good makes the scale follower start
// catalog-v2-1 (VERSION=v2), which registers as v2. Blue-green: weights v1:0,v2:100
// send every product read to it (each carries "catalogVersion":"v2"), v1:100 sends them
// all back at once. Canary: a bad v2 (one read in four fails) at v1:90,v2:10 under
// traffic is rolled back by the gateway itself: within seconds the stored weights read
// v1:100, the rollback counter is 1, and v2 gets no request after it.
func TestCanaryRollsBack(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{scaleUpTo: 1})
	plane := l.faultPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := plane.Set(ctx, control.DeployCatalogV2, control.V2Good, "e2e"); err != nil {
		t.Fatal(err)
	}
	insts, err := l.cfg.Instances(map[string]int{stack.CatalogV2: 1})
	if err != nil {
		t.Fatal(err)
	}
	var v2URL string
	for _, in := range insts {
		if in.Version == "v2" {
			v2URL = in.URL()
		}
	}
	waitFor(t, 2*time.Minute, "catalog-v2-1 answering /readyz", func() bool { return ready(v2URL) })

	client := &http.Client{Timeout: 10 * time.Second}
	product := l.serviceURL("gateway") + "/api/v1/products/LAB-MUG"
	// read does n product reads through the gateway and returns how many v2 answered
	// (by the field only v2 sets); failed ones are counted apart.
	read := func(n int) (v2, failed int) {
		t.Helper()
		for range n {
			resp, err := client.Get(product)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed++
				continue
			}
			var p struct {
				SKU            string `json:"sku"`
				CatalogVersion string `json:"catalogVersion"`
			}
			if err := json.Unmarshal(body, &p); err != nil || p.SKU != "LAB-MUG" {
				t.Fatalf("GET %s: %s %v", product, body, err)
			}
			if p.CatalogVersion == "v2" {
				v2++
			}
		}
		return v2, failed
	}
	healthy := func(n int) func() bool {
		return func() bool {
			return l.metric(t, "gateway", "gateway_upstream_instances", `upstream="catalog"`, `state="healthy"`) == float64(n)
		}
	}

	// Blue-green: all at once to v2 (the weights route through the registry by
	// themselves, gateway.discovery stays static), and back.
	l.set(control.DeployCatalogWeights, "v1:0,v2:100")
	waitFor(t, 30*time.Second, "the gateway seeing catalog-1 and catalog-v2-1 healthy", healthy(2))
	if v2, failed := read(20); v2 != 20 || failed != 0 {
		t.Fatalf("v1:0,v2:100: %d of 20 reads from v2 (%d failed), want all 20", v2, failed)
	}
	l.set(control.DeployCatalogWeights, control.WeightsAllV1)
	if v2, failed := read(20); v2 != 0 || failed != 0 {
		t.Fatalf("back to v1:100: %d of 20 reads from v2 (%d failed), want none", v2, failed)
	}

	// Canary of a bad v2: rolled back by the gateway.
	l.set(control.DeployCatalogV2, control.V2Bad)
	l.set(control.DeployCatalogWeights, "v1:90,v2:10")
	toV2 := func() float64 {
		return l.metric(t, "gateway", "gateway_upstream_requests_total", `upstream="catalog"`, `upstream_instance="catalog-v2-1"`)
	}
	rollbacks := func() float64 { return l.metric(t, "gateway", "gateway_canary_rollbacks_total", `upstream="catalog"`) }
	if n := rollbacks(); n != 0 {
		t.Fatalf("gateway_canary_rollbacks_total = %v before the canary", n)
	}
	atCanary := toV2()
	start := time.Now()
	for l.setting(control.DeployCatalogWeights) != control.WeightsAllV1 {
		if time.Since(start) > time.Minute {
			t.Fatalf("weights still %q after a minute of traffic to a bad v2 (v2 got %v attempts)", l.setting(control.DeployCatalogWeights), toV2())
		}
		read(20)
	}
	t.Logf("rolled back %s after the canary began (v2 got %v attempts)", time.Since(start).Round(time.Millisecond), toV2()-atCanary)
	// The verdict comes at the minimum sample (a bad v2 fails 5 of its first 20), on the
	// canary's own answers (new weights, a new window: the blue-green's do not count).
	if n := toV2() - atCanary; n != control.CanaryMinSample {
		t.Errorf("v2 got %v attempts during the canary, want %d (rolled back at the minimum sample)", n, control.CanaryMinSample)
	}
	if n := rollbacks(); n != 1 {
		t.Fatalf("gateway_canary_rollbacks_total = %v after the rollback, want 1", n)
	}
	if n := l.metric(t, "gateway", "gateway_upstream_responses_total", `upstream="catalog"`, `version="v2"`, `code_class="5xx"`); n < 1 {
		t.Fatalf("gateway_upstream_responses_total{version=v2,code_class=5xx} = %v, want the bad v2's 500s", n)
	}
	l.awaitSetting(control.DeployCatalogWeights, control.WeightsAllV1)
	before := toV2()
	if v2, _ := read(50); v2 != 0 {
		t.Fatalf("%d of 50 reads from v2 after the rollback, want none", v2)
	}
	if n := toV2() - before; n != 0 {
		t.Fatalf("v2 got %v attempts after the rollback, want 0", n)
	}
	changes, err := l.store.Changes(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	var noted bool
	for _, ch := range changes {
		noted = noted || (ch.Source == "gateway canary" && ch.Key == control.DeployCatalogWeights && ch.New == control.WeightsAllV1)
	}
	if !noted {
		t.Fatalf("timeline: no change of deploy.catalog.weights to v1:100 by the gateway: %+v", changes)
	}
}
