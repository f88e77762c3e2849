package ingest

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func span(trace, id, parent, service, name string, startMs, durMs int) Span {
	return Span{TraceID: trace, SpanID: id, ParentID: parent, Service: service, Name: name, Kind: "internal",
		Start: t0.Add(time.Duration(startMs) * time.Millisecond), Duration: time.Duration(durMs) * time.Millisecond}
}

func ids(sums []TraceSummary) []string {
	var out []string
	for _, s := range sums {
		out = append(out, s.TraceID)
	}
	return out
}

func TestTracesEvictOldestFirstSeen(t *testing.T) {
	tr := NewTraces(3, 10)
	for i := 1; i <= 3; i++ {
		tr.Add([]Span{span(fmt.Sprint("t", i), "a", "", "gateway", "GET /", i, 1)})
	}
	// A late span of t1 does not make it younger: eviction is by first-seen.
	tr.Add([]Span{span("t1", "b", "a", "orders", "late", 10, 1)})
	tr.Add([]Span{span("t4", "a", "", "gateway", "GET /", 4, 1)})
	if got := ids(tr.Summaries(0, Filter{})); !reflect.DeepEqual(got, []string{"t4", "t3", "t2"}) {
		t.Fatalf("after one eviction: %v", got)
	}
	if _, ok := tr.Trace("t1"); ok {
		t.Error("t1 still held")
	}
	tr.Add([]Span{span("t5", "a", "", "gateway", "GET /", 5, 1), span("t6", "a", "", "gateway", "GET /", 6, 1)})
	if got := ids(tr.Summaries(0, Filter{})); !reflect.DeepEqual(got, []string{"t6", "t5", "t4"}) {
		t.Fatalf("after three evictions: %v", got)
	}
	if got := ids(tr.Summaries(2, Filter{})); !reflect.DeepEqual(got, []string{"t6", "t5"}) {
		t.Errorf("n=2: %v", got)
	}
	st := tr.Stats()
	if st.Traces != 3 || st.Spans != 3 || st.EvictedTraces != 3 || st.DroppedSpans != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestTracesCapSpansPerTrace(t *testing.T) {
	tr := NewTraces(10, 3)
	var batch []Span
	for i := range 5 {
		batch = append(batch, span("t", fmt.Sprint("s", i), "", "orders", "x", i, 1))
	}
	tr.Add(batch)
	tr.Add(batch[:2]) // a retried export: duplicates are neither stored nor counted
	spans, ok := tr.Trace("t")
	if !ok || len(spans) != 3 {
		t.Fatalf("held %d spans", len(spans))
	}
	if st := tr.Stats(); st.Spans != 3 || st.DroppedSpans != 2 || st.Traces != 1 {
		t.Errorf("stats = %+v", st)
	}
	if s := tr.Summaries(1, Filter{}); s[0].Spans != 3 {
		t.Errorf("summary spans = %d", s[0].Spans)
	}
}

func TestTraceSummaryAndFilters(t *testing.T) {
	tr := NewTraces(10, 100)
	// Children arrive before their root (spans are exported as they end).
	tr.Add([]Span{
		span("ok", "c", "r", "orders", "process order.placed", 5, 20),
		span("ok", "d", "c", "payments", "SELECT", 30, 40), // ends last, at 70
	})
	tr.Add([]Span{span("ok", "r", "", "gateway", "POST /api/v1/orders", 0, 10)})
	bad := span("bad", "r", "", "gateway", "GET /api/v1/home", 0, 5)
	child := span("bad", "c", "r", "inventory", "reserve stock", 1, 2)
	child.Error, child.Status = true, "out of stock"
	tr.Add([]Span{bad, child})
	// A trace whose root never arrived: the span whose parent is missing stands in.
	tr.Add([]Span{span("orphan", "x", "gone", "shipping", "process shipping.schedule", 0, 1),
		span("orphan", "y", "x", "shipping", "INSERT", 0, 1)})

	all := tr.Summaries(0, Filter{})
	if got := ids(all); !reflect.DeepEqual(got, []string{"orphan", "bad", "ok"}) {
		t.Fatalf("order = %v", got)
	}
	ok := all[2]
	want := TraceSummary{TraceID: "ok", RootService: "gateway", RootName: "POST /api/v1/orders", Start: t0,
		Duration: 70 * time.Millisecond, Spans: 3, Services: []string{"gateway", "orders", "payments"}}
	if !reflect.DeepEqual(ok, want) {
		t.Errorf("summary\n got %+v\nwant %+v", ok, want)
	}
	if all[1].Error != true || all[0].RootName != "process shipping.schedule" {
		t.Errorf("bad %+v orphan %+v", all[1], all[0])
	}
	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{ErrorsOnly: true}, []string{"bad"}},
		{Filter{Service: "payments"}, []string{"ok"}},
		{Filter{Service: "gateway"}, []string{"bad", "ok"}},
		{Filter{Service: "nobody"}, nil},
		{Filter{MinDuration: 6 * time.Millisecond}, []string{"ok"}},
		{Filter{Query: "api/V1"}, []string{"bad", "ok"}},
		{Filter{Query: "home", ErrorsOnly: true}, []string{"bad"}},
		{Filter{Query: "home", Service: "payments"}, nil},
	} {
		if got := ids(tr.Summaries(0, tc.f)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
		}
	}
	// Summaries hand out copies: editing one does not change the store.
	all[2].Services[0] = "changed"
	if s := tr.Summaries(0, Filter{Service: "gateway"}); len(s) != 2 {
		t.Error("a caller's edit leaked into the store")
	}
	spans, _ := tr.Trace("ok")
	if spans[0].SpanID != "r" || spans[1].SpanID != "c" || spans[2].SpanID != "d" {
		t.Errorf("Trace not ordered by start: %v", spans)
	}
}

func TestCriticalPath(t *testing.T) {
	// root 0–100
	// ├─ a 5–30          (finishes early)
	// │  └─ a1 10–90     (an async child outliving its parent, but under a)
	// ├─ b 20–60
	// │  ├─ b1 21–40
	// │  └─ b2 41–59
	// └─ c 30–95         (the child of root that finishes last)
	//    ├─ c1 31–50
	//    └─ c2 55–94
	spans := []Span{
		span("t", "c2", "c", "s", "c2", 55, 39),
		span("t", "root", "", "s", "root", 0, 100),
		span("t", "a", "root", "s", "a", 5, 25),
		span("t", "a1", "a", "s", "a1", 10, 80),
		span("t", "b", "root", "s", "b", 20, 40),
		span("t", "b1", "b", "s", "b1", 21, 19),
		span("t", "b2", "b", "s", "b2", 41, 18),
		span("t", "c", "root", "s", "c", 30, 65),
		span("t", "c1", "c", "s", "c1", 31, 19),
	}
	if got := CriticalPath(spans); !reflect.DeepEqual(got, []string{"root", "c", "c2"}) {
		t.Errorf("critical path = %v", got)
	}
	if got := CriticalPath(nil); got != nil {
		t.Errorf("empty: %v", got)
	}
	// A cycle (malformed input) terminates.
	cyc := []Span{span("t", "x", "y", "s", "x", 0, 1), span("t", "y", "x", "s", "y", 1, 1)}
	if got := CriticalPath(cyc); len(got) != 2 {
		t.Errorf("cycle: %v", got)
	}
}

func TestTracesConcurrent(t *testing.T) {
	tr := NewTraces(50, 20)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("g%d-%d", g, i/10)
				tr.Add([]Span{span(id, fmt.Sprint(i), "", "svc", "n", i, 1)})
				tr.Summaries(10, Filter{ErrorsOnly: i%2 == 0})
				tr.Trace(id)
				tr.Stats()
			}
		})
	}
	wg.Wait()
	// A trace can be evicted while its goroutine is still adding to it (it then comes
	// back shorter), so check the invariants rather than exact counts.
	st, held := tr.Stats(), 0
	for _, sum := range tr.Summaries(0, Filter{}) {
		held += sum.Spans
	}
	if st.Traces != 50 || st.Spans != held || st.Spans > 50*20 || st.EvictedTraces < 160-50 {
		t.Errorf("stats = %+v, spans in summaries %d", st, held)
	}
}

// The memory of the stores stays within their bounds after 100k spans.
func TestTracesMemoryBounded(t *testing.T) {
	const maxTraces, perTrace = 1000, 50
	tr := NewTraces(maxTraces, perTrace)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const total, traceLen = 100_000, 20
	batch := make([]Span, 0, traceLen)
	var mid runtime.MemStats
	for i := range total {
		if i == total/2 {
			runtime.GC()
			runtime.ReadMemStats(&mid)
		}
		trace := fmt.Sprintf("%032x", i/traceLen)
		parent := ""
		if i%traceLen != 0 {
			parent = fmt.Sprintf("%016x", i-i%traceLen)
		}
		s := span(trace, fmt.Sprintf("%016x", i), parent, "orders", "process order.placed", i, 3)
		s.Kind = "consumer"
		s.Attrs = map[string]string{
			"messaging.system":                           "rabbitmq",
			"messaging.destination.name":                 "orders.events",
			"messaging.rabbitmq.destination.routing_key": "order.placed",
			"messaging.message.id":                       fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i),
			"messaging.message.conversation_id":          trace,
		}
		batch = append(batch, s)
		if len(batch) == cap(batch) {
			tr.Add(batch)
			batch = batch[:0]
		}
	}
	st := tr.Stats()
	if st.Traces > maxTraces || st.Spans > maxTraces*perTrace {
		t.Fatalf("stats over the bound: %+v", st)
	}
	if st.Traces != maxTraces || st.Spans != maxTraces*traceLen || st.EvictedTraces != total/traceLen-maxTraces {
		t.Errorf("stats = %+v", st)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	const ceiling = 64 << 20
	if after.HeapInuse > ceiling {
		t.Errorf("heap in use %d MiB after 100k spans, ceiling %d MiB", after.HeapInuse>>20, ceiling>>20)
	}
	// Full since 20k spans: the second 50k spans must not have grown the heap.
	if after.HeapInuse > mid.HeapInuse+8<<20 {
		t.Errorf("heap grew from %d MiB at 50k spans to %d MiB at 100k", mid.HeapInuse>>20, after.HeapInuse>>20)
	}
	t.Logf("heap in use: %.1f MiB before, %.1f MiB at 50k spans, %.1f MiB at 100k (%d traces, %d spans held)",
		float64(before.HeapInuse)/(1<<20), float64(mid.HeapInuse)/(1<<20), float64(after.HeapInuse)/(1<<20), st.Traces, st.Spans)
	runtime.KeepAlive(tr)
}

func TestSummaryOfOneTrace(t *testing.T) {
	tr := NewTraces(10, 10)
	if _, ok := tr.Summary("nope"); ok {
		t.Fatal("summary of a trace never added")
	}
	now := time.Now()
	tr.Add([]Span{{TraceID: "t1", SpanID: "b", ParentID: "a", Service: "orders", Name: "POST /orders", Start: now.Add(time.Millisecond), Duration: time.Millisecond}})
	tr.Add([]Span{{TraceID: "t1", SpanID: "a", Service: "gateway", Name: "POST /api/v1/orders", Start: now, Duration: 5 * time.Millisecond}})
	s, ok := tr.Summary("t1")
	if !ok || s.RootService != "gateway" || s.Spans != 2 || len(s.Services) != 2 {
		t.Fatalf("summary = %+v, %v; want the gateway root over 2 spans from 2 services", s, ok)
	}
}

// A flood of large spans under a few fixed trace ids (a client sending 1 MB
// User-Agents, a span recording each whole) leaves the store within its default byte
// budget, every long value cut with a marker, and a real trace added afterwards is held
// whole.
func TestTracesBoundedInBytes(t *testing.T) {
	tr := NewTraces(2000, 1000)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fixed := []string{"fixed-1", "fixed-2", "fixed-3", "fixed-4"}
	for i := range 300 {
		// A fresh string each time, as decoding each request makes one.
		ua := strings.Repeat(string(rune('a'+i%26)), 1<<20)
		s := span(fixed[i%len(fixed)], fmt.Sprintf("%016x", i), "", "gateway", "GET /", i, 1)
		s.Kind = "server"
		s.Attrs = map[string]string{"user_agent.original": ua, "http.request.method": "GET"}
		tr.Add([]Span{s})
	}
	tr.Add([]Span{span("real", "a", "", "gateway", "POST /api/v1/orders", 1000, 20),
		span("real", "b", "a", "orders", "POST /orders", 1001, 10)})
	runtime.GC()
	runtime.ReadMemStats(&after)
	const budget = 64 << 20 // the default
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > budget {
		t.Errorf("the heap grew by %d MiB holding the flood, the store's budget is %d MiB", grown>>20, budget>>20)
	}
	if got, ok := tr.Trace("real"); !ok || len(got) != 2 {
		t.Errorf("the real trace: %d spans, held %v", len(got), ok)
	}
	if sums := tr.Summaries(1, Filter{}); len(sums) != 1 || sums[0].TraceID != "real" || sums[0].RootName != "POST /api/v1/orders" {
		t.Errorf("newest summary %+v, want the real trace", sums)
	}
	held := 0
	for _, id := range fixed {
		spans, _ := tr.Trace(id)
		for _, s := range spans {
			held++
			ua := s.Attrs["user_agent.original"]
			if len(ua) > 4<<10+64 || !strings.Contains(ua, "[truncated ") {
				t.Fatalf("a held User-Agent is %d bytes, ends %q; want it cut to 4 KiB with a marker", len(ua), ua[max(len(ua)-40, 0):])
			}
			if s.Attrs["http.request.method"] != "GET" {
				t.Fatalf("a short attribute was changed: %v", s.Attrs["http.request.method"])
			}
		}
	}
	if held == 0 {
		t.Error("no flood span held at all: cut, not dropped, is what the budget asks")
	}
	runtime.KeepAlive(tr)
}
