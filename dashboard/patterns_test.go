package main

import (
	"errors"
	"testing"

	"microlab/dashboard/views"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// Every row of the map's pattern strip reads a setting the control plane has under that
// very key (a typo would make its row never show), is off at the setting's default (a
// fresh lab shows no pattern), and links to a docs page this build serves.
func TestPatternRowsNameWhatExists(t *testing.T) {
	for _, row := range views.Patterns {
		def, ok := control.Lookup(row.Key)
		if !ok {
			t.Errorf("%s: no such setting: the row would never show", row.Key)
			continue
		}
		if row.On(def.Default) {
			t.Errorf("%s: on at its default %q: a fresh lab would show it", row.Key, def.Default)
		}
		if !docExists(row.Doc) {
			t.Errorf("%s links /docs/%s, which the dashboard does not serve", row.Key, row.Doc)
		}
	}
}

// The overview with every pattern of this build on, through the real page: the strip
// lists each, and the map fragment overview.js redraws from carries the strip too.
func TestOverviewShowsThePatternsOn(t *testing.T) {
	t.Parallel()
	_, store := testenv.LabDB(t, testenv.Name("t_dash_"))
	f := newFixture(t, map[string]string{"PROMETHEUS_URL": closedURL(t), "GATEWAY_URL": closedURL(t)}, Sources{}, store)
	plane := &control.Plane{Store: store}
	for k, v := range map[string]string{"catalog.transport": "grpc", "gateway.cache.ttl": "30s", "gateway.discovery": "registry",
		"scale.catalog": "2", "read.model": "cqrs"} {
		if _, err := plane.Set(t.Context(), k, v, "test"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
			t.Fatal(err)
		}
	}
	for _, path := range []string{"/", "/overview/map"} {
		_, page := f.do(t, "GET", path, "", nil)
		ids := testIDs(t, page)
		for _, k := range []string{"catalog.transport", "gateway.cache.ttl", "gateway.discovery", "scale.catalog", "read.model"} {
			if len(ids["pattern-"+k]) != 1 {
				t.Errorf("GET %s: %s on, not in the strip", path, k)
			}
		}
		if l := ids["edge-label-gateway>catalog"]; len(l) != 1 || nodeText(l[0]) != "registry" {
			t.Errorf("GET %s: gateway→catalog label without Prometheus: want \"registry\", got %v", path, l)
		}
	}
}
