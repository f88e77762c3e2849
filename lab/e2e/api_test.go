package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Bad input through the real stack: every request a client gets wrong is a 4xx with a
// JSON error, never a 5xx, and nothing is ordered. Includes what only orders can know
// (an unknown SKU) and what the gateway refuses at the edge.
func testBadInputThroughTheStack(t *testing.T, l *lab) {
	token := l.api.register(t, "badinput")
	valid := `{"items":[{"sku":"LAB-MUG","qty":1}],"payment":{"card":"4242 4242 4242 4242"},"shippingAddress":{"name":"A","street":"S","city":"C","postalCode":"P","country":"DE"}}`
	for _, tc := range []struct {
		name, method, path, ct, body, auth string
		status                             int
	}{
		{"unknown sku", "POST", "/api/v1/orders", "application/json", strings.Replace(valid, "LAB-MUG", "LAB-NOPE", 1), token, 422},
		{"malformed json", "POST", "/api/v1/orders", "application/json", `{"items":[`, token, 400},
		{"unknown field", "POST", "/api/v1/orders", "application/json", strings.Replace(valid, `"items"`, `"coupon":"FREE","items"`, 1), token, 400},
		{"missing address", "POST", "/api/v1/orders", "application/json", `{"items":[{"sku":"LAB-MUG","qty":1}],"payment":{"card":"4242 4242 4242 4242"}}`, token, 400},
		{"negative qty", "POST", "/api/v1/orders", "application/json", strings.Replace(valid, `"qty":1`, `"qty":-1`, 1), token, 400},
		{"huge qty", "POST", "/api/v1/orders", "application/json", strings.Replace(valid, `"qty":1`, `"qty":99999999999999999999`, 1), token, 400},
		{"bad card", "POST", "/api/v1/orders", "application/json", strings.Replace(valid, "4242 4242 4242 4242", "1234 5678 9012 3456", 1), token, 400},
		{"oversized body", "POST", "/api/v1/orders", "application/json", `{"items":[` + strings.Repeat(`{"sku":"LAB-MUG","qty":1},`, 5000) + `{"sku":"LAB-MUG","qty":1}]}`, token, 413},
		{"wrong content type", "POST", "/api/v1/orders", "text/plain", valid, token, 415},
		{"no token", "POST", "/api/v1/orders", "application/json", valid, "", 401},
		{"forged token", "POST", "/api/v1/orders", "application/json", valid, token[:len(token)-4] + "AAAA", 401},
		{"someone else's order", "GET", "/api/v1/orders/00000000-0000-0000-0000-000000000000", "", "", token, 404},
		{"unknown product", "GET", "/api/v1/products/LAB-NOPE", "", "", "", 404},
		{"duplicate email", "POST", "/api/v1/users", "application/json", `{"email":"alice@example.com","name":"Alice","password":"long enough pw"}`, "", 409},
		{"wrong password", "POST", "/api/v1/auth/login", "application/json", `{"email":"alice@example.com","password":"nope-nope"}`, "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, l.api.base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tc.auth)
			}
			resp, err := l.api.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if resp.StatusCode != tc.status || json.Unmarshal(raw, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("got %d %s, want %d with a JSON error", resp.StatusCode, raw, tc.status)
			}
		})
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if _, err := l.api.do(context.Background(), "GET", "/api/v1/orders", token, nil, nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Fatalf("bad requests created %d orders", len(list.Items))
	}
}

// Idempotency-Key: a retried request returns the same order; the same key with another
// body is refused; concurrent retries still make one order.
func testIdempotencyKey(t *testing.T, l *lab) {
	token := l.api.register(t, "idem")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A client retries a request whose answer it did not get (a 502/504 from a gateway
	// whose upstream was slow, or no answer at all) with the same key: that is what the
	// key is for, so the test does too.
	place := func(key string, req orderRequest) (string, int) {
		var out struct {
			OrderID string `json:"orderId"`
		}
		for {
			code, _ := l.api.do(ctx, "POST", "/api/v1/orders", token, req, map[string]string{"Idempotency-Key": key}, &out)
			if (code != 0 && code != http.StatusBadGateway && code != http.StatusGatewayTimeout) || ctx.Err() != nil {
				return out.OrderID, code
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	ids := make(chan string, 10)
	for range 10 {
		go func() { id, _ := place("same-key", newOrder(cardOK, skuOK, "DE")); ids <- id }()
	}
	first := <-ids
	for range 9 {
		if id := <-ids; id != first || id == "" {
			t.Fatalf("concurrent retries made different orders: %q vs %q", id, first)
		}
	}
	if _, code := place("same-key", newOrder(cardOK, "LAB-TEE", "DE")); code != http.StatusConflict {
		t.Fatalf("same key, different body: %d, want 409", code)
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if _, err := l.api.do(ctx, "GET", "/api/v1/orders", token, nil, nil, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("want exactly one order, got %d (%v)", len(list.Items), err)
	}
}

// Input only a hostile client sends — NUL bytes, invalid UTF-8, forged cursors — is a
// 4xx too, and never counts against orders' circuit breaker: after a burst of it, a
// normal request still goes through.
func testHostileInputDoesNotTripTheBreaker(t *testing.T, l *lab) {
	token := l.api.register(t, "hostile")
	nul := `{"items":[{"sku":"LAB-MUG","qty":1}],"payment":{"card":"4242 4242 4242 4242"},"shippingAddress":{"name":"A\u0000","street":"S","city":"C","postalCode":"P","country":"DE"}}`
	for range 10 { // well past the breaker's failure threshold
		for _, r := range []struct{ method, path, body string }{
			{"GET", "/api/v1/orders/%00", ""},
			{"GET", "/api/v1/orders/%FF", ""},
			{"GET", "/api/v1/orders?cursor=LTk5OTk5OTk5OTk5OTk5OTk6eA", ""}, // "-99999999999999999:x"
			{"POST", "/api/v1/orders", nul},
			{"POST", "/api/v1/auth/login", `{"email":"a\u0000@example.com","password":"x\u0000yyyyyyy"}`},
			{"POST", "/api/v1/users", `{"email":"nul@example.com","name":"N\u0000","password":"long enough\u0000"}`},
			{"GET", "/api/v1/products/%FF%00", ""},
		} {
			req, _ := http.NewRequest(r.method, l.api.base+r.path, strings.NewReader(r.body))
			req.Header.Set("Authorization", "Bearer "+token)
			if r.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := l.api.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Fatalf("%s %s: %d, want a 4xx", r.method, r.path, resp.StatusCode)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE")); err != nil {
		t.Fatalf("a normal order after hostile input: %v", err)
	}
}
