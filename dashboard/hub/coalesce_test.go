package hub

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"
)

// Many Adds from several goroutines within one frame come out as one flush with the
// summed counts; Flush on an empty Coalescer calls nothing.
func TestCoalescerSumsConcurrentAdds(t *testing.T) {
	var flushes []map[string]int
	c := NewCoalescer(time.Hour, func(m map[string]int) { flushes = append(flushes, m) })

	const workers, perWorker = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range perWorker {
				c.Add("orders→shop.events→payments", 1)
				c.Add(fmt.Sprintf("edge-%d", w), 2)
				c.Add("ignored", 0) // n <= 0 adds nothing, not even the key
			}
		})
	}
	wg.Wait()
	c.Flush()

	want := map[string]int{"orders→shop.events→payments": workers * perWorker}
	for w := range workers {
		want[fmt.Sprintf("edge-%d", w)] = 2 * perWorker
	}
	if len(flushes) != 1 {
		t.Fatalf("got %d flushes, want 1", len(flushes))
	}
	if !maps.Equal(flushes[0], want) {
		t.Fatalf("flushed %v, want %v", flushes[0], want)
	}
	c.Flush()
	if len(flushes) != 1 {
		t.Fatalf("an empty Coalescer flushed: %v", flushes[1:])
	}
}

// With Run's own clock: Adds made within one frame arrive in one flush, and an idle
// Coalescer stays silent frame after frame.
func TestCoalescerRunFlushesPerFrameOnlyWhenBusy(t *testing.T) {
	const frame = 300 * time.Millisecond
	got := make(chan map[string]int, 16)
	c := NewCoalescer(frame, func(m map[string]int) { got <- m })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go c.Run(ctx)

	// Align with the frame clock: right after a flush, a whole frame lies ahead, far more
	// than the Adds below take, so they all land in the same frame.
	c.Add("sync", 1)
	select {
	case <-got:
	case <-time.After(10 * frame):
		t.Fatal("no flush within 10 frames")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				c.Add("a→b", 1)
			}
		})
	}
	wg.Wait()
	select {
	case m := <-got:
		if !maps.Equal(m, map[string]int{"a→b": 2000}) {
			t.Fatalf("flushed %v, want a→b: 2000", m)
		}
	case <-time.After(10 * frame):
		t.Fatal("no flush within 10 frames")
	}

	select {
	case m := <-got:
		t.Fatalf("flushed %v while idle", m)
	case <-time.After(4 * frame):
	}
}
