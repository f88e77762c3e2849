package views

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// off are the settings with every optional pattern off (the control plane's defaults).
var off = map[string]string{"catalog.transport": "http", "gateway.cache.ttl": "0s", "gateway.discovery": "static",
	"scale.catalog": "1", "read.model": "composition", "strangler.routes": "users=services,products=services,orders=services",
	"deploy.catalog.v2": "off", "deploy.catalog.weights": "v1:100"}

// onValues turn each row on; wantLabel is what it then says, with live numbers.
var onValues = map[string]struct{ value, wantLabel string }{
	"catalog.transport":      {"grpc", "gRPC"},
	"gateway.cache.ttl":      {"30s", "cache 30s · hit 85%"},
	"gateway.discovery":      {"registry", "registry, 2 healthy"},
	"scale.catalog":          {"3", "×3"},
	"read.model":             {"cqrs", "read model serves GET /orders"},
	"strangler.routes":       {"users=monolith,products=services,orders=monolith", "serves users, orders"},
	"deploy.catalog.v2":      {"bad", "v2 running (bad)"},
	"deploy.catalog.weights": {"v1:90,v2:10", "v1 90% · v2 10%"},
}

func liveNumbers() PatternLive {
	r := 0.85
	return PatternLive{CacheHitRatio: &r, Healthy: map[string]int{"catalog": 2}}
}

// The strip shows each pattern only while its setting is on: none with every setting
// off, and with one on, that one alone, on the map where it acts (a badge on its box or
// a label on its line) and in the list with its setting.
func TestPatternStripShowsEachPatternOnlyWhenOn(t *testing.T) {
	if got, want := slices.Sorted(maps.Keys(onValues)), slices.Sorted(slices.Values(PatternKeys())); !slices.Equal(got, want) {
		t.Fatalf("the test turns on %v, the table has %v: a row without a test", got, want)
	}
	a, ps := ShopArch().WithPatterns(off, liveNumbers(), nil)
	doc := render(t, "overview", Overview(OverviewModel{Arch: a, Patterns: ps}))
	if len(ps) != 0 || len(all(doc, "patterns-none")) != 1 {
		t.Fatalf("every setting off: %d patterns on, patterns-none %d", len(ps), len(all(doc, "patterns-none")))
	}
	for _, key := range PatternKeys() {
		if n := len(all(doc, "pattern-"+key)) + len(all(doc, "badge-"+key)); n != 0 {
			t.Errorf("%s off, but the map shows it", key)
		}
	}
	if l := all(doc, "edge-label-orders>catalog"); len(l) != 1 || text(l[0]) != "HTTP" {
		t.Errorf("orders→catalog with catalog.transport=http: want an HTTP label, got %v", l)
	}
	if len(all(doc, "node-monolith")) != 0 {
		t.Error("a monolith box without strangler.routes")
	}

	for _, row := range Patterns {
		t.Run(row.Key, func(t *testing.T) {
			settings := maps.Clone(off)
			settings[row.Key] = onValues[row.Key].value
			a, ps := ShopArch().WithPatterns(settings, liveNumbers(), nil)
			doc := render(t, "overview", Overview(OverviewModel{Arch: a, Patterns: ps}))
			for _, other := range PatternKeys() {
				if n := len(all(doc, "pattern-"+other)); (other == row.Key) != (n == 1) {
					t.Errorf("with only %s on, the strip lists %s %d times", row.Key, other, n)
				}
			}
			li := all(doc, "pattern-"+row.Key)
			if len(li) != 1 {
				t.Fatal("not in the strip")
			}
			want := onValues[row.Key].wantLabel
			if got := text(li[0]); !strings.Contains(got, want) || !strings.Contains(got, row.Key+"="+onValues[row.Key].value) {
				t.Errorf("strip entry %q: want %q and the setting", got, want)
			}
			if links := hrefsUnder(li[0]); !slices.Equal(links, []string{"/docs/" + row.Doc}) {
				t.Errorf("strip entry links %v, want its docs page", links)
			}
			var mark []string
			if row.Edge != "" {
				for _, n := range all(doc, "edge-label-"+row.Edge) {
					mark = append(mark, text(n))
				}
			} else {
				for _, n := range all(doc, "badge-"+row.Key) {
					if v, _ := attr(n, "data-node"); v == row.Node {
						mark = append(mark, text(n))
					}
				}
				if len(all(doc, "node-"+row.Node)) != 1 {
					t.Errorf("no box %s for the badge", row.Node)
				}
			}
			if !slices.Equal(mark, []string{want}) {
				t.Errorf("on the map: %q, want %q on %s%s", mark, want, row.Node, row.Edge)
			}
		})
	}

	// Unmeasured numbers are left out, not shown as 0; a page this build lacks is not
	// linked.
	settings := maps.Clone(off)
	settings["gateway.cache.ttl"], settings["gateway.discovery"] = "30s", "registry"
	_, ps = ShopArch().WithPatterns(settings, PatternLive{}, func(string) bool { return false })
	labels := map[string]string{}
	for _, p := range ps {
		labels[p.Key] = p.Label
		if p.Doc != "" {
			t.Errorf("%s links %s, which does not exist", p.Key, p.Doc)
		}
	}
	if labels["gateway.cache.ttl"] != "cache 30s" || labels["gateway.discovery"] != "registry" {
		t.Errorf("without numbers: %v", labels)
	}
}

func hrefsUnder(n *html.Node) []string {
	var out []string
	for d := range n.Descendants() {
		if v, ok := attr(d, "href"); ok {
			out = append(out, v)
		}
	}
	return out
}

// Two patterns on one line (discovery and the canary's weights on gateway→catalog) both
// say what they do: the second adds to the label instead of replacing it.
func TestTwoPatternsShareALine(t *testing.T) {
	settings := maps.Clone(off)
	settings["gateway.discovery"] = "registry"
	settings["deploy.catalog.weights"] = "v1:90,v2:10"
	a, ps := ShopArch().WithPatterns(settings, liveNumbers(), nil)
	if len(ps) != 2 {
		t.Fatalf("%d patterns on, want 2", len(ps))
	}
	if got, want := a.EdgeLabels["gateway>catalog"], "registry, 2 healthy · v1 90% · v2 10%"; got != want {
		t.Errorf("gateway→catalog label %q, want %q", got, want)
	}
}
