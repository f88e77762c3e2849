package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"microlab/services/platform/httpx"
)

// limiter rate-limits each client with its own token bucket (golang.org/x/time/rate):
// a burst of requests at once, refilled at a rate per second — gateway.rate_limit.burst
// and .rps, else RATE_LIMIT_BURST and RATE_LIMIT_RPS; a rate of 0 switches limiting off.
// A change of either applies live: the existing buckets are re-tuned (SetLimitAt,
// SetBurstAt), keeping the tokens they hold, at the next request after it. A client is
// the authenticated user when there is a valid token, else the remote IP. (The remote
// address, not X-Forwarded-For: nothing trusted sits in front of the gateway here, and a
// header a client sets itself would let it pick a fresh bucket per request.)
//
// Memory stays bounded: a bucket that has been idle long enough to refill completely is
// identical to a new one, so sweeping it loses nothing; and beyond maxClients tracked
// clients, newcomers share one overflow bucket rather than growing the map without end.
type limiter struct {
	current    func() (rps float64, burst int) // read at every request
	maxClients int

	mu       sync.Mutex
	rps      rate.Limit
	burst    int
	idle     time.Duration // after this long unused, a bucket is full again: evict it
	clients  map[string]*bucket
	overflow *rate.Limiter
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const defaultMaxClients = 100_000

// newLimiter returns a limiter following current.
func newLimiter(current func() (float64, int)) *limiter {
	return &limiter{current: current, maxClients: defaultMaxClients, clients: map[string]*bucket{}}
}

// fixedRate is a current for a limiter whose rate never changes.
func fixedRate(rps float64, burst int) func() (float64, int) {
	return func() (float64, int) { return rps, burst }
}

// tuneLocked applies the rate in force to every bucket, if it changed. Off (rate 0)
// forgets the buckets: when limiting comes back, every client starts with a full one.
func (l *limiter) tuneLocked(rps float64, burst int, now time.Time) {
	if rate.Limit(rps) == l.rps && burst == l.burst {
		return
	}
	l.rps, l.burst = rate.Limit(rps), burst
	if rps <= 0 {
		clear(l.clients)
		l.overflow = nil
		return
	}
	l.idle = max(time.Duration(float64(burst)/rps*float64(time.Second)), time.Minute)
	for _, b := range l.clients {
		b.lim.SetLimitAt(now, l.rps)
		b.lim.SetBurstAt(now, burst)
	}
	if l.overflow == nil {
		l.overflow = rate.NewLimiter(l.rps, burst)
	} else {
		l.overflow.SetLimitAt(now, l.rps)
		l.overflow.SetBurstAt(now, burst)
	}
}

// allow takes one token from key's bucket; when it is empty it reports how long until
// the next token.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	rps, burst := l.current()
	l.mu.Lock()
	l.tuneLocked(rps, burst, now)
	if l.rps <= 0 {
		l.mu.Unlock()
		return true, 0
	}
	b, ok := l.clients[key]
	if !ok {
		if len(l.clients) >= l.maxClients {
			l.sweepLocked(now)
		}
		if len(l.clients) < l.maxClients {
			b = &bucket{lim: rate.NewLimiter(l.rps, l.burst)}
			l.clients[key] = b
		} else {
			b = &bucket{lim: l.overflow} // not stored: the map is full of active clients
		}
	}
	b.seen = now
	l.mu.Unlock()

	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // we do not wait: give the token back, answer 429
		return false, d
	}
	return true, 0
}

func (l *limiter) sweepLocked(now time.Time) {
	for k, b := range l.clients {
		if now.Sub(b.seen) > l.idle {
			delete(l.clients, k)
		}
	}
}

// size is how many clients are tracked.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// Run evicts idle buckets until ctx ends.
func (l *limiter) Run(ctx context.Context) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			l.mu.Lock()
			l.sweepLocked(now)
			l.mu.Unlock()
		}
	}
}

// middleware answers 429 rate_limited with Retry-After when the caller's bucket is empty.
// It runs after identify, so an authenticated user has one bucket wherever they call
// from, and many users behind one NAT do not share one.
func (l *limiter) middleware(g *Gateway, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait := l.allow(clientKey(r), time.Now())
		if !ok {
			writeError(w, r, g.log, withHeader(httpx.Errorf(http.StatusTooManyRequests, "rate_limited",
				"too many requests; retry in %s s", retryAfter(wait)), "Retry-After", retryAfter(wait)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientKey identifies the caller for rate limiting.
func clientKey(r *http.Request) string {
	if id, ok := r.Context().Value(identityKey{}).(identity); ok && id.err == nil {
		return "user:" + id.p.UserID
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}
