package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/services/platform/control"
)

// Canary releases of catalog (docs/patterns/blue-green-and-canary.md).
//
// deploy.catalog.weights splits catalog's traffic between v1 and v2 (pick, in
// discovery.go). While v2 gets a share, the gateway judges it from its own answers, not
// from Prometheus: the request path must not depend on a scrape 15 s old, nor on
// Prometheus running at all. Every answer of a v2 instance goes into a sliding window
// of control.CanaryWindowSeconds one-second buckets; once the window holds at least
// control.CanaryMinSample answers and the fraction of failures (5xx, or no answer) is
// above deploy.catalog.canary_max_error_rate, the gateway rolls back:
//
//   - at once, in this gateway: the weights in force become v1:100 (rolledBack), so not
//     one more request goes to v2 while the write below travels;
//   - for everyone: it sets deploy.catalog.weights=v1:100 through the control plane,
//     with source "gateway canary", and notes why on the timeline. The switchboard, lab
//     settings and every other instance then see the same weights as this gateway.
//
// The rollback is counted (gateway_canary_rollbacks_total), logged with its numbers, and
// an event on the span of the request whose answer tipped the window. The lab runs one
// gateway; were there several, each would judge from its own traffic, and the write is
// idempotent: one that finds v1:100 already stored writes nothing.

// canary is the sliding window of v2's answers, and the rollback in progress.
type canary struct {
	now  func() time.Time
	wake chan string // the reason of a rollback to write (RunCanary); buffered 1

	mu      sync.Mutex
	buckets [control.CanaryWindowSeconds]second
	release string // the weights the window's answers were given under

	// rolledBack is the settings revision at which this gateway rolled back: while the
	// settings are still at that revision, the weights in force are v1:100 whatever they
	// say. Any later revision (the rollback's own write, first of all) ends it.
	rolledBack atomic.Pointer[int64]
}

// second is one second of v2's answers.
type second struct {
	sec           int64 // unix second it counts; a stale second is reused
	total, failed int
}

// add counts one answer given under weights and returns the window's totals. New
// weights start a new window: each release (a canary at 10 %, the same raised to 50 %,
// a blue-green switch) is judged on its own answers, not on a good one's before it.
func (c *canary) add(weights string, failed bool) (total, fails int) {
	now := c.now().Unix()
	c.mu.Lock()
	defer c.mu.Unlock()
	if weights != c.release {
		c.buckets = [len(c.buckets)]second{}
		c.release = weights
	}
	b := &c.buckets[now%int64(len(c.buckets))]
	if b.sec != now {
		*b = second{sec: now}
	}
	b.total++
	if failed {
		b.failed++
	}
	for _, b := range c.buckets {
		if now-b.sec < int64(len(c.buckets)) {
			total += b.total
			fails += b.failed
		}
	}
	return total, fails
}

// reset forgets the window: after a rollback, a new canary is judged on its own answers.
func (c *canary) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buckets = [len(c.buckets)]second{}
}

func (p *pool) current() control.Settings {
	if p.settings == nil {
		return control.Defaults()
	}
	return p.settings()
}

// weights are the weights in force: the lab's, unless this gateway has just rolled the
// canary back and the settings have not changed since.
func (p *pool) weights() control.Weights {
	cur := p.current()
	if rb := p.canary.rolledBack.Load(); rb != nil {
		if *rb == cur.Revision {
			return control.Weights{control.Versions[0]: 100}
		}
		p.canary.rolledBack.CompareAndSwap(rb, nil)
	}
	return cur.CatalogWeights()
}

// codeClass is the class of an attempt's outcome: 2xx, 4xx, 5xx, or error (no answer).
func codeClass(status int) string {
	if status == 0 {
		return "error"
	}
	return fmt.Sprintf("%dxx", status/100)
}

// answered records the outcome of one attempt to t (status 0: no answer, err says why)
// and, for a v2 instance while v2 has a share, judges the canary.
func (p *pool) answered(ctx context.Context, t target, status int, err error) {
	if p == nil {
		return
	}
	if errors.Is(err, errCallerGone) {
		return // says nothing about the instance
	}
	version := t.version
	if version == "" {
		version = staticVersion
	}
	if p.responses != nil {
		p.responses.WithLabelValues(p.upstream, version, codeClass(status)).Inc()
	}
	if version != "v2" {
		return
	}
	cur := p.current()
	w := p.weights()
	if w["v2"] == 0 {
		return // a fallback to v2 (v1 down) is not a canary to judge
	}
	total, fails := p.canary.add(w.String(), status == 0 || status >= 500)
	limit := cur.CanaryMaxErrorRate()
	if total < control.CanaryMinSample || float64(fails)/float64(total) <= limit {
		return
	}
	rev := cur.Revision
	if !p.canary.rolledBack.CompareAndSwap(nil, &rev) {
		return // rolled back already; the write is on its way
	}
	p.canary.reset()
	why := fmt.Sprintf("canary rollback: v2 failed %d of its last %d answers within %ds (%.0f%% > deploy.catalog.canary_max_error_rate %g); deploy.catalog.weights %s → %s",
		fails, total, control.CanaryWindowSeconds, 100*float64(fails)/float64(total), limit, cur.CatalogWeights(), control.WeightsAllV1)
	if p.rollbacks != nil {
		p.rollbacks.WithLabelValues(p.upstream).Inc()
	}
	trace.SpanFromContext(ctx).AddEvent("canary.rollback", trace.WithAttributes(
		attribute.String("upstream", p.upstream),
		attribute.Int("canary.answers", total),
		attribute.Int("canary.failures", fails),
		attribute.Float64("canary.max_error_rate", limit),
	))
	select {
	case p.canary.wake <- why:
	default: // one rollback write pending is enough
	}
}

// RunCanary writes each rollback the pool decides through p.rollback until ctx ends. It
// runs off the request path: a request that tipped the window does not wait for the
// lab database.
func (p *pool) RunCanary(ctx context.Context, log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case why := <-p.canary.wake:
			log.WarnContext(ctx, why, "upstream", p.upstream)
			if p.rollback == nil {
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := p.rollback(wctx, why); err != nil {
				log.ErrorContext(ctx, "canary rollback: writing deploy.catalog.weights failed (this gateway sends v1 only until the settings change)", "err", err)
			}
			cancel()
		}
	}
}

// rollbackSource is who the timeline says rolled the canary back.
const rollbackSource = "gateway canary"

// rollbackWeights sets deploy.catalog.weights to v1:100 through plane, unless it is
// already (another gateway, or the learner, was first), and notes why on the timeline.
func rollbackWeights(ctx context.Context, plane *control.Plane, why string) error {
	cur, err := plane.Store.Load(ctx)
	if err != nil {
		return err
	}
	if cur.Get(control.DeployCatalogWeights) == control.WeightsAllV1 {
		return nil
	}
	if _, err := plane.Set(ctx, control.DeployCatalogWeights, control.WeightsAllV1, rollbackSource); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
		return err
	}
	if _, err := plane.Note(ctx, CanaryRollbackKey, why, rollbackSource); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
		return err
	}
	return nil
}

// CanaryRollbackKey is the timeline's key for a rollback's reason.
const CanaryRollbackKey = "deploy.catalog canary rollback"
