package ingest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClipCutsAtARuneAndSaysHowMuch(t *testing.T) {
	if s, cut := clip("short", 10); s != "short" || cut {
		t.Errorf("clip(short) = %q, %v", s, cut)
	}
	s, cut := clip("ééééé", 3) // 10 bytes, 2 each: the cut falls inside the second
	if !cut || s != "é…[truncated 8 bytes]" || !utf8.ValidString(s) {
		t.Errorf("clip = %q, %v", s, cut)
	}
}

// Under a small budget the accounted bytes never pass it, whatever arrives; the
// traces seen first go first, and the newest is always held.
func TestTracesStayWithinTheirBudget(t *testing.T) {
	const budget = 1 << 20
	tr := NewTracesWithin(5000, 1000, Budget{Bytes: budget, ValueBytes: 1 << 10})
	for i := range 2000 { // some 1.7 KiB each once cut
		s := span(fmt.Sprint("t", i), "a", "", "orders", "process", i, 1)
		s.Attrs = map[string]string{"big": strings.Repeat("x", 10<<10), "small": "ok"}
		tr.Add([]Span{s})
		if st := tr.Stats(); st.Bytes > budget || st.Bytes <= 0 {
			t.Fatalf("after trace %d: %d bytes accounted, budget %d", i, st.Bytes, budget)
		}
		if _, ok := tr.Trace(fmt.Sprint("t", i)); !ok {
			t.Fatalf("trace %d, just added, not held", i)
		}
	}
	st := tr.Stats()
	if st.EvictedTraces == 0 || st.Traces+int(st.EvictedTraces) != 2000 || st.TruncatedSpans != 2000 || st.BudgetBytes != budget {
		t.Errorf("stats %+v", st)
	}
	// The ones held are the newest, in order.
	sums := tr.Summaries(0, Filter{})
	for i, s := range sums {
		if want := fmt.Sprint("t", 1999-i); s.TraceID != want {
			t.Fatalf("summary %d is %s, want %s", i, s.TraceID, want)
		}
	}
	spans, _ := tr.Trace("t1999")
	if v := spans[0].Attrs["big"]; len(v) > 1<<10+32 || !strings.HasSuffix(v, "…[truncated 9216 bytes]") {
		t.Errorf("big attribute held as %d bytes: …%q", len(v), v[max(len(v)-30, 0):])
	}
}

// One trace takes at most a sixteenth of the budget: spans beyond are dropped and
// counted, and the other traces stay.
func TestOneTraceCannotTakeTheBudget(t *testing.T) {
	const budget = 1 << 20
	tr := NewTracesWithin(1000, 100_000, Budget{Bytes: budget, ValueBytes: 1 << 10})
	tr.Add([]Span{span("other", "a", "", "orders", "GET /", 0, 1)})
	for i := range 10_000 {
		s := span("flood", fmt.Sprint(i), "", "gateway", "GET /", i, 1)
		s.Attrs = map[string]string{"user_agent.original": strings.Repeat("u", 1<<10)}
		tr.Add([]Span{s})
	}
	st := tr.Stats()
	flood, _ := tr.Summary("flood")
	if _, ok := tr.Trace("other"); !ok || st.Bytes > budget/16+1<<10 || st.DroppedSpans == 0 ||
		flood.Spans+int(st.DroppedSpans) != 10_000 {
		t.Errorf("stats %+v, flood holds %d spans, other held %v", st, flood.Spans, ok)
	}
}

// When the trace being added to is the oldest, room is made from the next ones; it
// stays, and stays the oldest.
func TestMakingRoomKeepsTheTraceAddedTo(t *testing.T) {
	const budget = 64 << 10                                                   // the least: 4 KiB a trace
	tr := NewTracesWithin(1000, 1000, Budget{Bytes: budget, ValueBytes: 512}) // some 1.2 KiB a trace
	big := func(trace string, i int) Span {
		s := span(trace, fmt.Sprint(i), "", "orders", "GET /", i, 1)
		s.Attrs = map[string]string{"v": strings.Repeat("v", 512)}
		return s
	}
	tr.Add([]Span{big("old", 0)})
	for i := range 100 {
		tr.Add([]Span{big(fmt.Sprint("n", i), i)})
	}
	if _, ok := tr.Trace("old"); ok {
		t.Fatal("the oldest trace survived 100 newer ones in a budget for fewer")
	}
	tr.Add([]Span{big("old", 100)}) // back as the newest
	for i := range 100 {
		tr.Add([]Span{big(fmt.Sprint("m", i), 200+i)})
	}
	first := tr.Summaries(0, Filter{})
	oldest := first[len(first)-1].TraceID
	// Grow the oldest trace: the room comes from the others.
	for i := range 3 {
		tr.Add([]Span{big(oldest, 300+i)})
		if st := tr.Stats(); st.Bytes > budget {
			t.Fatalf("%d bytes accounted, budget %d", st.Bytes, budget)
		}
	}
	sums := tr.Summaries(0, Filter{})
	if got, _ := tr.Trace(oldest); len(got) != 4 || sums[len(sums)-1].TraceID != oldest {
		t.Errorf("oldest trace %s: %d spans; order now %v", oldest, len(got), ids(sums))
	}
	if !reflect.DeepEqual(ids(sums[:len(sums)-1]), ids(first[:len(sums)-1])) {
		t.Errorf("the others' order changed: %v, was %v", ids(sums), ids(first))
	}
}

func TestEventsStayWithinTheirBudget(t *testing.T) {
	const budget = 256 << 10
	evs := NewEventsWithin(10_000, Budget{Bytes: budget, ValueBytes: 1 << 10})
	for i := range 1000 {
		e := evs.Add(Event{ID: fmt.Sprint("e", i), Type: "order.placed", CorrelationID: "o",
			Payload: json.RawMessage(`"` + strings.Repeat("p", 4<<10) + `"`)})
		if !e.Truncated || !json.Valid(e.Payload) {
			t.Fatalf("Add returned %+v", e)
		}
		if st := evs.Stats(); st.Bytes > budget {
			t.Fatalf("after event %d: %d bytes, budget %d", i, st.Bytes, budget)
		}
	}
	st := evs.Stats()
	recent := evs.Recent(0, "")
	if st.Events != len(recent) || st.Events >= 1000 || recent[0].ID != "e999" || st.TruncatedEvents != 1000 {
		t.Errorf("stats %+v, newest %s", st, recent[0].ID)
	}
	if _, ok := evs.Get("e0"); ok {
		t.Error("the oldest event is still held")
	}
	// An event made large by many long headers keeps its strings, not its headers.
	h := map[string]string{}
	for i := range 200 {
		h[fmt.Sprintf("h%03d", i)] = strings.Repeat("h", 2<<10)
	}
	e := evs.Add(Event{ID: "headers", Type: "order.placed", Headers: h, Payload: json.RawMessage(`{}`)})
	if !e.Truncated || e.Headers != nil || evs.Stats().Bytes > budget {
		t.Errorf("event of 200 long headers stored with %d headers, truncated %v", len(e.Headers), e.Truncated)
	}
}
