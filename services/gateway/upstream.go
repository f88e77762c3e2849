package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/observability"
	"microlab/services/platform/httpx"
)

// newHTTPClient is the ONE place the gateway builds the client it calls upstreams with,
// so cross-cutting transport concerns (tracing through otelhttp, metrics) are added in
// one spot. The client has no timeout of its own: each attempt is bounded by the
// current http.timeout (else UPSTREAM_TIMEOUT) in upstream.attempt, so a change of the
// setting applies to the next call.
func newHTTPClient(tel *observability.Telemetry) *http.Client {
	c := httpx.NewClient(0)
	c.Transport = tel.Transport(tagInstance{c.Transport})
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

// idempotent: GETs, and a POST with an Idempotency-Key (orders deduplicates it, so
// sending it twice places one order). A plain POST /orders that timed out may still have
// created the order; sending it again would be the client's decision, never the
// gateway's.
func (r request) idempotent() bool {
	return r.Method == http.MethodGet || r.Method == http.MethodHead ||
		(r.Method == http.MethodPost && r.Header.Get("Idempotency-Key") != "")
}

var (
	// errServerError marks a 5xx answer: the upstream is failing, not the client.
	errServerError = errors.New("upstream answered 5xx")
	// errCallerGone marks a call abandoned because our own client went away. It says
	// nothing about the upstream's health, so the breaker ignores it.
	errCallerGone = errors.New("caller went away")
)

// upstream is one internal service behind the gateway, with its own circuit breaker:
// after gateway.breaker.failures (else BREAKER_FAILURES) consecutive failures the gateway
// stops calling it for gateway.breaker.open_for (else BREAKER_OPEN_FOR) and answers 503
// at once, instead of making every client wait for a timeout and piling more load onto a
// struggling service. Then one trial request goes through (half-open): success closes
// the breaker, failure opens it again. With gateway.breaker.enabled=false calls go
// straight through (and the state is exported as closed).
//
// Only 5xx and transport errors (a timeout included) are failures. A 4xx means the
// upstream is healthy and the request was wrong, so it must not open the breaker (or a
// client sending bad input could cut everyone off).
//
// gobreaker fixes its settings when a breaker is built, so a change of the breaker
// settings builds a new one, closed with fresh counts, at the next call: the price of a
// live change is forgetting the failures counted so far (and an open breaker closing).
type upstream struct {
	name   string
	base   string
	client *http.Client
	knobs  *knobs
	log    *slog.Logger
	gauge  func(gobreaker.State)
	pool   *pool // the registry's instances (gateway.discovery=registry); nil: base only
	// requests counts attempts: gateway_upstream_requests_total{upstream,upstream_instance}
	// (nil without telemetry). Every upstream counts, so a chart shows the strangler fig
	// moving a family's traffic from one upstream (catalog) to another (monolith).
	requests *prometheus.CounterVec

	mu  sync.Mutex
	cfg breakerConfig
	cb  *gobreaker.CircuitBreaker[*reply] // nil while disabled
}

func newUpstream(name, base string, client *http.Client, k *knobs, log *slog.Logger, tel *observability.Telemetry) *upstream {
	u := &upstream{name: name, base: strings.TrimRight(base, "/"), client: client, knobs: k, log: log,
		gauge: func(gobreaker.State) {}}
	if tel != nil {
		g := tel.Metrics.CircuitBreakerState.WithLabelValues(name)
		g.Set(0)
		u.gauge = func(s gobreaker.State) { g.Set(float64(s)) } // closed 0, half-open 1, open 2
	}
	u.breaker()
	return u
}

// breaker returns the breaker for the settings in force (nil: disabled), building a new
// one when they changed since the last call.
func (u *upstream) breaker() (*gobreaker.CircuitBreaker[*reply], breakerConfig) {
	want := u.knobs.breaker()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cfg == want && (u.cb != nil || !want.enabled) {
		return u.cb, u.cfg
	}
	if u.cb != nil || u.cfg != (breakerConfig{}) {
		u.log.Info("circuit breaker rebuilt for new settings (state reset to closed)", "upstream", u.name,
			"enabled", want.enabled, "failures", want.failures, "open_for", want.openFor.String())
	}
	u.cfg, u.cb = want, nil
	u.gauge(gobreaker.StateClosed)
	if !want.enabled {
		return nil, want
	}
	var cb *gobreaker.CircuitBreaker[*reply]
	cb = gobreaker.NewCircuitBreaker[*reply](gobreaker.Settings{
		Name:        u.name,
		MaxRequests: 1, // one trial request while half-open
		Timeout:     want.openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(want.failures) },
		IsExcluded:  func(err error) bool { return errors.Is(err, errCallerGone) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			u.mu.Lock()
			current := u.cb == cb
			u.mu.Unlock()
			if !current { // a call still finishing on a breaker already replaced
				return
			}
			u.log.Warn("circuit breaker state changed", "upstream", name, "from", from.String(), "to", to.String())
			u.gauge(to)
		},
	})
	u.cb = cb
	return cb, want
}

// State is the breaker's state ("closed", "open", "half-open"; "closed" while disabled).
func (u *upstream) State() string {
	cb, _ := u.breaker()
	if cb == nil {
		return gobreaker.StateClosed.String()
	}
	return cb.State().String()
}

// call sends rq through the breaker. An idempotent request that failed (5xx or no
// answer) is retried up to http.retries times (else UPSTREAM_RETRIES), after a pause
// growing exponentially with jitter, so that many gateways retrying at once do not hit
// the upstream in lockstep. Each attempt goes through the breaker and counts there. The
// returned reply is never a 5xx: those come back as an error, translated by fail.
func (u *upstream) call(ctx context.Context, rq request) (*reply, error) {
	retries := 0
	if rq.idempotent() {
		retries = u.knobs.retries()
	}
	rep, err := u.attempt(ctx, rq)
	for n := 1; err != nil && n <= retries && retryable(err); n++ {
		select {
		case <-ctx.Done():
			return nil, &upstreamCallError{Upstream: u.name, Op: rq.Method + " " + rq.Path, Err: errCallerGone}
		case <-time.After(httpx.Backoff(n)):
		}
		u.log.DebugContext(ctx, "retrying idempotent upstream call", "upstream", u.name, "path", rq.Path, "attempt", n+1, "err", err)
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

// errTimeout is an attempt that got no answer within the timeout in force.
type errTimeout struct{ after time.Duration }

func (e errTimeout) Error() string { return fmt.Sprintf("no answer within %s", e.after) }

func (u *upstream) attempt(ctx context.Context, rq request) (*reply, error) {
	cb, _ := u.breaker()
	if cb == nil {
		return u.send(ctx, rq)
	}
	return cb.Execute(func() (*reply, error) {
		if cb.State() == gobreaker.StateHalfOpen { // admitted while half-open: the one trial
			markTrial(ctx, u.name)
		}
		return u.send(ctx, rq)
	})
}

// markTrial marks the span in ctx (the gateway's server span) as carrying a half-open
// breaker's trial call: the half-open state lasts one call, far too short for a scrape
// of circuit_breaker_state to catch, so the trace is where a learner sees it.
func markTrial(ctx context.Context, upstream string) {
	trace.SpanFromContext(ctx).SetAttributes(
		attribute.String("circuit_breaker.state", "half_open"),
		attribute.String("circuit_breaker.upstream", upstream),
	)
}

// send is one attempt, bounded by the timeout in force: connecting, sending and reading
// the whole answer.
func (u *upstream) send(parent context.Context, rq request) (*reply, error) {
	timeout := u.knobs.timeout()
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	gone := func(err error) error {
		if parent.Err() != nil {
			return fmt.Errorf("%w: %v", errCallerGone, err)
		}
		if ctx.Err() != nil {
			return errTimeout{after: timeout}
		}
		return err
	}
	var body io.Reader
	if rq.Body != nil {
		body = bytes.NewReader(rq.Body)
	}
	// The caller's context travels on: cancellation (and, later, the trace) reaches
	// the upstream.
	ctx = context.WithValue(ctx, upstreamNameKey{}, u.name)
	base, instance := u.base, staticInstance
	t, ok := u.pool.pick()
	if ok {
		base, instance = t.url, t.id
		ctx = context.WithValue(ctx, instanceKey{}, t.id)
	}
	if u.requests != nil {
		u.requests.WithLabelValues(u.name, instance).Inc()
	}
	req, err := http.NewRequestWithContext(ctx, rq.Method, base+rq.Path, body)
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
		err = gone(err)
		u.pool.answered(parent, t, 0, err) // by version, and the canary's judgement
		return nil, err
	}
	defer resp.Body.Close()
	u.pool.answered(parent, t, resp.StatusCode, nil)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody+1))
	if err != nil {
		if e := gone(err); e != err {
			return nil, e
		}
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(raw) > maxUpstreamBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxUpstreamBody)
	}
	rep := &reply{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if resp.StatusCode >= 500 {
		return rep, &serverError{status: resp.StatusCode, body: raw}
	}
	return rep, nil
}

// fail translates a failed upstream call into the gateway's answer: 503 with Retry-After
// while the breaker is open, 504 naming the upstream and the bound when it did not answer
// in time, 502 when it failed otherwise. The detail
// is logged, not shown: it is about our insides, not the client's request.
func (u *upstream) fail(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		_, cfg := u.breaker()
		return withHeader(httpx.Errorf(http.StatusServiceUnavailable, "upstream_unavailable",
			"%s is unavailable (circuit breaker open); retry later", u.name),
			"Retry-After", retryAfter(cfg.openFor))
	case errors.Is(err, errCallerGone):
		// Nobody is listening any more; the status is only for the access log.
		return httpx.Errorf(499, "client_closed_request", "client went away")
	}
	u.log.WarnContext(ctx, "upstream call failed", "upstream", u.name, "err", err)
	var te errTimeout
	if errors.As(err, &te) {
		// Named, unlike other failures: which service was slow and the bound it broke are
		// what a learner turning http.timeout down wants to see.
		return httpx.Errorf(http.StatusGatewayTimeout, "gateway_timeout", "%s did not answer within %s (http.timeout)", u.name, te.after)
	}
	var se *serverError
	if errors.As(err, &se) {
		if code, msg, ok := se.lesson(); ok {
			return httpx.Errorf(http.StatusBadGateway, code, "%s failed: %s", u.name, msg)
		}
	}
	return httpx.Errorf(http.StatusBadGateway, "bad_gateway", "%s failed to answer", u.name)
}

// lessonCodes are the upstream error codes the gateway passes on to its client, where
// the failure is the lesson the lab is showing rather than an inside to hide: the
// shared database's coupling breaking checkout (db.topology=shared, inventory.schema=v2).
var lessonCodes = map[string]bool{"schema_coupling": true}

// serverError is an upstream's 5xx answer (it wraps errServerError).
type serverError struct {
	status int
	body   []byte
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%s: %d %s", errServerError, e.status, snippet(e.body))
}

func (e *serverError) Unwrap() error { return errServerError }

// lesson returns the answer's error code and message if the code is one of lessonCodes.
func (e *serverError) lesson() (code, msg string, ok bool) {
	var body httpx.ErrorBody
	if json.Unmarshal(e.body, &body) != nil || !lessonCodes[body.Error.Code] {
		return "", "", false
	}
	return body.Error.Code, body.Error.Message, true
}

func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.TrimSpace(string(b))
}
