package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

// An address field needs something a label printer can print: not only spaces, and
// not only invisible characters (zero-width space, joiner, BOM), which TrimSpace keeps.
func TestVisible(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"Ada Lovelace": true, "Zoë": true, "東京": true, "-": true, "1": true,
		"": false, "   ": false, "\u200b": false, "\u200b\u200d\ufeff": false, "\t\n": false, "\u00a0": false,
	} {
		if got := visible(s); got != want {
			t.Errorf("visible(%q) = %v, want %v", s, got, want)
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

// FuzzOrderBody: whatever the body, decoding and validating an order never panics, and
//   - a failure is an *httpx.Error (anything else would be a 500): a 400, or a 413 for a
//     body over httpx.DefaultMaxBody, with a code and a message that reach the client
//     unchanged in the standard {"error": {"code", "message"}} shape;
//   - a success is a body that is JSON and satisfies every rule, checked here afresh
//     (checkAcceptedOrder), and converts to exactly that order for orders.
//
// Beside the seeds below, testdata/fuzz/FuzzOrderBody holds the bodies TestGateway sends
// and odd ones: truncated, huge numbers, wrong types, unicode, duplicate and case-folded
// keys, NULs, invalid UTF-8, 50 and 51 lines, a body over the limit.
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
			checkAcceptedOrder(t, body, o)
			return
		}
		var he *httpx.Error
		if !errors.As(err, &he) {
			t.Fatalf("not an API error (would be a 500): %v", err)
		}
		switch {
		case he.Status != http.StatusBadRequest && he.Status != http.StatusRequestEntityTooLarge:
			t.Fatalf("answered %d %q %q, want 400 or 413", he.Status, he.Code, he.Message)
		case he.Status == http.StatusRequestEntityTooLarge && len(body) <= httpx.DefaultMaxBody:
			t.Fatalf("413 for a body of %d bytes, within the limit of %d", len(body), httpx.DefaultMaxBody)
		case he.Code == "" || he.Message == "":
			t.Fatalf("answered %d without a code or a message: %q %q", he.Status, he.Code, he.Message)
		}
		// What the client reads: the same status, code and message, in the standard shape.
		w := httptest.NewRecorder()
		httpx.WriteError(w, r, slog.New(slog.DiscardHandler), err)
		var eb httpx.ErrorBody
		if jerr := json.Unmarshal(w.Body.Bytes(), &eb); jerr != nil || w.Code != he.Status ||
			eb.Error.Code != he.Code || eb.Error.Message != he.Message {
			t.Fatalf("written as %d %s (%v), want %d %q %q", w.Code, w.Body.Bytes(), jerr, he.Status, he.Code, he.Message)
		}
	})
}

// checkAcceptedOrder checks an order decodeOrder accepted against the rules, restated
// here rather than calling validate: a body that is JSON; 1 to maxLines lines, each a
// SKU of 1 to 64 of A-Z, 0-9 and '-' and a quantity from 1 to maxQty; a card of digits
// and spaces, 13 to 19 digits, passing the Luhn check; every address field present,
// not blank, at most maxAddressLen characters, the country two capital letters; every
// string valid UTF-8 without NUL (PostgreSQL would refuse it: a 500). And what goes to
// orders is that order.
func checkAcceptedOrder(t *testing.T, body []byte, o OrderRequest) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted %q: "+format, append([]any{body}, args...)...)
	}
	if !json.Valid(body) {
		fail("not JSON")
	}
	if len(o.Items) < 1 || len(o.Items) > maxLines {
		fail("%d lines", len(o.Items))
	}
	for i, it := range o.Items {
		if len(it.SKU) < 1 || len(it.SKU) > 64 || strings.Trim(it.SKU, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			fail("line %d: sku %q", i, it.SKU)
		}
		if it.Qty == nil || *it.Qty < 1 || *it.Qty > maxQty {
			fail("line %d: qty %v", i, it.Qty)
		}
	}
	if o.Payment == nil {
		fail("no payment")
	}
	digits := strings.ReplaceAll(o.Payment.Card, " ", "")
	if len(digits) < minCardDigits || len(digits) > maxCardDigits || strings.Trim(digits, "0123456789") != "" || !luhn(digits) {
		fail("card %q", o.Payment.Card)
	}
	a := o.ShippingAddress
	if a == nil {
		fail("no address")
	}
	for _, v := range []string{a.Name, a.Street, a.City, a.PostalCode, a.Country} {
		if strings.TrimSpace(v) == "" || utf8.RuneCountInString(v) > maxAddressLen || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			fail("address field %q", v)
		}
	}
	if len(a.Country) != 2 || strings.Trim(a.Country, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		fail("country %q", a.Country)
	}
	up := o.upstreamBody()
	if up.Card != o.Payment.Card || up.ShippingAddress != *a || len(up.Items) != len(o.Items) {
		fail("sent to orders as %+v", up)
	}
	for i, it := range up.Items {
		if it.SKU != o.Items[i].SKU || it.Qty != *o.Items[i].Qty {
			fail("line %d sent to orders as %+v", i, it)
		}
	}
}

// luhn reports whether a string of digits passes the Luhn check: doubling every second
// digit from the right (less 9 when that passes 9), the digits sum to a multiple of 10.
func luhn(digits string) bool {
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 1 {
			d = d*2%10 + d*2/10
		}
		sum += d
	}
	return sum%10 == 0
}
