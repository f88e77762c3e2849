package main

import (
	"testing"
	"time"

	"microlab/services/platform/control"
)

// fixedKnobs are a Config's breaker and timeout with no lab settings over them.
func fixedKnobs(failures int, openFor, timeout time.Duration) *knobs {
	return &knobs{cfg: Config{BreakerFailures: failures, BreakerOpenFor: openFor, UpstreamTimeout: timeout, UpstreamRetries: 1}}
}

// TestKnobsFollowSettings: at "env" (the default) every tunable is the Config's — the
// gateway's environment — and a setting overrides it, read afresh at every call.
func TestKnobsFollowSettings(t *testing.T) {
	t.Parallel()
	cfg := Config{UpstreamTimeout: 300 * time.Millisecond, UpstreamRetries: 1, BreakerFailures: 5, BreakerOpenFor: 10 * time.Second,
		RateLimitRPS: 100, RateLimitBurst: 200}
	cur := control.Defaults()
	k := &knobs{cfg: cfg, cur: func() control.Settings { return cur }}
	if b := k.breaker(); b != (breakerConfig{enabled: true, failures: 5, openFor: 10 * time.Second}) {
		t.Errorf("defaults: breaker %+v", b)
	}
	if k.timeout() != cfg.UpstreamTimeout || k.retries() != 1 {
		t.Errorf("defaults: timeout %s retries %d", k.timeout(), k.retries())
	}
	if rps, burst := k.rate(); rps != 100 || burst != 200 {
		t.Errorf("defaults: rate %v/%d", rps, burst)
	}
	set := func(key, value string) {
		t.Helper()
		v, err := control.Validate(key, value)
		if err != nil {
			t.Fatal(err)
		}
		values := map[string]string{}
		for k, v := range cur.Values {
			values[k] = v
		}
		values[key] = v
		cur = control.Settings{Values: values, Revision: cur.Revision + 1}
	}
	set(control.GatewayBreakerEnabled, "false")
	set(control.GatewayBreakerFailures, "2")
	set(control.GatewayBreakerOpenFor, "2s")
	set(control.HTTPTimeout, "75ms")
	set(control.HTTPRetries, "0")
	set(control.GatewayRateLimitRPS, "5")
	set(control.GatewayRateLimitBurst, "0")
	if b := k.breaker(); b != (breakerConfig{enabled: false, failures: 2, openFor: 2 * time.Second}) {
		t.Errorf("set: breaker %+v", b)
	}
	if k.timeout() != 75*time.Millisecond || k.retries() != 0 {
		t.Errorf("set: timeout %s retries %d", k.timeout(), k.retries())
	}
	if rps, burst := k.rate(); rps != 5 || burst != 5 { // burst 0: one second's worth
		t.Errorf("set: rate %v/%d, want 5/5", rps, burst)
	}
	set(control.HTTPTimeout, "env")
	if k.timeout() != cfg.UpstreamTimeout {
		t.Errorf("back at env: timeout %s", k.timeout())
	}
	for key, bad := range map[string]string{control.GatewayBreakerFailures: "0", control.GatewayBreakerOpenFor: "6m",
		control.HTTPTimeout: "10ms", control.HTTPRetries: "6", control.GatewayRateLimitRPS: "-1", control.GatewayRateLimitBurst: "1e9",
		control.NotificationsMode: "later", control.GatewayBreakerEnabled: "maybe"} {
		if _, err := control.Validate(key, bad); err == nil {
			t.Errorf("%s=%s accepted", key, bad)
		}
	}
}

func TestIdempotentRequests(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rq   request
		want bool
	}{
		{request{Method: "GET"}, true},
		{request{Method: "HEAD"}, true},
		{request{Method: "POST"}, false},
		{request{Method: "POST", Header: map[string][]string{"Idempotency-Key": {"k1"}}}, true},
	} {
		if got := tc.rq.idempotent(); got != tc.want {
			t.Errorf("%s %v: idempotent %v, want %v", tc.rq.Method, tc.rq.Header, got, tc.want)
		}
	}
}
