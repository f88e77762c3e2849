package ingest

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Traces holds the most recent traces, bounded by count and by bytes: at most maxTraces
// traces and Budget.Bytes in all (the trace seen first is evicted to make room), at most
// maxSpansPerTrace spans and a sixteenth of the budget in each trace (later spans are
// dropped and counted, so a flood under a few trace ids cannot push every other trace
// out), and no value longer than Budget.ValueBytes (cut, with TruncatedMarker). Memory
// is therefore bounded by the budget whatever the load. Safe for concurrent use.
type Traces struct {
	maxTraces, maxSpans     int
	maxBytes, maxTraceBytes int64
	maxValue                int

	mu        sync.Mutex
	byID      map[string]*traceEntry
	ring      []string // trace ids in first-seen order: n of them from head, wrapping
	head, n   int
	spans     int   // spans held
	bytes     int64 // their estimated size, with the traces' own
	dropped   int64 // spans refused by the per-trace caps
	evicted   int64 // traces evicted to make room
	truncated int64 // spans stored with a value cut
}

type traceEntry struct {
	spans   []Span
	bytes   int64 // estimated size: traceOverhead and its spans'
	summary TraceSummary
	dirty   bool // summary must be recomputed
}

// TraceStats is what a Traces store holds and has thrown away.
type TraceStats struct {
	Traces         int   `json:"traces"`         // traces held
	Spans          int   `json:"spans"`          // spans held
	Bytes          int64 `json:"bytes"`          // their estimated size in memory
	BudgetBytes    int64 `json:"budgetBytes"`    // the most Bytes may be
	DroppedSpans   int64 `json:"droppedSpans"`   // spans refused because their trace was at a cap
	EvictedTraces  int64 `json:"evictedTraces"`  // traces evicted (oldest first) to make room
	TruncatedSpans int64 `json:"truncatedSpans"` // spans stored with a value cut to Budget.ValueBytes
}

// Filter selects traces in Summaries. Zero values select everything.
type Filter struct {
	Service     string        // a span of the trace comes from this service
	ErrorsOnly  bool          // a span of the trace has error status
	MinDuration time.Duration // the trace lasts at least this long
	Query       string        // substring of the root span's name, case-insensitive
}

// NewTraces returns a store of at most maxTraces traces of at most maxSpansPerTrace
// spans each (values below 1 count as 1), within the default budget
// (DefaultTraceBytes, DefaultTraceValueBytes).
func NewTraces(maxTraces, maxSpansPerTrace int) *Traces {
	return NewTracesWithin(maxTraces, maxSpansPerTrace, Budget{})
}

// NewTracesWithin is NewTraces within budget (zero fields take the defaults).
func NewTracesWithin(maxTraces, maxSpansPerTrace int, budget Budget) *Traces {
	maxTraces = max(maxTraces, 1)
	b := budget.withDefaults(DefaultTraceBytes, DefaultTraceValueBytes)
	return &Traces{
		maxTraces:     maxTraces,
		maxSpans:      max(maxSpansPerTrace, 1),
		maxBytes:      b.Bytes,
		maxTraceBytes: b.Bytes / 16,
		maxValue:      b.ValueBytes,
		byID:          make(map[string]*traceEntry, maxTraces),
		ring:          make([]string, maxTraces),
	}
}

// Add stores spans (from any number of traces), their values cut to the budget's
// ValueBytes. A span already held (same trace and span id, e.g. an export the exporter
// retried) is not stored twice. Spans without a trace id are ignored; a span that would
// take its trace over maxSpansPerTrace or a sixteenth of the budget is dropped (and
// counted); room for the rest is made by evicting the traces seen first.
func (t *Traces) Add(spans []Span) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range spans {
		if s.TraceID == "" {
			continue
		}
		e := t.byID[s.TraceID]
		if e != nil && held(e.spans, s.SpanID) {
			continue
		}
		if e != nil && len(e.spans) >= t.maxSpans {
			t.dropped++
			continue
		}
		s, cut := t.trim(s)
		size, have := spanBytes(&s), int64(0)
		if e == nil {
			size += traceOverhead + int64(len(s.TraceID))
		} else {
			have = e.bytes
		}
		if have+size > t.maxTraceBytes {
			t.dropped++
			continue
		}
		if e == nil {
			e = t.newEntry(s.TraceID)
		}
		t.makeRoom(size, s.TraceID)
		if cut {
			t.truncated++
		}
		e.spans = append(e.spans, s)
		e.bytes += size
		e.dirty = true
		t.bytes += size
		t.spans++
	}
}

// trim returns s with its name, status and attributes (its events' too) cut to
// maxValue bytes (a copy where anything was cut: the caller's span and its maps are not
// modified), and whether it cut. Ids are not cut (the receiver only passes valid ones);
// an odd long one counts in the span's size like anything else.
func (t *Traces) trim(s Span) (Span, bool) {
	var c [5]bool
	s.Service, c[0] = clip(s.Service, t.maxValue)
	s.Name, c[1] = clip(s.Name, t.maxValue)
	s.Kind, c[2] = clip(s.Kind, t.maxValue)
	s.Status, c[3] = clip(s.Status, t.maxValue)
	s.Attrs, c[4] = clipMap(s.Attrs, t.maxValue)
	cut := c != [5]bool{}
	copied := false
	for i := range s.Events {
		ev := s.Events[i]
		name, c1 := clip(ev.Name, t.maxValue)
		attrs, c2 := clipMap(ev.Attrs, t.maxValue)
		if !c1 && !c2 {
			continue
		}
		if !copied { // the caller's slice is not ours to write
			s.Events, copied = append([]SpanEvent(nil), s.Events...), true
		}
		s.Events[i] = SpanEvent{Name: name, At: ev.At, Attrs: attrs}
		cut = true
	}
	return s, cut
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

// newEntry registers id as the newest trace, evicting the oldest when the store holds
// maxTraces already.
func (t *Traces) newEntry(id string) *traceEntry {
	if t.n == t.maxTraces {
		t.evict(t.popOldest())
	}
	t.ring[(t.head+t.n)%t.maxTraces] = id
	t.n++
	e := &traceEntry{}
	t.byID[id] = e
	return e
}

// makeRoom evicts the traces seen first until size more bytes fit in the budget, but
// never keep (the trace being added to: it fits, see Add, so this ends).
func (t *Traces) makeRoom(size int64, keep string) {
	for t.bytes+size > t.maxBytes && t.n > 1 {
		if t.ring[t.head] != keep {
			t.evict(t.popOldest())
			continue
		}
		// keep is the oldest: evict the second oldest, and keep stays the oldest.
		second := (t.head + 1) % t.maxTraces
		victim := t.ring[second]
		t.ring[second] = keep
		t.popOldest()
		t.evict(victim)
	}
}

// popOldest removes the oldest id from the ring and returns it.
func (t *Traces) popOldest() string {
	id := t.ring[t.head]
	t.ring[t.head] = ""
	t.head = (t.head + 1) % t.maxTraces
	t.n--
	return id
}

func (t *Traces) evict(id string) {
	if e := t.byID[id]; e != nil {
		t.spans -= len(e.spans)
		t.bytes -= e.bytes
		delete(t.byID, id)
		t.evicted++
	}
}

// Summaries returns up to n summaries (n ≤ 0: all) of the traces f selects, the most
// recently first-seen first.
func (t *Traces) Summaries(n int, f Filter) []TraceSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := strings.ToLower(f.Query)
	var out []TraceSummary
	for i := t.n - 1; i >= 0; i-- {
		id := t.ring[(t.head+i)%t.maxTraces]
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
	return TraceStats{Traces: len(t.byID), Spans: t.spans, Bytes: t.bytes, BudgetBytes: t.maxBytes,
		DroppedSpans: t.dropped, EvictedTraces: t.evicted, TruncatedSpans: t.truncated}
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
