package main

import (
	"net/http"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// release is what this instance's version changes in its product reads, for the lab's
// canary and blue-green exercises (deploy.catalog.*, docs/patterns/blue-green-and-canary.md).
//
// v1 answers as catalog always has. v2 shows itself: every product it answers carries
// "catalogVersion":"v2", so a shopper (and a test) can tell which version served a
// read. And v2 can ship with a bug: while deploy.catalog.v2=bad, one product read in
// four answers 500. The bug is a property of the release, not a lab fault, and it is
// deterministic (a counter, not a dice roll), so the error rate a learner sees at the
// gateway is 25 % of what reaches v2, every time.
type release struct {
	version string                  // this instance's VERSION
	cur     func() control.Settings // the lab's settings, live
	reads   atomic.Uint64
}

// badEvery is the bad v2's failure period: read number n fails when n%badEvery == 0.
const badEvery = 4

// v2 reports whether this instance runs v2.
func (r *release) v2() bool { return r != nil && r.version == "v2" }

// read is called at the start of each product read: an error is the bad v2's bug.
func (r *release) read(req *http.Request) error {
	if !r.v2() {
		return nil
	}
	n := r.reads.Add(1)
	if r.cur().CatalogV2() != control.V2Bad || n%badEvery != 0 {
		return nil
	}
	// On the server span, so a trace of a failed read says which release failed and why.
	trace.SpanFromContext(req.Context()).SetAttributes(attribute.Bool("catalog.v2_bug", true))
	return httpx.Errorf(http.StatusInternalServerError, "v2_bug", "catalog v2 failed this read (deploy.catalog.v2=bad: one read in %d fails)", badEvery)
}

// mark puts this instance's version on p if it is v2 (v1's answers are unchanged).
func (r *release) mark(p *Product) {
	if r.v2() {
		p.CatalogVersion = r.version
	}
}
