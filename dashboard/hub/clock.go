package hub

import "time"

// clock is where the hub's timers come from: pings, pong timeouts, stats reports, the
// shutdown grace and the Coalescer's frames. The hub uses the real one; the package's
// tests substitute a clock they advance by hand, so that a test about a timeout proves
// it with a delay the test controls instead of racing the wall clock of a busy machine.
type clock interface {
	NewTicker(d time.Duration) ticker
	// AfterFunc calls f in its own goroutine once d has passed, like time.AfterFunc.
	AfterFunc(d time.Duration, f func()) timer
}

// ticker is the part of *time.Ticker the hub uses.
type ticker interface {
	Chan() <-chan time.Time
	Stop()
}

// timer is the part of *time.Timer the hub uses.
type timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// realClock is the time package.
type realClock struct{}

func (realClock) NewTicker(d time.Duration) ticker { return realTicker{time.NewTicker(d)} }

func (realClock) AfterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

type realTicker struct{ *time.Ticker }

func (t realTicker) Chan() <-chan time.Time { return t.C }
