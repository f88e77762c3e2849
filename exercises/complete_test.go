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

// A saga that ended long enough ago is judged on the spans there are: a span that never
// came (a crash, an eviction) must not keep a learner waiting forever.
func TestTraceSettled(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ended := func(outcome string, ago time.Duration) *ingest.Saga {
		return &ingest.Saga{Outcome: outcome, Start: now.Add(-ago - time.Second), Steps: []ingest.SagaStep{{Event: "order.confirmed", At: now.Add(-ago)}}}
	}
	for _, tc := range []struct {
		name string
		saga *ingest.Saga
		want bool
	}{
		{"no saga", nil, false},
		{"pending for long", &ingest.Saga{Outcome: "pending", Start: now.Add(-time.Hour), Steps: []ingest.SagaStep{{At: now.Add(-time.Hour)}}}, false},
		{"ended just now", ended("confirmed", time.Second), false},
		{"ended a minute ago", ended("confirmed", time.Minute), true},
		{"cancelled a minute ago", ended("cancelled", time.Minute), true},
	} {
		if got := traceSettled(tc.saga, now); got != tc.want {
			t.Errorf("%s: settled %v, want %v", tc.name, got, tc.want)
		}
	}
}
