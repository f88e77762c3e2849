package main

import (
	"math"
	"time"

	"microlab/services/platform/control"
)

// knobs are the gateway's tunables as they are right now: its Config (the environment)
// overridden, live, by the lab's settings (gateway.breaker.*, gateway.rate_limit.*,
// http.timeout, http.retries). A setting at "env" (control.FromEnv) leaves the Config's
// value in force. Every read takes the watcher's current snapshot (one atomic load), so a
// change applies to the next request without a restart.
type knobs struct {
	cfg Config
	cur func() control.Settings // nil: the Config alone (unit tests that set nothing)
}

func (k *knobs) settings() control.Settings {
	if k == nil || k.cur == nil {
		return control.Defaults()
	}
	return k.cur()
}

// breakerConfig is what a circuit breaker is built from.
type breakerConfig struct {
	enabled  bool
	failures int
	openFor  time.Duration
}

func (k *knobs) breaker() breakerConfig {
	s := k.settings()
	b := breakerConfig{enabled: s.BreakerEnabled(), failures: k.cfg.BreakerFailures, openFor: k.cfg.BreakerOpenFor}
	if n, ok := s.BreakerFailures(); ok {
		b.failures = n
	}
	if d, ok := s.BreakerOpenFor(); ok {
		b.openFor = d
	}
	return b
}

// timeout bounds one attempt of an upstream call.
func (k *knobs) timeout() time.Duration {
	if d, ok := k.settings().HTTPTimeout(); ok {
		return d
	}
	return k.cfg.UpstreamTimeout
}

// retries is how often a failed idempotent call is tried again.
func (k *knobs) retries() int {
	if n, ok := k.settings().HTTPRetries(); ok {
		return n
	}
	return k.cfg.UpstreamRetries
}

// rate is each client's token bucket: refill per second (0: no limit) and size. A burst
// of 0 from the setting means one second's worth of the rate (at least 1): a bucket of
// size 0 would refuse everything.
func (k *knobs) rate() (rps float64, burst int) {
	s := k.settings()
	rps, burst = k.cfg.RateLimitRPS, k.cfg.RateLimitBurst
	if v, ok := s.RateLimitRPS(); ok {
		rps = v
	}
	if v, ok := s.RateLimitBurst(); ok {
		burst = v
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(rps)))
	}
	return rps, burst
}
