package hub

import (
	"context"
	"sync"
	"time"
)

// Coalescer turns a high-rate stream of small events into at most one update per frame.
//
// Why: the wiretap may see thousands of AMQP messages a second under `lab load`. One
// websocket message each would flood every browser (and the hub's drop counters) with
// updates nobody can see: the architecture map animates at screen rate anyway. Counting
// per key (e.g. the edge "orders→shop.events→payments") and flushing the counts every
// frame, say 250 ms, keeps the picture exact (no event is lost from the totals) at a
// bounded message rate, whatever the load.
type Coalescer struct {
	frame time.Duration
	flush func(map[string]int)
	clock clock // Run's frame clock: realClock; the package's tests tick it by hand

	mu      sync.Mutex
	counts  map[string]int
	flushMu sync.Mutex // one flush callback at a time, even when Flush is also called by hand
}

// NewCoalescer returns a Coalescer that, once Run, calls flush every frame with the
// counts added since the previous call, and does not call it when nothing was added.
// flush is called one call at a time, and owns the map it gets.
func NewCoalescer(frame time.Duration, flush func(map[string]int)) *Coalescer {
	return &Coalescer{frame: frame, flush: flush, clock: realClock{}, counts: make(map[string]int)}
}

// Add counts n more events for key. It is cheap (a map update under a mutex) and safe
// for concurrent use. n <= 0 is ignored.
func (c *Coalescer) Add(key string, n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.counts[key] += n
	c.mu.Unlock()
}

// Flush hands what has accumulated to the flush callback now, if anything has. Run calls
// it every frame; call it yourself to flush on demand. The callback runs outside the
// lock, so Adds never wait for it.
func (c *Coalescer) Flush() {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	if len(c.counts) == 0 {
		c.mu.Unlock()
		return
	}
	out := c.counts
	c.counts = make(map[string]int, len(out)) // the next frame likely has as many keys
	c.mu.Unlock()
	c.flush(out)
}

// Run flushes every frame until ctx ends. What was added in the last, unfinished frame
// is not flushed: at shutdown there is nobody left to show it to.
func (c *Coalescer) Run(ctx context.Context) {
	t := c.clock.NewTicker(c.frame)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			c.Flush()
		}
	}
}
