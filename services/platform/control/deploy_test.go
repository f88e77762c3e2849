package control_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// A bad weights value is refused by the control plane with one line saying what is
// wrong, and nothing is stored or put on the timeline: the weights in force stay what
// they were. A good one is stored normalised, and the rollback's value is the default.
func TestCatalogWeightsRefusedNothingStored(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := openStore(t, ctx)
	plane := &control.Plane{Store: store} // no broker: stored, not announced
	if _, err := plane.Set(ctx, control.DeployCatalogWeights, "v2:10, v1:90", "test"); err != nil {
		t.Fatal(err)
	}
	for value, want := range map[string]string{
		"v3:10,v1:90":   `unknown version "v3"`,
		"v1:50,v2:40":   "add up to 90, want 100",
		"v1:-10,v2:110": "want a whole percent from 0 to 100",
		"v1:50,v1:50":   "v1 named twice",
		"v2:100,v2:0":   "v2 named twice",
		"all to v2":     "want version:percent pairs",
	} {
		_, err := plane.Set(ctx, control.DeployCatalogWeights, value, "test")
		if !control.IsInvalid(err) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("weights %q: %v, want a one-line InvalidError with %q", value, err, want)
		}
	}
	cur, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := cur.Get(control.DeployCatalogWeights); got != "v1:90,v2:10" {
		t.Errorf("weights after refusals: %q, want the stored v1:90,v2:10", got)
	}
	if w := cur.CatalogWeights(); w["v1"] != 90 || w["v2"] != 10 {
		t.Errorf("CatalogWeights = %v", w)
	}
	changes, err := store.Changes(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 {
		t.Errorf("%d changes on the timeline, want 1 (refusals record nothing): %+v", len(changes), changes)
	}
	if d := control.Defaults(); d.Get(control.DeployCatalogWeights) != control.WeightsAllV1 || d.CatalogV2() != control.V2Off || d.CanaryMaxErrorRate() != 0.1 {
		t.Errorf("defaults: weights %q, v2 %q, max error rate %v", d.Get(control.DeployCatalogWeights), d.CatalogV2(), d.CanaryMaxErrorRate())
	}
}
