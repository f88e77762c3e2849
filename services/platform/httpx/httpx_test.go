package httpx

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeRejectsBadInputWithA4xx(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		Qty  int    `json:"qty"`
	}
	for _, tc := range []struct {
		name, ct, body string
		status         int
		code           string
	}{
		{"ok", "application/json", `{"name":"a","qty":1}`, 200, ""},
		{"ok with charset", "application/json; charset=utf-8", `{"name":"a"}`, 200, ""},
		{"wrong content type", "text/plain", `{"name":"a"}`, 415, "unsupported_media_type"},
		{"no content type", "", `{"name":"a"}`, 415, "unsupported_media_type"},
		{"malformed", "application/json", `{"name":`, 400, "malformed_json"},
		{"syntax", "application/json", `{"name" "a"}`, 400, "malformed_json"},
		{"empty", "application/json", ``, 400, "malformed_json"},
		{"unknown field", "application/json", `{"name":"a","admin":true}`, 400, "unknown_field"},
		{"wrong type", "application/json", `{"qty":"many"}`, 400, "invalid_field"},
		{"huge number", "application/json", `{"qty":1e30}`, 400, "invalid_field"},
		{"array instead of object", "application/json", `[]`, 400, "malformed_json"},
		{"two objects", "application/json", `{"name":"a"}{"name":"b"}`, 400, "malformed_json"},
		{"too large", "application/json", `{"name":"` + strings.Repeat("x", 200) + `"}`, 413, "body_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			var b body
			err := Decode(rec, req, &b, 100)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			WriteError(rec, req, slog.New(slog.NewTextHandler(io.Discard, nil)), err)
			var out ErrorBody
			if jerr := json.Unmarshal(rec.Body.Bytes(), &out); jerr != nil {
				t.Fatalf("error body is not JSON: %s", rec.Body)
			}
			if strings.Contains(out.Error.Message, "main.") || strings.Contains(out.Error.Message, "int64") {
				t.Fatalf("error leaks Go types: %s", out.Error.Message)
			}
			if rec.Code != tc.status || out.Error.Code != tc.code || out.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", rec.Code, out, tc.status, tc.code)
			}
		})
	}
}

func TestInternalErrorsHideTheirDetail(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	WriteError(rec, req, slog.New(slog.NewTextHandler(io.Discard, nil)), io.ErrUnexpectedEOF)
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "EOF") {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}
