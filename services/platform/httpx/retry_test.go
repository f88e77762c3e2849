package httpx_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"microlab/services/platform/httpx"
)

// TestRetry: failed idempotent calls (no answer, 502/503/504) are retried as often as
// the setting says at the moment of the call; a plain POST never; a POST with an
// Idempotency-Key is, with its body sent again.
func TestRetry(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var bodies atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		bodies.Store(string(b))
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	retries := int64(2)
	c := httpx.NewClient(0)
	c.Transport = &httpx.Retry{Next: c.Transport, Timeout: func() time.Duration { return time.Minute },
		Retries: func() int { return int(atomic.LoadInt64(&retries)) }, Backoff: func(int) time.Duration { return time.Millisecond }}
	send := func(method, key string) int64 {
		t.Helper()
		before := calls.Load()
		req, _ := http.NewRequest(method, srv.URL, strings.NewReader("hello"))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s: %d", method, resp.StatusCode)
		}
		return calls.Load() - before
	}
	if n := send("GET", ""); n != 3 {
		t.Errorf("GET with 2 retries: %d calls, want 3", n)
	}
	if n := send("POST", ""); n != 1 {
		t.Errorf("POST: %d calls, want 1", n)
	}
	if n := send("POST", "k1"); n != 3 || bodies.Load() != "hello" {
		t.Errorf("POST with an Idempotency-Key: %d calls (last body %q), want 3 with the body each time", n, bodies.Load())
	}
	atomic.StoreInt64(&retries, 0)
	if n := send("GET", ""); n != 1 {
		t.Errorf("GET with 0 retries: %d calls, want 1", n)
	}
}

// TestRetryTimeout: each attempt is bounded by the timeout in force when it starts, and
// a call that outlasts it fails with an error naming the bound (a
// context.DeadlineExceeded, i.e. transient for message handlers).
func TestRetryTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := httpx.NewClient(0)
	c.Transport = &httpx.Retry{Next: c.Transport, Timeout: func() time.Duration { return 100 * time.Millisecond }}
	start := time.Now()
	_, err := c.Get(srv.URL)
	var te *httpx.TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 100ms (http.timeout)") {
		t.Fatalf("slow server: %v", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", took)
	}
}
