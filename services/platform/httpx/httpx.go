// Package httpx is the shop's HTTP kit: servers with graceful shutdown, JSON answers and
// errors in one shape ({"error": {"code", "message"}}), strict request decoding, health
// endpoints and clients that always have a timeout.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"reflect"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Error is an error with an HTTP status and a stable machine-readable code. Domain
// errors are translated into one of these once, at the edge.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorBody is the wire shape of every error.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err in the standard shape. Anything that is not an *Error is an
// internal error: logged with its detail, answered without it.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var he *Error
	if !errors.As(err, &he) {
		log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		he = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
	}
	var body ErrorBody
	body.Error.Code, body.Error.Message = he.Code, he.Message
	WriteJSON(w, he.Status, body)
}

// HandlerFunc is an http handler that returns an error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts f, writing its error in the standard shape.
func Handle(log *slog.Logger, f HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			WriteError(w, r, log, err)
		}
	})
}

// DefaultMaxBody bounds request bodies (an order with many lines is still far below).
const DefaultMaxBody = 64 << 10

// Decode reads one JSON object into v, strictly: the Content-Type must be JSON, the body
// at most maxBytes, no unknown fields, nothing after the object. Each failure is a 4xx
// *Error saying what was wrong.
func Decode(w http.ResponseWriter, r *http.Request, v any, maxBytes int64) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, maxBytes)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err, maxBytes)
		}
		return Errorf(http.StatusBadRequest, "malformed_json", "request body must be a single JSON object")
	}
	if field, ok := hasNUL(reflect.ValueOf(v), ""); ok {
		return Errorf(http.StatusBadRequest, "invalid_field", "field %q must not contain NUL characters", field)
	}
	return nil
}

// hasNUL finds a string containing NUL anywhere in v. JSON allows "\u0000" but
// PostgreSQL text does not: let it through and a client turns a request into our 500
// (and trips the gateway's breaker for everyone).
func hasNUL(v reflect.Value, path string) (string, bool) {
	switch v.Kind() {
	case reflect.String:
		return path, strings.IndexByte(v.String(), 0) >= 0
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return hasNUL(v.Elem(), path)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if f, ok := hasNUL(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); ok {
				return f, true
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if f, ok := hasNUL(it.Value(), path+"."+fmt.Sprint(it.Key())); ok {
				return f, true
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			sf := v.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "" {
				name = sf.Name
			}
			if sf.Anonymous {
				name = ""
			}
			child := strings.TrimPrefix(path+"."+name, ".")
			if name == "" {
				child = path
			}
			if f, ok := hasNUL(v.Field(i), child); ok {
				return f, true
			}
		}
	}
	return "", false
}

// SaneURL refuses, with a 400, request paths and query strings that are not valid UTF-8
// or contain control characters: no route of ours can match them, and passed on to SQL
// they would be a 500 instead of the client's error.
func SaneURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, s := range []string{r.URL.Path, r.URL.RawQuery} {
			if !Printable(s) {
				body := ErrorBody{}
				body.Error.Code, body.Error.Message = "invalid_url", "the URL must be valid UTF-8 without control characters"
				WriteJSON(w, http.StatusBadRequest, body)
				return
			}
		}
		if q, err := url.ParseQuery(r.URL.RawQuery); err == nil {
			for k, vs := range q {
				for _, v := range append(vs, k) {
					if !Printable(v) {
						body := ErrorBody{}
						body.Error.Code, body.Error.Message = "invalid_url", "query parameters must be valid UTF-8 without control characters"
						WriteJSON(w, http.StatusBadRequest, body)
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Printable reports whether s is valid UTF-8 without control characters.
func Printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func decodeError(err error, maxBytes int64) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return Errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes", maxBytes)
	case errors.As(err, &syn):
		return Errorf(http.StatusBadRequest, "malformed_json", "malformed JSON at byte %d", syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return Errorf(http.StatusBadRequest, "malformed_json", "request body is empty or truncated")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return Errorf(http.StatusBadRequest, "malformed_json", "request body must be a JSON object")
		}
		return Errorf(http.StatusBadRequest, "invalid_field", "field %q must be %s", typ.Field, jsonKind(typ.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return Errorf(http.StatusBadRequest, "unknown_field", "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return Errorf(http.StatusBadRequest, "malformed_json", "could not decode JSON: %v", err)
	}
}

// jsonKind names a Go type the way a client of a JSON API thinks of it (never
// "main.OrderRequest" or "int64").
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	default:
		return "an object"
	}
}

// Profiler registers Go's profiler under /debug/pprof/ (go tool pprof
// http://ADDR/debug/pprof/profile). A process serves it only when asked (PPROF=true,
// `lab up --pprof`): on the gateway's address it would be the shop's public door.
func Profiler(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Health registers /healthz (alive) and /readyz (ready to serve: ready() returns nil).
func Health(mux *http.ServeMux, ready func(ctx context.Context) error) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unready", "reason": err.Error()})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// Serve listens on addr and serves h until ctx ends, then stops accepting and waits up
// to grace for in-flight requests.
func Serve(ctx context.Context, addr string, h http.Handler, grace time.Duration, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, h, grace, log)
}

// ServeListener is Serve on an existing listener.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("http listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// NewClient returns a client whose every request is bounded by timeout.
func NewClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConnsPerHost: 32, IdleConnTimeout: 60 * time.Second,
		DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}}
}
