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

// tickClock is a clock whose tickers tick when the test says so: a send on tick returns
// once Run has taken the tick, that is once it has finished with the tick before.
type tickClock struct{ tick chan time.Time }

func (c tickClock) NewTicker(time.Duration) ticker { return tickTicker(c.tick) }

func (tickClock) AfterFunc(time.Duration, func()) timer { panic("the Coalescer uses no timers") }

type tickTicker chan time.Time

func (t tickTicker) Chan() <-chan time.Time { return t }
func (tickTicker) Stop()                    {}

// Run flushes once per frame, on frames the test makes: Adds made within one frame
// arrive in one flush, Adds of different frames in different flushes, and an idle
// Coalescer stays silent frame after frame.
func TestCoalescerRunFlushesPerFrameOnlyWhenBusy(t *testing.T) {
	got := make(chan map[string]int, 16)
	c := NewCoalescer(300*time.Millisecond, func(m map[string]int) { got <- m })
	clk := tickClock{make(chan time.Time)}
	c.clock = clk
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go c.Run(ctx)
	frame := func() {
		t.Helper()
		select {
		case clk.tick <- time.Now():
		case <-time.After(time.Minute):
			t.Fatal("Run does not take its ticks")
		}
	}
	flushed := func(want map[string]int) {
		t.Helper()
		select {
		case m := <-got:
			if !maps.Equal(m, want) {
				t.Fatalf("flushed %v, want %v", m, want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("no flush of %v", want)
		}
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
	frame()
	flushed(map[string]int{"a→b": 2000})

	c.Add("x", 1)
	frame()
	flushed(map[string]int{"x": 1})
	c.Add("y", 2)
	frame()
	flushed(map[string]int{"y": 2})

	// Four idle frames, and one more: once Run has taken the fifth tick it is done with
	// the four before, so whatever they flushed is in got by now.
	for range 5 {
		frame()
	}
	select {
	case m := <-got:
		t.Fatalf("flushed %v while idle", m)
	default:
	}
}

// With its own clock, Run flushes by itself.
func TestCoalescerRunFlushesOnItsOwn(t *testing.T) {
	got := make(chan map[string]int, 16)
	c := NewCoalescer(10*time.Millisecond, func(m map[string]int) { got <- m })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go c.Run(ctx)
	c.Add("a→b", 3)
	select {
	case m := <-got:
		if !maps.Equal(m, map[string]int{"a→b": 3}) {
			t.Fatalf("flushed %v, want a→b: 3", m)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run flushed nothing")
	}
}
