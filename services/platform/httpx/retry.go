package httpx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// Retry is an http.RoundTripper that bounds every attempt of a call by a timeout read
// at the moment of the call (the lab's http.timeout, live) and retries failed idempotent
// calls with exponential backoff and jitter. Build the client with no Timeout of its own
// (NewClient(0)): the bound is here, so that a change of the setting applies to the next
// call without rebuilding anything.
//
// A failed call is no answer at all (connection refused, reset, the timeout) or a 502,
// 503 or 504. Only idempotent calls are retried (GET, HEAD, and a POST with an
// Idempotency-Key, which the server deduplicates): a plain POST that timed out may have
// done its work, and sending it again is not the client library's decision.
type Retry struct {
	Next    http.RoundTripper
	Timeout func() time.Duration // per attempt; <= 0: none
	Retries func() int           // retries after the first attempt; nil: none
	// Backoff is the pause before retry n (1, 2, ...); nil: Backoff.
	Backoff func(n int) time.Duration
}

// Idempotent reports whether sending req twice does no more than sending it once.
func Idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return req.Header.Get("Idempotency-Key") != ""
	}
	return false
}

// Backoff is the pause before retry n: 50ms, 100ms, 200ms, ... (at most 2s), each
// between half and all of that at random ("equal jitter"), so that many clients retrying
// at once do not hit a recovering server in lockstep.
func Backoff(n int) time.Duration {
	d := 50 * time.Millisecond << min(max(n-1, 0), 6)
	d = min(d, 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

// TimeoutError is an attempt that got no answer within its bound.
type TimeoutError struct {
	Method, URL string
	After       time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s %s: no answer within %s (http.timeout)", e.Method, e.URL, e.After)
}

// Unwrap makes a TimeoutError a context.DeadlineExceeded (transient for message handlers).
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// Timeout lets net/http and net.Error users see it as a timeout.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary: a timeout may well pass.
func (e *TimeoutError) Temporary() bool { return true }

// RoundTrip implements http.RoundTripper.
func (r *Retry) RoundTrip(req *http.Request) (*http.Response, error) {
	retries := 0
	if r.Retries != nil && Idempotent(req) && (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil) {
		retries = max(r.Retries(), 0)
	}
	backoff := r.Backoff
	if backoff == nil {
		backoff = Backoff
	}
	for n := 0; ; n++ {
		attempt := req
		if n > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			attempt = req.Clone(req.Context())
			attempt.Body = body
		}
		resp, err := r.once(attempt)
		if n >= retries || req.Context().Err() != nil || !failed(resp, err) {
			return resp, err
		}
		if resp != nil { // a 5xx we retry: its body is of no use
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
		}
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(backoff(n + 1)):
		}
	}
}

// once sends one attempt bounded by the current timeout. The bound covers reading the
// body too: the attempt's context ends when the body is closed.
func (r *Retry) once(req *http.Request) (*http.Response, error) {
	var timeout time.Duration
	if r.Timeout != nil {
		timeout = r.Timeout()
	}
	if timeout <= 0 {
		return r.Next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), timeout, &TimeoutError{Method: req.Method, URL: req.URL.Redacted(), After: timeout})
	resp, err := r.Next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		if req.Context().Err() == nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel, ctx: ctx, parent: req.Context()}
	return resp, nil
}

// failed: no answer, or an answer that says the server (or one behind it) is not
// able to serve right now.
func failed(resp *http.Response, err error) bool {
	if err != nil {
		return true
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// cancelBody ends an attempt's context when its body is closed, and names the timeout
// when reading the body outlasted it.
type cancelBody struct {
	io.ReadCloser
	cancel      context.CancelFunc
	ctx, parent context.Context
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.parent.Err() == nil {
		if cause := context.Cause(b.ctx); cause != nil && errors.Is(cause, context.DeadlineExceeded) {
			err = cause
		}
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
