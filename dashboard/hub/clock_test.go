package hub

import (
	"sync"
	"time"
)

// fakeClock is a clock that stands still until the test advances it, so that a test
// about pings, pong timeouts or the shutdown grace decides when each interval has passed,
// however slowly the machine runs the hub's goroutines in between.
//
// Advance fires what falls due in time order: a ticker gets a tick (dropped if the last
// one was not taken, as with time.Ticker), a timer's func runs inside Advance, so that
// its effect (a read deadline moved into the past) has happened when Advance returns.
type fakeClock struct {
	epoch time.Time

	mu     sync.Mutex
	now    time.Duration // since epoch
	timers []*fakeTimer
	resets int // Reset calls: the hub resets a client's pong timer for every pong
	fired  int // timer funcs run
}

func newFakeClock() *fakeClock { return &fakeClock{epoch: time.Now()} }

// fakeTimer is one ticker (period > 0) or AfterFunc timer of a fakeClock.
type fakeTimer struct {
	c      *fakeClock
	d      time.Duration // as made or last reset
	at     time.Duration // when it is due, on the clock
	armed  bool
	period time.Duration
	ch     chan time.Time // a ticker's
	f      func()         // a timer's
}

func (c *fakeClock) NewTicker(d time.Duration) ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, d: d, at: c.now + d, armed: true, period: d, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return fakeTicker{t}
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, d: d, at: c.now + d, armed: true, f: f}
	c.timers = append(c.timers, t)
	return fakeFuncTimer{t}
}

// Now is how far the clock has been advanced.
func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock d forward, firing what falls due on the way.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now + d
	for {
		var next *fakeTimer
		for _, t := range c.timers {
			if t.armed && t.at <= end && (next == nil || t.at < next.at) {
				next = t
			}
		}
		if next == nil {
			break
		}
		c.now = next.at
		if next.period > 0 {
			select {
			case next.ch <- c.epoch.Add(c.now):
			default:
			}
			next.at += next.period
			continue
		}
		next.armed = false
		c.fired++
		f := next.f
		c.mu.Unlock()
		f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// counts reports the armed tickers, the armed timers made or reset with duration d
// (any duration if d is 0), and how often timers were reset and fired so far.
func (c *fakeClock) counts(d time.Duration) (tickers, timers, resets, fired int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		switch {
		case !t.armed:
		case t.period > 0:
			tickers++
		case d == 0 || t.d == d:
			timers++
		}
	}
	return tickers, timers, c.resets, c.fired
}

type fakeTicker struct{ t *fakeTimer }

func (f fakeTicker) Chan() <-chan time.Time { return f.t.ch }

func (f fakeTicker) Stop() {
	f.t.c.mu.Lock()
	defer f.t.c.mu.Unlock()
	f.t.armed = false
}

type fakeFuncTimer struct{ t *fakeTimer }

func (f fakeFuncTimer) Reset(d time.Duration) bool {
	c := f.t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := f.t.armed
	f.t.d, f.t.at, f.t.armed = d, c.now+d, true
	c.resets++
	return was
}

func (f fakeFuncTimer) Stop() bool {
	f.t.c.mu.Lock()
	defer f.t.c.mu.Unlock()
	was := f.t.armed
	f.t.armed = false
	return was
}
