package views

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"microlab/dashboard/ingest"
)

// Waterfall is one trace laid out as rows of bars.
type Waterfall struct {
	TraceID  string
	Start    time.Time
	Duration time.Duration
	Services []string // in order of first appearance, for the legend
	Rows     []SpanRow
	Errors   int
	Hops     int // AMQP producer → consumer hops
}

// SpanRow is one span: a bar positioned by its start and duration as percentages of
// the trace, indented by its depth in the tree.
type SpanRow struct {
	SpanID, ParentID string
	Service, Name    string
	Kind             string
	Depth            int
	Offset           time.Duration // from the trace start
	Duration         time.Duration
	LeftPct          float64
	WidthPct         float64
	Error            bool
	Status           string
	// Critical: on the critical path (from the root, repeatedly the child that ends
	// last): shortening anything else does not make the checkout faster.
	Critical bool
	// Messaging: "producer" (published a message) or "consumer" (handled one); for a
	// consumer whose parent is a producer, Hop is that producer's span id: the trace
	// crossed the broker there.
	Messaging string
	Hop       string
	Attrs     []KV
	Events    []SpanEventRow
}

// KV is one attribute.
type KV struct{ Key, Value string }

// SpanEventRow is an event recorded on a span, with its offset from the span's start.
type SpanEventRow struct {
	Name   string
	Offset time.Duration
	Attrs  []KV
}

// NewWaterfall lays out a trace's spans. Spans whose parent is not in the trace (not
// received yet, or from an unsampled caller) are shown as roots.
func NewWaterfall(traceID string, spans []ingest.Span) Waterfall {
	w := Waterfall{TraceID: traceID}
	if len(spans) == 0 {
		return w
	}
	byID := make(map[string]ingest.Span, len(spans))
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	children := map[string][]ingest.Span{}
	var roots []ingest.Span
	start, end := spans[0].Start, spans[0].Start.Add(spans[0].Duration)
	for _, s := range spans {
		if _, ok := byID[s.ParentID]; s.ParentID == "" || !ok {
			roots = append(roots, s)
		} else {
			children[s.ParentID] = append(children[s.ParentID], s)
		}
		if s.Start.Before(start) {
			start = s.Start
		}
		if e := s.Start.Add(s.Duration); e.After(end) {
			end = e
		}
	}
	byStart := func(a, b ingest.Span) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.SpanID, b.SpanID))
	}
	slices.SortFunc(roots, byStart)
	for k := range children {
		slices.SortFunc(children[k], byStart)
	}
	w.Start, w.Duration = start, end.Sub(start)

	// The critical path as ingest defines it (the trace list and the waterfall agree).
	critical := map[string]bool{}
	for _, id := range ingest.CriticalPath(spans) {
		critical[id] = true
	}

	seen := map[string]bool{}
	total := float64(w.Duration)
	var walk func(s ingest.Span, depth int)
	walk = func(s ingest.Span, depth int) {
		if seen[s.SpanID] { // a malformed trace with a parent cycle
			return
		}
		seen[s.SpanID] = true
		if !slices.Contains(w.Services, s.Service) {
			w.Services = append(w.Services, s.Service)
		}
		r := SpanRow{SpanID: s.SpanID, ParentID: s.ParentID, Service: s.Service, Name: s.Name, Kind: s.Kind,
			Depth: depth, Offset: s.Start.Sub(start), Duration: s.Duration, Error: s.Error, Status: s.Status,
			Critical: critical[s.SpanID], Attrs: sortedKV(s.Attrs)}
		if total > 0 {
			r.LeftPct = 100 * float64(r.Offset) / total
			r.WidthPct = max(100*float64(s.Duration)/total, 0.2) // a 0-length span stays visible
			r.WidthPct = min(r.WidthPct, 100-r.LeftPct)
		} else {
			r.WidthPct = 100
		}
		if s.Kind == "producer" || s.Kind == "consumer" {
			r.Messaging = s.Kind
		}
		if p, ok := byID[s.ParentID]; ok && s.Kind == "consumer" && p.Kind == "producer" {
			r.Hop = p.SpanID
			w.Hops++
		}
		for _, e := range s.Events {
			r.Events = append(r.Events, SpanEventRow{Name: e.Name, Offset: e.At.Sub(s.Start), Attrs: sortedKV(e.Attrs)})
		}
		if s.Error {
			w.Errors++
		}
		w.Rows = append(w.Rows, r)
		for _, c := range children[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return w
}

func sortedKV(m map[string]string) []KV {
	out := make([]KV, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, KV{k, m[k]})
	}
	return out
}
