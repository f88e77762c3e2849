package exercises

import (
	"testing"
	"time"

	"microlab/dashboard/ingest"
)

// A trace is complete when the saga has ended, its last span (a consumer of the
// outcome's event) is in, and no span's parent is missing; the slowest span is judged
// on a complete trace only.
func TestTraceComplete(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	sp := func(id, parent, name string) ingest.Span {
		return ingest.Span{SpanID: id, ParentID: parent, Name: name, Start: t0, Duration: time.Millisecond}
	}
	base := []ingest.Span{sp("r", "", "POST /api/v1/orders"), sp("o", "r", "POST /orders"), sp("p", "o", "process order.placed")}
	confirmed := &ingest.Saga{Outcome: "confirmed"}
	for _, tc := range []struct {
		name  string
		spans []ingest.Span
		saga  *ingest.Saga
		want  bool
	}{
		{"the saga still pending", append(base, sp("n", "p", "process order.confirmed")), &ingest.Saga{Outcome: "pending"}, false},
		{"no last span yet", base, confirmed, false},
		{"the last span of the other outcome", append(base, sp("n", "p", "process order.cancelled")), confirmed, false},
		{"a span whose parent is not in", append(base, sp("n", "p", "process order.confirmed"), sp("x", "missing", "INSERT")), confirmed, false},
		{"complete", append(base, sp("n", "p", "process order.confirmed")), confirmed, true},
		{"complete, cancelled", append(base, sp("n", "p", "process order.cancelled")), &ingest.Saga{Outcome: "cancelled"}, true},
		{"no saga known: either last span", append(base, sp("n", "p", "process order.cancelled")), nil, true},
		{"no saga known, no last span", base, nil, false},
	} {
		if got := traceComplete(tc.spans, tc.saga); got != tc.want {
			t.Errorf("%s: complete %v, want %v", tc.name, got, tc.want)
		}
	}
}
