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
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/testenv"
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

// TestOpenAPISecurityMatchesAuth: an operation that declares `security: []` answers a
// caller without a token (here an upstream error, as no upstream runs), and one that
// declares a bearer token refuses that caller with 401 before calling anything. The
// document says which operations are public; the gateway must agree.
func TestOpenAPISecurityMatchesAuth(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]struct {
			Security *[]map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	h := testGateway().Handler()
	public := 0
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if op.Security == nil {
				t.Errorf("%s %s declares no security: say `security: []` if it is public", method, path)
				continue
			}
			concrete := strings.NewReplacer("{sku}", "LAB-MUG", "{id}", "o-1").Replace(path)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(strings.ToUpper(method), concrete, strings.NewReader("{}")))
			isPublic := len(*op.Security) == 0
			if isPublic {
				public++
			}
			if got := rec.Code == http.StatusUnauthorized; got == isPublic {
				t.Errorf("%s %s: security %v, but without a token it answers %d %s", method, path, *op.Security, rec.Code, rec.Body)
			}
		}
	}
	if public != 5 {
		t.Errorf("%d public operations, want 5 (register, login, both product reads, this document)", public)
	}
}

// TestOpenAPILint runs Redocly's CLI, as a new user of the API would, on the document
// with its recommended rules (redocly.yaml): no error and no warning. scripts/deps.sh
// installs the CLI, pinned, under the user cache directory; the test checks it runs
// the version deps.sh pins, since another version may judge by other rules.
func TestOpenAPILint(t *testing.T) {
	t.Parallel()
	redocly, want := redoclyCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, redocly, "lint", "--config=redocly.yaml", "--format=json", "openapi.json")
	// No usage telemetry sent to Redocly, no update notice: a test talks to nobody.
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run() // exits 1 on any error; a warning alone exits 0, so the report decides
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %s: %v\n%s", redocly, err, stderr.String())
	}
	var report struct {
		Totals struct {
			Errors, Warnings int
		} `json:"totals"`
		Version  string `json:"version"`
		Problems []struct {
			RuleID   string `json:"ruleId"`
			Severity string `json:"severity"`
			Message  string `json:"message"`
			Location []struct {
				Pointer string `json:"pointer"`
				Start   struct{ Line, Col int }
			} `json:"location"`
		} `json:"problems"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &report); jerr != nil {
		t.Fatalf("redocly lint (%v) wrote no JSON report: %v\nstdout:\n%s\nstderr:\n%s", err, jerr, stdout.String(), stderr.String())
	}
	if report.Version != want {
		t.Fatalf("redocly %s ran, want %s (run scripts/deps.sh)", report.Version, want)
	}
	for _, p := range report.Problems {
		where := ""
		if len(p.Location) > 0 {
			l := p.Location[0]
			where = fmt.Sprintf("openapi.json:%d:%d %s", l.Start.Line, l.Start.Col, l.Pointer)
		}
		t.Errorf("%s %s: %s (%s)", p.Severity, p.RuleID, p.Message, where)
	}
	if report.Totals.Errors+report.Totals.Warnings != len(report.Problems) || (err != nil && len(report.Problems) == 0) {
		t.Errorf("redocly lint: %v, totals %+v for %d problems listed\n%s", err, report.Totals, len(report.Problems), stderr.String())
	}
}

// redoclyCLI returns the redocly executable scripts/deps.sh installs and the version it
// pins, or skips (fails under CI=true) saying how to install it.
func redoclyCLI(t *testing.T) (path, version string) {
	t.Helper()
	deps, err := os.ReadFile(filepath.Join("..", "..", "scripts", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^redocly_version=(\S+)$`).FindSubmatch(deps)
	if m == nil {
		t.Fatal("scripts/deps.sh pins no redocly_version")
	}
	version = string(m[1])
	cache, err := os.UserCacheDir()
	if err != nil {
		testenv.Missing(t, "Redocly CLI", "scripts/deps.sh", err)
	}
	dir := filepath.Join(cache, "microlab", "node")
	pkg, err := os.ReadFile(filepath.Join(dir, "node_modules", "@redocly", "cli", "package.json"))
	if err != nil {
		testenv.Missing(t, "Redocly CLI "+version, "scripts/deps.sh", err)
	}
	var installed struct{ Version string }
	if err := json.Unmarshal(pkg, &installed); err != nil || installed.Version != version {
		testenv.Missing(t, "Redocly CLI "+version, "scripts/deps.sh",
			fmt.Errorf("%s holds version %q (%v)", dir, installed.Version, err))
	}
	path = filepath.Join(dir, "node_modules", ".bin", "redocly")
	if _, err := exec.LookPath(path); err != nil {
		testenv.Missing(t, "Redocly CLI "+version, "scripts/deps.sh", err)
	}
	return path, version
}
