package ingest

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Traces holds the most recent traces, bounded twice: at most maxTraces traces (the one
// seen first is evicted to make room for a new one) and at most maxSpansPerTrace spans in
// each (later spans are dropped and counted). Memory is therefore bounded by
// maxTraces × maxSpansPerTrace spans whatever the load. Safe for concurrent use.
type Traces struct {
	maxTraces, maxSpans int

	mu      sync.Mutex
	byID    map[string]*traceEntry
	ring    []string // trace ids in first-seen order, oldest at head
	head    int      // index of the oldest id in ring once it is full
	spans   int      // spans held
	dropped int64    // spans refused by the per-trace cap
	evicted int64    // traces evicted to make room
}

type traceEntry struct {
	spans   []Span
	summary TraceSummary
	dirty   bool // summary must be recomputed
}

// TraceStats is what a Traces store holds and has thrown away.
type TraceStats struct {
	Traces        int   `json:"traces"`        // traces held
	Spans         int   `json:"spans"`         // spans held
	DroppedSpans  int64 `json:"droppedSpans"`  // spans refused because their trace was at its cap
	EvictedTraces int64 `json:"evictedTraces"` // traces evicted (oldest first) to make room
}

// Filter selects traces in Summaries. Zero values select everything.
type Filter struct {
	Service     string        // a span of the trace comes from this service
	ErrorsOnly  bool          // a span of the trace has error status
	MinDuration time.Duration // the trace lasts at least this long
	Query       string        // substring of the root span's name, case-insensitive
}

// NewTraces returns a store of at most maxTraces traces of at most maxSpansPerTrace
// spans each (values below 1 count as 1).
func NewTraces(maxTraces, maxSpansPerTrace int) *Traces {
	maxTraces = max(maxTraces, 1)
	return &Traces{
		maxTraces: maxTraces,
		maxSpans:  max(maxSpansPerTrace, 1),
		byID:      make(map[string]*traceEntry, maxTraces),
		ring:      make([]string, 0, maxTraces),
	}
}

// Add stores spans (from any number of traces). A span already held (same trace and
// span id, e.g. an export the exporter retried) is not stored twice. Spans without a
// trace id are ignored.
func (t *Traces) Add(spans []Span) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range spans {
		if s.TraceID == "" {
			continue
		}
		e, ok := t.byID[s.TraceID]
		if !ok {
			e = t.newEntry(s.TraceID)
		}
		if held(e.spans, s.SpanID) {
			continue
		}
		if len(e.spans) >= t.maxSpans {
			t.dropped++
			continue
		}
		e.spans = append(e.spans, s)
		e.dirty = true
		t.spans++
	}
}

func held(spans []Span, id string) bool {
	if id == "" {
		return false
	}
	for i := range spans {
		if spans[i].SpanID == id {
			return true
		}
	}
	return false
}

// newEntry makes room if needed (evicting the trace seen first) and registers id.
func (t *Traces) newEntry(id string) *traceEntry {
	e := &traceEntry{}
	if len(t.ring) < t.maxTraces {
		t.ring = append(t.ring, id)
	} else {
		old := t.ring[t.head]
		if oe := t.byID[old]; oe != nil {
			t.spans -= len(oe.spans)
			delete(t.byID, old)
			t.evicted++
		}
		t.ring[t.head] = id
		t.head = (t.head + 1) % t.maxTraces
	}
	t.byID[id] = e
	return e
}

// Summaries returns up to n summaries (n ≤ 0: all) of the traces f selects, the most
// recently first-seen first.
func (t *Traces) Summaries(n int, f Filter) []TraceSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := strings.ToLower(f.Query)
	var out []TraceSummary
	for i := len(t.ring) - 1; i >= 0; i-- {
		id := t.ring[(t.head+i)%len(t.ring)]
		e := t.byID[id]
		if e == nil {
			continue
		}
		if e.dirty {
			e.summary = summarize(id, e.spans)
			e.dirty = false
		}
		s := e.summary
		switch {
		case f.ErrorsOnly && !s.Error,
			s.Duration < f.MinDuration,
			q != "" && !strings.Contains(strings.ToLower(s.RootName), q),
			f.Service != "" && !hasService(s.Services, f.Service):
			continue
		}
		s.Services = append([]string(nil), s.Services...)
		out = append(out, s)
		if n > 0 && len(out) == n {
			break
		}
	}
	return out
}

func hasService(services []string, s string) bool {
	i := sort.SearchStrings(services, s)
	return i < len(services) && services[i] == s
}

// Trace returns a copy of the trace's spans, ordered by start time.
func (t *Traces) Trace(id string) ([]Span, bool) {
	t.mu.Lock()
	e, ok := t.byID[id]
	var spans []Span
	if ok {
		spans = append([]Span(nil), e.spans...)
	}
	t.mu.Unlock()
	if !ok {
		return nil, false
	}
	sortSpans(spans)
	return spans, true
}

// Stats reports what the store holds and what it dropped.
func (t *Traces) Stats() TraceStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TraceStats{Traces: len(t.byID), Spans: t.spans, DroppedSpans: t.dropped, EvictedTraces: t.evicted}
}

// summarize builds a trace's summary: its root (see rootIndex), the time from the
// earliest start to the latest end, its services sorted, and whether any span failed.
func summarize(id string, spans []Span) TraceSummary {
	s := TraceSummary{TraceID: id, Spans: len(spans)}
	if len(spans) == 0 {
		return s
	}
	var end time.Time
	services := map[string]bool{}
	for i := range spans {
		sp := &spans[i]
		if s.Start.IsZero() || sp.Start.Before(s.Start) {
			s.Start = sp.Start
		}
		if e := sp.Start.Add(sp.Duration); e.After(end) {
			end = e
		}
		services[sp.Service] = true
		s.Error = s.Error || sp.Error
	}
	s.Duration = end.Sub(s.Start)
	for svc := range services {
		s.Services = append(s.Services, svc)
	}
	sort.Strings(s.Services)
	root := &spans[rootIndex(spans)]
	s.RootService, s.RootName = root.Service, root.Name
	return s
}

// rootIndex picks a trace's root: the earliest span without a parent; failing that (the
// root has not arrived yet, or was dropped) the earliest span whose parent is not in
// the trace; failing that (a cycle) the earliest span. -1 for no spans.
func rootIndex(spans []Span) int {
	if len(spans) == 0 {
		return -1
	}
	ids := make(map[string]bool, len(spans))
	for i := range spans {
		ids[spans[i].SpanID] = true
	}
	best, bestRank := -1, 3
	for i := range spans {
		rank := 2
		switch {
		case spans[i].ParentID == "":
			rank = 0
		case !ids[spans[i].ParentID]:
			rank = 1
		}
		if rank < bestRank || (rank == bestRank && spans[i].Start.Before(spans[best].Start)) {
			best, bestRank = i, rank
		}
	}
	return best
}

// CriticalPath returns the ids of the spans on the trace's critical path, root first:
// from the root (as in the summary), repeatedly the child that finishes last (ties: the
// one that started last). That chain determines when the trace ends; the waterfall
// highlights it.
func CriticalPath(spans []Span) []string {
	r := rootIndex(spans)
	if r < 0 {
		return nil
	}
	children := make(map[string][]int, len(spans))
	for i := range spans {
		if p := spans[i].ParentID; p != "" {
			children[p] = append(children[p], i)
		}
	}
	end := func(i int) time.Time { return spans[i].Start.Add(spans[i].Duration) }
	var path []string
	seen := map[string]bool{}
	for cur := r; cur >= 0; {
		id := spans[cur].SpanID
		if seen[id] {
			break // a malformed trace with a cycle
		}
		seen[id] = true
		path = append(path, id)
		next := -1
		for _, c := range children[id] {
			if c == cur {
				continue
			}
			if next < 0 || end(c).After(end(next)) ||
				(end(c).Equal(end(next)) && spans[c].Start.After(spans[next].Start)) {
				next = c
			}
		}
		cur = next
	}
	return path
}

// Summary returns one trace's summary; false if the store does not hold it.
func (t *Traces) Summary(id string) (TraceSummary, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil {
		return TraceSummary{}, false
	}
	if e.dirty {
		e.summary = summarize(id, e.spans)
		e.dirty = false
	}
	s := e.summary
	s.Services = append([]string(nil), s.Services...)
	return s, true
}
