package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func testGateway() *Gateway {
	cfg := Config{UsersURL: "http://127.0.0.1:1", CatalogURL: "http://127.0.0.1:1", OrdersURL: "http://127.0.0.1:1",
		UpstreamTimeout: 1, BreakerFailures: 1, BreakerOpenFor: 1, RateLimitRPS: 0}
	return New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// TestOpenAPIMatchesRoutes: the document describes exactly the (method, path) pairs the
// gateway serves — no undocumented route, no documented route that does not exist.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	g := testGateway()
	var served []string
	for _, rt := range g.routes() {
		served = append(served, rt.Method+" "+rt.Pattern)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("OpenAPI document and routes differ:\ndocumented: %v\nserved:     %v", documented, served)
	}
	// And the mux really routes each documented operation (path parameters filled in).
	mux := g.mux()
	for _, op := range documented {
		method, path, _ := strings.Cut(op, " ")
		concrete := strings.NewReplacer("{sku}", "LAB-MUG", "{id}", "o-1").Replace(path)
		_, pattern := mux.Handler(httptest.NewRequest(method, concrete, nil))
		if pattern != op {
			t.Errorf("%s %s is routed to %q, want %q", method, concrete, pattern, op)
		}
	}
}

// TestOpenAPIRefsResolve: every $ref points at something the document defines.
func TestOpenAPIRefsResolve(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	refs := 0
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				refs++
				var node any = doc
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, ok := node.(map[string]any)
					if !ok || m[part] == nil {
						t.Errorf("unresolved $ref %s", ref)
						return
					}
					node = m[part]
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
	if refs == 0 {
		t.Fatal("no $ref found: is the document empty?")
	}
	// Every operation documents its error answers in the standard shape.
	paths := doc["paths"].(map[string]any)
	for path, ops := range paths {
		for method, op := range ops.(map[string]any) {
			responses := op.(map[string]any)["responses"].(map[string]any)
			if responses["429"] == nil {
				t.Errorf("%s %s: no 429 response", method, path)
			}
		}
	}
}

// TestNoRouteIsJSON checks the 404/405 rewriting without any upstream.
func TestNoRouteIsJSON(t *testing.T) {
	t.Parallel()
	h := testGateway().Handler()
	for _, tc := range []struct {
		method, path string
		status       int
	}{{"GET", "/api/v1/", 404}, {"POST", "/api/v1/home", 405}, {"PATCH", "/api/v1/orders/o-1", 405}} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || rec.Header().Get("Content-Type") != "application/json" || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: %d %q %s", tc.method, tc.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
	// A panic in a handler is a 500 in the error shape, not a dropped connection.
	rec := httptest.NewRecorder()
	recoverer(slog.New(slog.NewTextHandler(io.Discard, nil)), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("bug")
	})).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"code":"internal"`) {
		t.Fatalf("panic: %d %s", rec.Code, rec.Body)
	}
}
