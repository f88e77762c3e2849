package views

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"microlab/services/platform/control"
)

// The map's pattern strip: the optional patterns the lab's settings turn on, drawn where
// they act (a badge on a box, a label on an edge, a box only the pattern has) and listed
// under the map with their docs page. One table, Patterns: a pattern is one row — the
// setting it reads, when that value means "on", what it says, where it goes — so a new
// one is a row, not a new branch in the template. A row whose setting the control plane
// does not have (yet) never shows: its value is never found.

// PatternLive is what the dashboard measures of the patterns (Prometheus, in the health
// poll): the numbers some labels carry. Zero values: not measured, and labels say less.
type PatternLive struct {
	// CacheHitRatio is the gateway's response cache hit ratio over 1m (0..1); nil when
	// Prometheus has none (no product read in the last minute, or no Prometheus).
	CacheHitRatio *float64 `json:"cacheHitRatio,omitempty"`
	// Healthy is, per upstream, the instances the gateway's registry probe found healthy
	// (gateway_upstream_instances{state="healthy"}); an upstream missing: not measured.
	Healthy map[string]int `json:"healthy,omitempty"`
}

// PatternRow is one pattern the map can show.
type PatternRow struct {
	Key  string // the setting, such as catalog.transport
	Name string // the pattern, as its docs page names it
	Doc  string // its page under /docs/ (patterns/grpc.md)
	// On says whether the setting's value turns the pattern on.
	On func(value string) bool
	// Label is what the map and the strip say while it is on.
	Label func(value string, live PatternLive) string
	// Node is the box the badge goes on, or Edge ("from>to") the line the label goes on.
	Node, Edge string
	// Adds are boxes and lines only this pattern has (a monolith beside the services).
	AddNodes []Node
	AddEdges []Edge
}

// ActivePattern is one row that is on, as the map draws it.
type ActivePattern struct {
	Key, Value, Name, Label string
	Node, Edge              string
	// Doc is the docs page to link (/docs/patterns/grpc.md); empty when the page does not
	// exist in this build: the strip then names the pattern without a link.
	Doc string
}

// Patterns is the strip's table, in the order the strip lists them.
var Patterns = []PatternRow{
	{Key: "catalog.transport", Name: "gRPC", Doc: "patterns/grpc.md", Edge: "orders>catalog",
		On:    func(v string) bool { return v == "grpc" },
		Label: func(string, PatternLive) string { return "gRPC" }},
	{Key: "gateway.cache.ttl", Name: "Gateway caching", Doc: "patterns/gateway-caching.md", Node: "gateway",
		On: func(v string) bool { d, err := time.ParseDuration(v); return err == nil && d > 0 },
		Label: func(v string, live PatternLive) string {
			s := "cache " + v
			if live.CacheHitRatio != nil {
				s += fmt.Sprintf(" · hit %.0f%%", 100**live.CacheHitRatio)
			}
			return s
		}},
	{Key: "gateway.discovery", Name: "Service discovery", Doc: "patterns/service-discovery.md", Edge: "gateway>catalog",
		On: func(v string) bool { return v == "registry" },
		Label: func(_ string, live PatternLive) string {
			if n, ok := live.Healthy["catalog"]; ok {
				return fmt.Sprintf("registry, %d healthy", n)
			}
			return "registry"
		}},
	{Key: "scale.catalog", Name: "Competing consumers (scaled out)", Doc: "patterns/competing-consumers.md", Node: "catalog",
		On:    func(v string) bool { n, err := strconv.Atoi(v); return err == nil && n > 1 },
		Label: func(v string, _ PatternLive) string { return "×" + v }},
	{Key: "read.model", Name: "CQRS read model", Doc: "patterns/cqrs-read-model.md", Node: "orders-history.events",
		On:    func(v string) bool { return v == "cqrs" },
		Label: func(string, PatternLive) string { return "read model serves GET /orders" }},
	{Key: "strangler.routes", Name: "Monolith and strangler fig", Doc: "patterns/monolith-and-strangler-fig.md", Node: "monolith",
		On:       func(v string) bool { return len(monolithFamilies(v)) > 0 },
		Label:    func(v string, _ PatternLive) string { return "serves " + strings.Join(monolithFamilies(v), ", ") },
		AddNodes: []Node{{Name: "monolith", Kind: "service", X: 80, Y: 610}},
		AddEdges: []Edge{{"gateway", "monolith", "http"}}},
	{Key: "deploy.catalog.v2", Name: "Blue-green and canary", Doc: "patterns/blue-green-and-canary.md", Node: "catalog",
		On:    func(v string) bool { return v == "good" || v == "bad" },
		Label: func(v string, _ PatternLive) string { return "v2 running (" + v + ")" }},
	{Key: "deploy.catalog.weights", Name: "Blue-green and canary", Doc: "patterns/blue-green-and-canary.md", Edge: "gateway>catalog",
		On: func(v string) bool { w, err := control.ParseWeights(v); return err == nil && w["v2"] > 0 },
		Label: func(v string, _ PatternLive) string {
			w, _ := control.ParseWeights(v) // the control plane stores only valid weights
			return fmt.Sprintf("v1 %d%% · v2 %d%%", w["v1"], w["v2"])
		}},
}

// monolithFamilies are the route families strangler.routes sends to the monolith
// (users=monolith,products=services,… → [users]), in the order written.
func monolithFamilies(v string) []string {
	var out []string
	for _, part := range strings.Split(v, ",") {
		if family, side, ok := strings.Cut(strings.TrimSpace(part), "="); ok && side == "monolith" {
			out = append(out, family)
		}
	}
	return out
}

// PatternKeys are the settings the strip reads: a change to any redraws the map.
func PatternKeys() []string {
	keys := make([]string, 0, len(Patterns))
	for _, p := range Patterns {
		if !slices.Contains(keys, p.Key) {
			keys = append(keys, p.Key)
		}
	}
	return keys
}

// DefaultEdgeLabels are the labels the map shows with every pattern off: a line that a
// pattern relabels says what it is the rest of the time.
var DefaultEdgeLabels = map[string]string{"orders>catalog": "HTTP"}

// WithPatterns returns the rows that are on for settings (key → value; a key absent is
// off) and the map with their boxes and lines added and their labels set. hasDoc says
// whether a docs page exists (nil: all do).
func (a Arch) WithPatterns(settings map[string]string, live PatternLive, hasDoc func(string) bool) (Arch, []ActivePattern) {
	out := a
	out.Nodes = slices.Clone(a.Nodes)
	out.Edges = slices.Clone(a.Edges)
	out.EdgeLabels = map[string]string{}
	for id, l := range DefaultEdgeLabels {
		out.EdgeLabels[id] = l
	}
	var on []ActivePattern
	for _, p := range Patterns {
		v, ok := settings[p.Key]
		if !ok || !p.On(v) {
			continue
		}
		ap := ActivePattern{Key: p.Key, Value: v, Name: p.Name, Label: p.Label(v, live), Node: p.Node, Edge: p.Edge}
		if hasDoc == nil || hasDoc(p.Doc) {
			ap.Doc = "/docs/" + p.Doc
		}
		on = append(on, ap)
		for _, n := range p.AddNodes {
			if _, exists := out.Node(n.Name); !exists {
				out.Nodes = append(out.Nodes, n)
			}
		}
		for _, e := range p.AddEdges {
			if !slices.ContainsFunc(out.Edges, func(x Edge) bool { return x.ID() == e.ID() }) {
				out.Edges = append(out.Edges, e)
			}
		}
		if p.Edge != "" { // two patterns on one line (discovery and weights) share its label
			if l, ok := out.EdgeLabels[p.Edge]; ok && l != DefaultEdgeLabels[p.Edge] {
				out.EdgeLabels[p.Edge] = l + " · " + ap.Label
			} else {
				out.EdgeLabels[p.Edge] = ap.Label
			}
		}
	}
	return out, on
}

// badgesOn are the labels of the patterns on node, one per line of its badge stack.
func badgesOn(ps []ActivePattern, node string) []ActivePattern {
	var out []ActivePattern
	for _, p := range ps {
		if p.Node == node {
			out = append(out, p)
		}
	}
	return out
}

// labelX is where a label centred near x goes so that it stays inside the map (viewBox
// 0..1100): a box at the map's edge would cut its badge. The width is estimated (about
// 6.5px a character at the labels' 11px).
func labelX(x int, label string) int {
	half := len([]rune(label))*13/4 + 4
	return min(max(x, half), 1100-half)
}

// patternTestID is a pattern's data-testid: "pattern-catalog.transport".
func patternTestID(key string) string { return "pattern-" + key }

// labelAt is where along a line its label goes (0: at From, 1: at To) where the middle
// is taken: gateway → catalog's middle is under the gateway's cache queue.
var labelAt = map[string]float64{"gateway>catalog": 0.3}

// edgeMid is the point of an edge where its label goes.
func edgeMid(a Arch, e Edge) (int, int) {
	f, _ := a.Node(e.From)
	t, _ := a.Node(e.To)
	at, ok := labelAt[e.ID()]
	if !ok {
		at = 0.5
	}
	return f.X + int(at*float64(t.X-f.X)), f.Y + int(at*float64(t.Y-f.Y))
}

// edgeClass is an edge's CSS classes: its kind, and grpc when its label says so.
func edgeClass(a Arch, e Edge) string {
	if strings.HasPrefix(a.EdgeLabels[e.ID()], "gRPC") {
		return "edge " + e.Kind + " grpc"
	}
	return "edge " + e.Kind
}
