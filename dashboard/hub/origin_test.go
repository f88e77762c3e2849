package hub

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	allowed := []string{"http://localhost:5173", "HTTPS://Dash.Example.com:443"}
	tests := []struct {
		name            string
		host            string
		origin, referer string
		want            bool
	}{
		{"same origin", "127.0.0.1:8080", "http://127.0.0.1:8080", "", true},
		{"same origin, case differs", "LocalHost:8080", "http://localhost:8080", "", true},
		{"other port is another origin", "localhost:8080", "http://localhost:8081", "", false},
		{"localhost is not 127.0.0.1", "127.0.0.1:8080", "http://localhost:8080", "", false},
		{"foreign site", "127.0.0.1:8080", "https://evil.example", "", false},
		{"allowed extra origin", "127.0.0.1:8080", "http://localhost:5173", "", true},
		{"allowed origin, default port normalised", "127.0.0.1:8080", "https://dash.example.com", "", true},
		{"allowed host, wrong scheme", "127.0.0.1:8080", "https://localhost:5173", "", false},
		{"default port on the Host side", "example.com:80", "http://example.com", "", true},
		{"null origin (sandboxed iframe, file://)", "127.0.0.1:8080", "null", "", false},
		{"not http(s)", "127.0.0.1:8080", "chrome-extension://abc", "", false},
		{"no Origin, same-origin Referer", "127.0.0.1:8080", "", "http://127.0.0.1:8080/switchboard?x=1", true},
		{"no Origin, foreign Referer", "127.0.0.1:8080", "", "https://evil.example/page", false},
		{"Origin wins over Referer", "127.0.0.1:8080", "https://evil.example", "http://127.0.0.1:8080/", false},
		{"neither header", "127.0.0.1:8080", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api/settings", nil)
			r.Host = tt.host
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			if tt.referer != "" {
				r.Header.Set("Referer", tt.referer)
			}
			if got := SameOrigin(r, allowed); got != tt.want {
				t.Errorf("SameOrigin(Host %q, Origin %q, Referer %q) = %v, want %v", tt.host, tt.origin, tt.referer, got, tt.want)
			}
		})
	}
}

func TestRequireSameOrigin(t *testing.T) {
	var reached int
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		w.WriteHeader(http.StatusNoContent)
	})
	h := RequireSameOrigin([]string{"http://localhost:5173"}, next)

	tests := []struct {
		name, method, origin string
		want                 int
	}{
		{"cross-origin POST refused", http.MethodPost, "https://evil.example", http.StatusForbidden},
		{"cross-origin DELETE refused", http.MethodDelete, "https://evil.example", http.StatusForbidden},
		{"POST without Origin or Referer refused", http.MethodPost, "", http.StatusForbidden},
		{"same-origin POST passes", http.MethodPost, "http://127.0.0.1:8080", http.StatusNoContent},
		{"allowed-origin PUT passes", http.MethodPut, "http://localhost:5173", http.StatusNoContent},
		{"cross-origin GET passes (safe method)", http.MethodGet, "https://evil.example", http.StatusNoContent},
		{"GET without Origin passes", http.MethodGet, "", http.StatusNoContent},
		{"OPTIONS passes", http.MethodOptions, "https://evil.example", http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached = 0
			r := httptest.NewRequest(tt.method, "/api/faults", strings.NewReader(`{"fault":"latency"}`))
			r.Host = "127.0.0.1:8080"
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			if tt.want != http.StatusForbidden {
				if reached != 1 {
					t.Fatalf("next handler reached %d times, want 1", reached)
				}
				return
			}
			if reached != 0 {
				t.Fatal("a refused request reached the next handler")
			}
			assertErrorBody(t, w.Header().Get("Content-Type"), w.Body.Bytes(), "forbidden_origin")
		})
	}
}

// assertErrorBody checks the shop's error shape, {"error": {"code", "message"}}.
func assertErrorBody(t *testing.T, contentType string, body []byte, wantCode string) {
	t.Helper()
	if !strings.HasPrefix(contentType, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", contentType)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if e.Error.Code != wantCode || e.Error.Message == "" {
		t.Fatalf("error = %+v, want code %q and a message", e.Error, wantCode)
	}
}
