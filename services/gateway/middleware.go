package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"microlab/observability"
	"microlab/services/platform/httpx"
)

// headerError is an API error that also sets response headers (Retry-After on 429 and
// 503, WWW-Authenticate on 401). It unwraps to the *httpx.Error httpx.WriteError writes.
type headerError struct {
	err    *httpx.Error
	header http.Header
}

func (e *headerError) Error() string { return e.err.Error() }
func (e *headerError) Unwrap() error { return e.err }

func withHeader(e *httpx.Error, kv ...string) error {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &headerError{err: e, header: h}
}

// retryAfter renders a delay as Retry-After seconds (rounded up; at least 1).
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// handle adapts a handler that returns an error: the error is written in the standard
// shape ({"error": {"code", "message"}}) with any headers it carries.
func handle(log *slog.Logger, f httpx.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			writeError(w, r, log, err)
		}
	})
}

func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var he *headerError
	if errors.As(err, &he) {
		for k, vs := range he.header {
			w.Header()[k] = vs
		}
	}
	httpx.WriteError(w, r, log, err)
}

// recoverer turns a panic in a handler into a logged 500 (JSON) instead of a dropped
// connection. A panic is always a bug of ours: anything a client can get wrong is
// answered with a 4xx long before.
func recoverer(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // net/http's way to abort a response; it handles it
			}
			log.ErrorContext(r.Context(), "panic serving request", "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			httpx.WriteError(w, r, log, httpx.Errorf(http.StatusInternalServerError, "internal", "internal error"))
		}()
		next.ServeHTTP(w, r)
	})
}

// jsonRoutes serves mux, answering requests it has no route for in the API's error
// shape: 404 not_found for an unknown path, 405 method_not_allowed (with Allow) for a
// known path and the wrong method. ServeMux's own answers are plain text.
func jsonRoutes(log *slog.Logger, mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			// Routed: the span and the metrics name /api/v1/orders/{id}, not /api/v1/.
			observability.Routed(mux).ServeHTTP(w, r)
			return
		}
		// No route: let the mux's own handler say which (404, or 405 with Allow), but
		// capture its plain-text answer and rewrite it as JSON.
		c := &capture{header: http.Header{}}
		h.ServeHTTP(c, r)
		if c.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", c.header.Get("Allow"))
			httpx.WriteError(w, r, log, httpx.Errorf(http.StatusMethodNotAllowed, "method_not_allowed",
				"%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, c.header.Get("Allow")))
			return
		}
		httpx.WriteError(w, r, log, httpx.Errorf(http.StatusNotFound, "not_found", "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
}

// capture is a ResponseWriter that only remembers the status and headers.
type capture struct {
	header http.Header
	status int
}

func (c *capture) Header() http.Header { return c.header }
func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return len(b), nil
}
func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}
