package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"

	"microlab/observability"
	"microlab/services/platform/httpx"
)

// newHTTPClient is the ONE place the gateway builds the client it calls upstreams with,
// so cross-cutting transport concerns (tracing through otelhttp, metrics) are added in
// one spot. Every request is bounded by timeout.
func newHTTPClient(timeout time.Duration, tel *observability.Telemetry) *http.Client {
	c := httpx.NewClient(timeout)
	c.Transport = tel.Transport(c.Transport)
	return c
}

// maxUpstreamBody bounds what the gateway reads from an upstream (a full page of orders
// is far below); a larger answer is treated as a failure of the upstream.
const maxUpstreamBody = 8 << 20

// reply is an upstream's answer, read in full so the breaker can judge it and the body
// can be passed on.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// request is one call to an upstream. Path includes any query string.
type request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// idempotent: only GETs are ever retried. A POST /orders that timed out may still have
// created the order; sending it again would be the client's decision (with an
// Idempotency-Key), never the gateway's.
func (r request) idempotent() bool { return r.Method == http.MethodGet }

var (
	// errServerError marks a 5xx answer: the upstream is failing, not the client.
	errServerError = errors.New("upstream answered 5xx")
	// errCallerGone marks a call abandoned because our own client went away. It says
	// nothing about the upstream's health, so the breaker ignores it.
	errCallerGone = errors.New("caller went away")
)

// upstream is one internal service behind the gateway, with its own circuit breaker:
// after BREAKER_FAILURES consecutive failures the gateway stops calling it for
// BREAKER_OPEN_FOR and answers 503 at once, instead of making every client wait for a
// timeout and piling more load onto a struggling service. Then one trial request goes
// through (half-open): success closes the breaker, failure opens it again.
//
// Only 5xx and transport errors are failures. A 4xx means the upstream is healthy and
// the request was wrong, so it must not open the breaker (or a client sending bad input
// could cut everyone off).
type upstream struct {
	name    string
	base    string
	client  *http.Client
	breaker *gobreaker.CircuitBreaker[*reply]
	openFor time.Duration
	log     *slog.Logger
}

func newUpstream(name, base string, client *http.Client, failures int, openFor time.Duration, log *slog.Logger, tel *observability.Telemetry) *upstream {
	u := &upstream{name: name, base: strings.TrimRight(base, "/"), client: client, openFor: openFor, log: log}
	state := func(gobreaker.State) {}
	if tel != nil {
		g := tel.Metrics.CircuitBreakerState.WithLabelValues(name)
		g.Set(0)
		state = func(s gobreaker.State) { g.Set(float64(s)) } // closed 0, half-open 1, open 2
	}
	u.breaker = gobreaker.NewCircuitBreaker[*reply](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // one trial request while half-open
		Timeout:     openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(failures) },
		IsExcluded:  func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("circuit breaker state changed", "upstream", name, "from", from.String(), "to", to.String())
			state(to)
		},
	})
	return u
}

// State is the breaker's state ("closed", "open", "half-open").
func (u *upstream) State() string { return u.breaker.State().String() }

// call sends rq through the breaker. An idempotent request that failed (5xx or no
// answer) is retried once, after a jittered pause so that many gateways retrying at once
// do not hit the upstream in lockstep. The returned reply is never a 5xx: those come back
// as an error, translated by fail.
func (u *upstream) call(ctx context.Context, rq request) (*reply, error) {
	rep, err := u.attempt(ctx, rq)
	if err != nil && rq.idempotent() && retryable(err) {
		pause := 50*time.Millisecond + rand.N(100*time.Millisecond)
		select {
		case <-ctx.Done():
			return nil, &upstreamCallError{Upstream: u.name, Op: rq.Method + " " + rq.Path, Err: errCallerGone}
		case <-time.After(pause):
		}
		u.log.DebugContext(ctx, "retrying idempotent upstream call", "upstream", u.name, "path", rq.Path, "err", err)
		rep, err = u.attempt(ctx, rq)
	}
	if err != nil {
		return nil, &upstreamCallError{Upstream: u.name, Op: rq.Method + " " + rq.Path, Err: err}
	}
	return rep, nil
}

// upstreamCallError is any failure of a call to an upstream: no answer, a 5xx, an open
// breaker, or an answer that makes no sense. It is never the client's fault.
type upstreamCallError struct {
	Upstream, Op string
	Err          error
}

func (e *upstreamCallError) Error() string { return e.Upstream + " " + e.Op + ": " + e.Err.Error() }
func (e *upstreamCallError) Unwrap() error { return e.Err }

func retryable(err error) bool {
	return !errors.Is(err, errCallerGone) && !errors.Is(err, gobreaker.ErrOpenState) &&
		!errors.Is(err, gobreaker.ErrTooManyRequests)
}

func (u *upstream) attempt(ctx context.Context, rq request) (*reply, error) {
	return u.breaker.Execute(func() (*reply, error) {
		var body io.Reader
		if rq.Body != nil {
			body = bytes.NewReader(rq.Body)
		}
		// The caller's context travels on: cancellation (and, later, the trace) reaches
		// the upstream.
		req, err := http.NewRequestWithContext(ctx, rq.Method, u.base+rq.Path, body)
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		for k, vs := range rq.Header {
			req.Header[k] = vs
		}
		if rq.Body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		resp, err := u.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %v", errCallerGone, err)
			}
			return nil, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody+1))
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %v", errCallerGone, err)
			}
			return nil, fmt.Errorf("read answer: %w", err)
		}
		if len(raw) > maxUpstreamBody {
			return nil, fmt.Errorf("answer larger than %d bytes", maxUpstreamBody)
		}
		rep := &reply{Status: resp.StatusCode, Header: resp.Header, Body: raw}
		if resp.StatusCode >= 500 {
			return rep, fmt.Errorf("%w: %d %s", errServerError, resp.StatusCode, snippet(raw))
		}
		return rep, nil
	})
}

// fail translates a failed upstream call into the gateway's answer: 503 with Retry-After
// while the breaker is open, 502 when the upstream failed or did not answer. The detail
// is logged, not shown: it is about our insides, not the client's request.
func (u *upstream) fail(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return withHeader(httpx.Errorf(http.StatusServiceUnavailable, "upstream_unavailable",
			"%s is unavailable (circuit breaker open); retry later", u.name),
			"Retry-After", retryAfter(u.openFor))
	case errors.Is(err, errCallerGone):
		// Nobody is listening any more; the status is only for the access log.
		return httpx.Errorf(499, "client_closed_request", "client went away")
	}
	u.log.WarnContext(ctx, "upstream call failed", "upstream", u.name, "err", err)
	return httpx.Errorf(http.StatusBadGateway, "bad_gateway", "%s failed to answer", u.name)
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.TrimSpace(string(b))
}
