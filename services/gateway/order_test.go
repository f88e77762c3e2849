package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/httpx"
)

func TestCheckCard(t *testing.T) {
	t.Parallel()
	for card, ok := range map[string]bool{
		"4242 4242 4242 4242":  true,
		"4242424242424242":     true,
		"4000 0000 0000 0002":  true, // valid number; payments declines it
		"378282246310005":      true, // 15-digit Amex test number
		"4222222222222":        true, // 13 digits
		"6011 0009 9013 9424":  true,
		"4242 4242 4242 4241":  false, // Luhn
		"4242-4242-4242-4242":  false,
		"4242 4242 4242 424x":  false,
		"424242424242":         false, // 12 digits
		"42424242424242424242": false, // 20 digits
		"":                     false,
		"   ":                  false,
		"４２４２４２４２４２４２４２４２": false, // full-width digits are not ASCII digits
	} {
		if err := checkCard(card); (err == nil) != ok {
			t.Errorf("checkCard(%q) = %v, want ok=%v", card, err, ok)
		}
	}
}

func TestCheckIdempotencyKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values []string
		want   string
		ok     bool
	}{
		{nil, "", true},
		{[]string{"abc-123"}, "abc-123", true},
		{[]string{strings.Repeat("k", 255)}, strings.Repeat("k", 255), true},
		{[]string{"with space"}, "with space", true},
		{[]string{""}, "", false},
		{[]string{strings.Repeat("k", 256)}, "", false},
		{[]string{"a", "b"}, "", false},
		{[]string{"a\x00b"}, "", false},
		{[]string{"\x7f"}, "", false},
	} {
		h := http.Header{}
		for _, v := range tc.values {
			h.Add("Idempotency-Key", v)
		}
		got, err := checkIdempotencyKey(h)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: got %q, %v", tc.values, got, err)
		}
	}
}

func TestLimiterEvictsIdleClients(t *testing.T) {
	t.Parallel()
	l := newLimiter(fixedRate(10, 2))
	l.maxClients = 3
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		if ok, _ := l.allow(k, now); !ok {
			t.Fatal("first request refused")
		}
	}
	// Full of active clients: a newcomer shares the overflow bucket, the map stays bounded.
	for range 5 {
		l.allow("d", now)
	}
	if n := l.size(); n != 3 {
		t.Fatalf("tracked %d clients, want 3", n)
	}
	if ok, wait := l.allow("e", now); ok || wait <= 0 {
		t.Fatalf("overflow bucket should be empty: ok=%v wait=%s", ok, wait)
	}
	// Once the others are idle long enough to have refilled, they are evicted.
	later := now.Add(l.idle + time.Second)
	if ok, _ := l.allow("f", later); !ok {
		t.Fatal("new client refused after idle clients were evicted")
	}
	if n := l.size(); n != 1 {
		t.Fatalf("tracked %d clients after eviction, want 1", n)
	}
	// A client's bucket: burst 2, then 429 with the wait until the next token.
	if ok, _ := l.allow("f", later); !ok {
		t.Fatal("second request within the burst refused")
	}
	ok, wait := l.allow("f", later)
	if ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("third request: ok=%v wait=%s", ok, wait)
	}
	if off := newLimiter(fixedRate(0, 0)); !func() bool { ok, _ := off.allow("x", now); return ok }() {
		t.Fatal("RATE_LIMIT_RPS=0 must switch limiting off")
	}
}

// FuzzOrderBody: whatever the body, decoding and validating an order never panics and
// never produces anything but a 4xx in the standard error shape (or success).
func FuzzOrderBody(f *testing.F) {
	for _, seed := range []string{
		`{"items":[{"sku":"LAB-MUG","qty":2}],"payment":{"card":"4242 4242 4242 4242"},"shippingAddress":{"name":"A","street":"S","city":"C","postalCode":"P","country":"DE"}}`,
		`{"items":[{"sku":"LAB-MUG","qty":1e30}]}`,
		`{"items":[{"sku":"LAB-MUG","qty":9223372036854775808}]}`,
		`{"items":[{"sku":"LAB-MUG","qty":-1}]}`,
		`{"items":[null],"payment":null}`,
		`{"items":[],"payment":{"card":"4242"},"shippingAddress":{}}`,
		`{"items":[{"sku":"lab","qty":1}],"extra":1}`,
		`{"items":[{"sku":"LAB-MUG","qty":1}],"payment":{"card":"4242 4242 4242 4242"},"shippingAddress":{"name":"A","street":"S","city":"C","postalCode":"P","country":"de"}}`,
		`[]`, `null`, `"x"`, `{`, ``, `{"items":{}}`, `{} {}`, "{\"items\":[{\"sku\":\"\xff\",\"qty\":1}]}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/orders", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		o, err := decodeOrder(httptest.NewRecorder(), r)
		if err == nil {
			// Accepted bodies are fully valid: the conversion for orders must not panic.
			b := o.upstreamBody()
			if len(b.Items) < 1 || len(b.Items) > maxLines {
				t.Fatalf("accepted %d lines", len(b.Items))
			}
			return
		}
		var he *httpx.Error
		if !errors.As(err, &he) {
			t.Fatalf("not an API error (would be a 500): %v", err)
		}
		if he.Status < 400 || he.Status >= 500 || he.Code == "" || he.Message == "" {
			t.Fatalf("bad answer %d %q %q", he.Status, he.Code, he.Message)
		}
	})
}
