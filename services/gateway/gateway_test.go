package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"microlab/services/platform/testenv"
)

// validOrder is a public order body that passes every edge check.
func validOrder() map[string]any {
	return map[string]any{
		"items":   []any{map[string]any{"sku": "LAB-MUG", "qty": 2}},
		"payment": map[string]any{"card": "4242 4242 4242 4242"},
		"shippingAddress": map[string]any{"name": "Ada Lovelace", "street": "1 Analytical St", "city": "London",
			"postalCode": "N1 1AA", "country": "DE"},
	}
}

// orderWith returns validOrder changed by f.
func orderWith(f func(o map[string]any)) map[string]any {
	o := validOrder()
	f(o)
	return o
}

func addr(o map[string]any) map[string]any { return o["shippingAddress"].(map[string]any) }

func lines(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{"sku": "LAB-MUG", "qty": 1}
	}
	return out
}

// TestGateway drives the public API against the real users and catalog (as processes)
// and a stand-in orders that records what reaches it.
func TestGateway(t *testing.T) {
	t.Parallel()
	up := startUpstreams(t)
	stub := &stubOrders{}
	orders := httptest.NewServer(stub)
	t.Cleanup(orders.Close)
	gw := startGateway(t, up, map[string]string{"ORDERS_URL": orders.URL})
	alice := login(t, gw, "alice@example.com", "alice-secret")
	var aliceID string
	{
		var c tokenClaims
		if _, _, err := jwt.NewParser().ParseUnverified(alice, &c); err != nil {
			t.Fatal(err)
		}
		aliceID = c.Subject
	}

	t.Run("login then products", func(t *testing.T) {
		t.Parallel()
		a := do(t, "GET", gw+"/api/v1/products", alice, nil, nil)
		var list struct {
			Items []struct {
				SKU, Name, Currency string
				PriceCents          int64
			}
		}
		a.decode(t, &list)
		if a.Status != 200 || len(list.Items) != 12 || list.Items[0].SKU != "LAB-BOTTLE" {
			t.Fatalf("products: %d %s", a.Status, a.Body)
		}
		// Products are public: no token needed.
		a = do(t, "GET", gw+"/api/v1/products/LAB-MUG", "", nil, nil)
		if a.Status != 200 || !strings.Contains(string(a.Body), `"priceCents":1200`) {
			t.Fatalf("product: %d %s", a.Status, a.Body)
		}
		for _, sku := range []string{"LAB-NOPE", "lab-mug", "x%20y"} {
			a = do(t, "GET", gw+"/api/v1/products/"+sku, "", nil, nil)
			if code, _ := a.errorCode(); a.Status != 404 || code != "not_found" {
				t.Fatalf("product %s: %d %s", sku, a.Status, a.Body)
			}
		}
	})

	t.Run("register", func(t *testing.T) {
		t.Parallel()
		email := testenv.Name("dave") + "@example.com"
		body := map[string]string{"email": email, "name": "Dave", "password": "dave-secret"}
		a := do(t, "POST", gw+"/api/v1/users", "", body, nil)
		var u struct{ ID, Email, Name string }
		a.decode(t, &u)
		if a.Status != 201 || u.ID == "" || u.Email != email {
			t.Fatalf("register: %d %s", a.Status, a.Body)
		}
		// users' 409 passes through unchanged.
		a = do(t, "POST", gw+"/api/v1/users", "", body, nil)
		if code, _ := a.errorCode(); a.Status != 409 || code != "email_taken" {
			t.Fatalf("duplicate: %d %s", a.Status, a.Body)
		}
		for _, tc := range []struct {
			body any
			code int
			want string
		}{
			{map[string]string{"email": email, "password": "dave-secret"}, 400, "missing_field"},
			{map[string]string{"email": "x", "name": "X", "password": "dave-secret"}, 400, "invalid_field"},
			{map[string]any{"email": email, "name": "X", "password": "p", "role": "admin"}, 400, "unknown_field"},
		} {
			a = do(t, "POST", gw+"/api/v1/users", "", tc.body, nil)
			if code, _ := a.errorCode(); a.Status != tc.code || code != tc.want {
				t.Fatalf("register %v: %d %s", tc.body, a.Status, a.Body)
			}
		}
		d := login(t, gw, strings.ToUpper(email), "dave-secret")
		a = do(t, "POST", gw+"/api/v1/auth/login", "", map[string]string{"email": email, "password": "wrong-password"}, nil)
		if code, _ := a.errorCode(); a.Status != 401 || code != "invalid_credentials" || d == "" {
			t.Fatalf("bad login: %d %s", a.Status, a.Body)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		t.Parallel()
		seed := devSeedBytes(t)
		_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
		pubKey := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		expired := signToken(t, seed, claimsFor(aliceID, time.Now().Add(-time.Minute)))
		wrongAud := func() string {
			c := claimsFor(aliceID, time.Now().Add(time.Hour))
			c.Audience = jwt.ClaimStrings{"someone-else"}
			return signToken(t, seed, c)
		}()
		// Forged: signed by another key but claiming users' kid.
		forged := func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claimsFor(aliceID, time.Now().Add(time.Hour)))
			tok.Header["kid"] = kidOf(pubKey)
			s, err := tok.SignedString(otherKey)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}()
		forgedKid := signToken(t, otherKey.Seed(), claimsFor(aliceID, time.Now().Add(time.Hour)))
		// alg "none": no signature at all.
		none := func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + kidOf(pubKey) + `"}`))
			c, _ := json.Marshal(claimsFor(aliceID, time.Now().Add(time.Hour)))
			return h + "." + base64.RawURLEncoding.EncodeToString(c) + "."
		}()
		// HS256 "signed" with users' PUBLIC key as the HMAC secret: the classic
		// algorithm-confusion attack on verifiers that trust the header's alg.
		hs256 := func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor(aliceID, time.Now().Add(time.Hour)))
			tok.Header["kid"] = kidOf(pubKey)
			s, err := tok.SignedString([]byte(pubKey))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}()
		big := orderWith(func(o map[string]any) { addr(o)["name"] = strings.Repeat("x", 70<<10) })

		for _, tc := range []struct {
			name   string
			token  string
			body   any
			header map[string]string
			status int
			code   string
			field  string // the message must name it
		}{
			{"malformed JSON", alice, `{"items": [`, nil, 400, "malformed_json", ""},
			{"not an object", alice, `[]`, nil, 400, "invalid_field", ""},
			{"null body", alice, `null`, nil, 400, "missing_field", "items"},
			{"trailing data", alice, `{"items":[]} {}`, nil, 400, "malformed_json", ""},
			{"unknown field", alice, orderWith(func(o map[string]any) { o["coupon"] = "FREE" }), nil, 400, "unknown_field", "coupon"},
			{"unknown nested field", alice, orderWith(func(o map[string]any) { addr(o)["planet"] = "Mars" }), nil, 400, "unknown_field", "planet"},
			{"missing items", alice, orderWith(func(o map[string]any) { delete(o, "items") }), nil, 400, "missing_field", "items"},
			{"missing payment", alice, orderWith(func(o map[string]any) { delete(o, "payment") }), nil, 400, "missing_field", "payment"},
			{"missing card", alice, orderWith(func(o map[string]any) { o["payment"] = map[string]any{} }), nil, 400, "missing_field", "payment.card"},
			{"missing address", alice, orderWith(func(o map[string]any) { delete(o, "shippingAddress") }), nil, 400, "missing_field", "shippingAddress"},
			{"missing city", alice, orderWith(func(o map[string]any) { delete(addr(o), "city") }), nil, 400, "missing_field", "shippingAddress.city"},
			{"blank street", alice, orderWith(func(o map[string]any) { addr(o)["street"] = "   " }), nil, 400, "missing_field", "shippingAddress.street"},
			{"missing sku", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"qty": 1}} }), nil, 400, "missing_field", "items[0].sku"},
			{"missing qty", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG"}} }), nil, 400, "missing_field", "items[0].qty"},
			{"negative qty", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG", "qty": -1}} }), nil, 400, "invalid_field", "items[0].qty"},
			{"zero qty", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG", "qty": 0}} }), nil, 400, "invalid_field", "qty"},
			{"qty 101", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG", "qty": 101}} }), nil, 400, "invalid_field", "qty"},
			{"huge qty 1e30", alice, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":1e30`, 1), nil, 400, "invalid_field", "qty"},
			{"huge qty 2^63", alice, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":9223372036854775808`, 1), nil, 400, "invalid_field", "qty"},
			{"fractional qty", alice, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":1.5`, 1), nil, 400, "invalid_field", "qty"},
			{"string qty", alice, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":"2"`, 1), nil, 400, "invalid_field", "qty"},
			{"zero items", alice, orderWith(func(o map[string]any) { o["items"] = []any{} }), nil, 400, "invalid_field", "items"},
			{"51 items", alice, orderWith(func(o map[string]any) { o["items"] = lines(51) }), nil, 400, "invalid_field", "items"},
			{"lower-case sku", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "lab-mug", "qty": 1}} }), nil, 400, "invalid_field", "items[0].sku"},
			{"sku with space", alice, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB MUG", "qty": 1}} }), nil, 400, "invalid_field", "sku"},
			{"sku too long", alice, orderWith(func(o map[string]any) {
				o["items"] = []any{map[string]any{"sku": strings.Repeat("A", 65), "qty": 1}}
			}), nil, 400, "invalid_field", "sku"},
			{"card not Luhn", alice, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242 4242 4242 4241"} }), nil, 400, "invalid_card", "card"},
			{"card with letters", alice, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242 4242 4242 424a"} }), nil, 400, "invalid_card", "card"},
			{"card with dashes", alice, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242-4242-4242-4242"} }), nil, 400, "invalid_card", "card"},
			{"card too short", alice, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242 4242 42"} }), nil, 400, "invalid_card", "card"},
			{"card too long", alice, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": strings.Repeat("0", 20)} }), nil, 400, "invalid_card", "card"},
			{"card as number", alice, strings.Replace(mustJSON(t, validOrder()), `"4242 4242 4242 4242"`, `4242424242424242`, 1), nil, 400, "invalid_field", "card"},
			{"lower-case country", alice, orderWith(func(o map[string]any) { addr(o)["country"] = "de" }), nil, 400, "invalid_field", "country"},
			{"three-letter country", alice, orderWith(func(o map[string]any) { addr(o)["country"] = "DEU" }), nil, 400, "invalid_field", "country"},
			{"address field too long", alice, orderWith(func(o map[string]any) { addr(o)["city"] = strings.Repeat("é", 201) }), nil, 400, "invalid_field", "shippingAddress.city"},
			{"oversized body", alice, big, nil, 413, "body_too_large", ""},
			{"wrong content type", alice, mustJSON(t, validOrder()), map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type", ""},
			{"no content type", alice, mustJSON(t, validOrder()), map[string]string{"Content-Type": ""}, 415, "unsupported_media_type", ""},
			{"idempotency key too long", alice, validOrder(), map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, 400, "invalid_idempotency_key", ""},
			{"idempotency key not ASCII", alice, validOrder(), map[string]string{"Idempotency-Key": "clé"}, 400, "invalid_idempotency_key", ""},
			{"idempotency key with tab", alice, validOrder(), map[string]string{"Idempotency-Key": "a\tb"}, 400, "invalid_idempotency_key", ""},
			{"missing JWT", "", validOrder(), nil, 401, "unauthorized", ""},
			{"not a bearer token", "", validOrder(), map[string]string{"Authorization": "Basic YWxpY2U6YWxpY2Utc2VjcmV0"}, 401, "invalid_token", ""},
			{"garbage JWT", "not.a.jwt", validOrder(), nil, 401, "invalid_token", ""},
			{"expired JWT", expired, validOrder(), nil, 401, "token_expired", ""},
			{"wrong audience", wrongAud, validOrder(), nil, 401, "invalid_token", ""},
			{"forged JWT (users' kid, other key)", forged, validOrder(), nil, 401, "invalid_token", ""},
			{"forged JWT (unknown kid)", forgedKid, validOrder(), nil, 401, "invalid_token", ""},
			{"alg none", none, validOrder(), nil, 401, "invalid_token", ""},
			{"HS256 with the public key", hs256, validOrder(), nil, 401, "invalid_token", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := do(t, "POST", gw+"/api/v1/orders", tc.token, tc.body, tc.header)
				code, msg := a.errorCode()
				if a.Status != tc.status || code != tc.code || msg == "" {
					t.Fatalf("got %d %s, want %d %s", a.Status, a.Body, tc.status, tc.code)
				}
				if !strings.Contains(msg, tc.field) {
					t.Fatalf("message %q does not name %q", msg, tc.field)
				}
				if ct := a.Header.Get("Content-Type"); ct != "application/json" {
					t.Fatalf("Content-Type %q", ct)
				}
				if tc.status == 401 && a.Header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
		// The same token checks on the other authenticated routes.
		for _, path := range []string{"/api/v1/orders", "/api/v1/orders/o-1", "/api/v1/home"} {
			for token, want := range map[string]string{"": "unauthorized", expired: "token_expired", none: "invalid_token", hs256: "invalid_token"} {
				a := do(t, "GET", gw+path, token, nil, nil)
				if code, _ := a.errorCode(); a.Status != 401 || code != want {
					t.Fatalf("GET %s: %d %s, want 401 %s", path, a.Status, a.Body, want)
				}
			}
		}
		// Nothing invalid ever reached orders: the only POSTs it saw are the valid ones
		// of the forwarding subtest.
		for _, r := range stub.requests() {
			if r.Method == "POST" && !strings.Contains(string(r.Body), "LAB-NOPE") && !strings.Contains(string(r.Body), "forwarded") {
				t.Fatalf("an invalid order reached orders: %s", r.Body)
			}
		}
	})

	t.Run("orders forwarding", func(t *testing.T) {
		t.Parallel()
		body := orderWith(func(o map[string]any) { addr(o)["name"] = "forwarded" })
		a := do(t, "POST", gw+"/api/v1/orders", alice, body,
			map[string]string{"Idempotency-Key": "key-1", "X-User-Id": "someone-else"})
		if a.Status != 202 || string(a.Body) != `{"orderId":"o-1","status":"pending","traceId":""}` {
			t.Fatalf("place: %d %s", a.Status, a.Body)
		}
		var got *stubRequest
		for _, r := range stub.requests() {
			if r.Method == "POST" && strings.Contains(string(r.Body), "forwarded") {
				got = &r
			}
		}
		if got == nil {
			t.Fatal("order never reached orders")
		}
		if got.UserID != aliceID || got.IdempotencyKey != "key-1" || got.ContentType != "application/json" {
			t.Fatalf("forwarded headers: user %q key %q ct %q", got.UserID, got.IdempotencyKey, got.ContentType)
		}
		var fwd map[string]any
		if err := json.Unmarshal(got.Body, &fwd); err != nil {
			t.Fatal(err)
		}
		if fwd["card"] != "4242 4242 4242 4242" || fwd["payment"] != nil || fwd["items"] == nil || fwd["shippingAddress"] == nil {
			t.Fatalf("forwarded body: %s", got.Body)
		}
		// orders' 4xx passes through unchanged.
		a = do(t, "POST", gw+"/api/v1/orders", alice, orderWith(func(o map[string]any) {
			o["items"] = []any{map[string]any{"sku": "LAB-NOPE", "qty": 1}}
		}), nil)
		if a.Status != 422 || string(a.Body) != `{"error":{"code":"unknown_sku","message":"unknown sku LAB-NOPE"}}`+"\n" {
			t.Fatalf("unknown sku: %d %q", a.Status, a.Body)
		}
		a = do(t, "GET", gw+"/api/v1/orders/o-7", alice, nil, nil)
		if a.Status != 200 || !strings.Contains(string(a.Body), `"orderId":"o-7"`) {
			t.Fatalf("get order: %d %s", a.Status, a.Body)
		}
		a = do(t, "GET", gw+"/api/v1/orders/nope", alice, nil, nil)
		if code, _ := a.errorCode(); a.Status != 404 || code != "not_found" {
			t.Fatalf("missing order: %d %s", a.Status, a.Body)
		}
		a = do(t, "GET", gw+"/api/v1/orders/boom", alice, nil, nil)
		if code, _ := a.errorCode(); a.Status != 502 || code != "bad_gateway" {
			t.Fatalf("upstream 500: %d %s", a.Status, a.Body)
		}
		a = do(t, "GET", gw+"/api/v1/orders?limit=7&cursor=abc%2Fdef&evil=1", alice, nil, nil)
		if a.Status != 200 {
			t.Fatalf("list: %d %s", a.Status, a.Body)
		}
		found := false
		for _, r := range stub.requests() {
			if r.Method == "GET" && r.Path == "/orders" && r.Query == "cursor=abc%2Fdef&limit=7" && r.UserID == aliceID {
				found = true
			}
		}
		if !found {
			t.Fatalf("list query not forwarded: %+v", stub.requests())
		}
		for _, q := range []string{"limit=0", "limit=101", "limit=abc", "limit=", "limit=1e3", "cursor=" + strings.Repeat("c", 600)} {
			a = do(t, "GET", gw+"/api/v1/orders?"+q, alice, nil, nil)
			if code, _ := a.errorCode(); a.Status != 400 || code != "invalid_parameter" {
				t.Fatalf("list ?%s: %d %s", q, a.Status, a.Body)
			}
		}
	})

	t.Run("home", func(t *testing.T) {
		t.Parallel()
		a := do(t, "GET", gw+"/api/v1/home", alice, nil, nil)
		var h struct {
			User     *struct{ ID, Email, Name string }
			Orders   []json.RawMessage
			Products []struct{ SKU string }
			Degraded []string
		}
		a.decode(t, &h)
		if a.Status != 200 || h.User == nil || h.User.Name != "Alice" || h.User.ID != aliceID ||
			len(h.Orders) != 2 || len(h.Products) != 4 || h.Products[0].SKU != "LAB-BOTTLE" || h.Degraded == nil || len(h.Degraded) != 0 {
			t.Fatalf("home: %d %s", a.Status, a.Body)
		}
		found := false
		for _, r := range stub.requests() {
			found = found || (r.Path == "/orders" && r.Query == "limit=5" && r.UserID == aliceID)
		}
		if !found {
			t.Fatal("home did not ask orders for the 5 most recent orders of the caller")
		}
	})

	t.Run("home degrades", func(t *testing.T) {
		t.Parallel()
		dead := startGateway(t, up, map[string]string{"ORDERS_URL": fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))})
		a := do(t, "GET", dead+"/api/v1/home", alice, nil, nil)
		var h map[string]json.RawMessage
		a.decode(t, &h)
		if a.Status != 200 || string(h["orders"]) != "null" || string(h["degraded"]) != `["orders"]` ||
			string(h["user"]) == "null" || string(h["products"]) == "null" {
			t.Fatalf("degraded home: %d %s", a.Status, a.Body)
		}
	})

	t.Run("routing errors are JSON", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			method, path string
			status       int
			code         string
		}{
			{"GET", "/api/v1/nope", 404, "not_found"},
			{"GET", "/api/v1/products/LAB-MUG/extra", 404, "not_found"},
			{"GET", "/elsewhere", 404, "not_found"},
			{"DELETE", "/api/v1/products", 405, "method_not_allowed"},
			{"PUT", "/api/v1/orders", 405, "method_not_allowed"},
			{"GET", "/api/v1/auth/login", 405, "method_not_allowed"},
		} {
			a := do(t, tc.method, gw+tc.path, "", nil, nil)
			if code, _ := a.errorCode(); a.Status != tc.status || code != tc.code || a.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %s: %d %s %s", tc.method, tc.path, a.Status, a.Header.Get("Content-Type"), a.Body)
			}
			if tc.status == 405 && a.Header.Get("Allow") == "" {
				t.Fatalf("%s %s: 405 without Allow", tc.method, tc.path)
			}
		}
		a := do(t, "GET", gw+"/api/v1/openapi.json", "", nil, nil)
		var doc map[string]any
		a.decode(t, &doc)
		if a.Status != 200 || doc["openapi"] != "3.1.0" {
			t.Fatalf("openapi: %d", a.Status)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		t.Parallel()
		limited := startGateway(t, up, map[string]string{"RATE_LIMIT_RPS": "0.2", "RATE_LIMIT_BURST": "3", "ORDERS_URL": orders.URL})
		bob := login(t, gw, "bob@example.com", "bob-secret") // from the unlimited gateway
		// Anonymous: keyed by IP.
		for i := range 4 {
			a := do(t, "GET", limited+"/api/v1/openapi.json", "", nil, nil)
			if i < 3 && a.Status != 200 {
				t.Fatalf("request %d: %d", i, a.Status)
			}
			if i == 3 {
				code, _ := a.errorCode()
				ra, err := strconv.Atoi(a.Header.Get("Retry-After"))
				if a.Status != 429 || code != "rate_limited" || err != nil || ra < 1 || ra > 5 {
					t.Fatalf("over the limit: %d %s Retry-After=%q", a.Status, a.Body, a.Header.Get("Retry-After"))
				}
			}
		}
		// Authenticated users have buckets of their own, even from the same IP.
		for _, tok := range []string{alice, bob} {
			for i := range 4 {
				a := do(t, "GET", limited+"/api/v1/orders/o-1", tok, nil, nil)
				if want := map[bool]int{true: 200, false: 429}[i < 3]; a.Status != want {
					t.Fatalf("user request %d: %d %s, want %d", i, a.Status, a.Body, want)
				}
			}
		}
	})

	t.Run("breaker opens on a dead upstream", func(t *testing.T) {
		t.Parallel()
		dead := startGateway(t, up, map[string]string{
			"ORDERS_URL":       fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)),
			"BREAKER_FAILURES": "3", "BREAKER_OPEN_FOR": "1m",
		})
		for i := range 3 { // POSTs are never retried: one call, one failure each
			a := do(t, "POST", dead+"/api/v1/orders", alice, validOrder(), nil)
			if code, _ := a.errorCode(); a.Status != 502 || code != "bad_gateway" {
				t.Fatalf("call %d: %d %s", i, a.Status, a.Body)
			}
		}
		start := time.Now()
		a := do(t, "POST", dead+"/api/v1/orders", alice, validOrder(), nil)
		took := time.Since(start)
		code, _ := a.errorCode()
		if a.Status != 503 || code != "upstream_unavailable" || a.Header.Get("Retry-After") != "60" {
			t.Fatalf("open breaker: %d %s Retry-After=%q", a.Status, a.Body, a.Header.Get("Retry-After"))
		}
		if took > 500*time.Millisecond {
			t.Fatalf("an open breaker should answer at once, took %s", took)
		}
		// The other upstreams are unaffected, and 4xx answers never count as failures.
		for range 5 {
			if a := do(t, "GET", dead+"/api/v1/products/LAB-NOPE", "", nil, nil); a.Status != 404 {
				t.Fatalf("catalog 404: %d", a.Status)
			}
		}
		a = do(t, "GET", dead+"/internal/breakers", "", nil, nil)
		var states map[string]string
		a.decode(t, &states)
		if states["orders"] != "open" || states["catalog"] != "closed" || states["users"] != "closed" {
			t.Fatalf("breakers: %v", states)
		}
	})

	t.Run("upstream timeout", func(t *testing.T) {
		t.Parallel()
		slow := startGateway(t, up, map[string]string{"ORDERS_URL": orders.URL, "UPSTREAM_TIMEOUT": "300ms"})
		start := time.Now()
		a := do(t, "GET", slow+"/api/v1/orders/slow", alice, nil, nil)
		took := time.Since(start)
		if code, _ := a.errorCode(); a.Status != 502 || code != "bad_gateway" {
			t.Fatalf("slow upstream: %d %s", a.Status, a.Body)
		}
		// Two attempts (a GET is retried once) of 300ms each, plus a short pause.
		if took > 2*time.Second {
			t.Fatalf("timeout not applied: took %s", took)
		}
		if n := countPath(stub.requests(), "/orders/slow"); n != 2 {
			t.Fatalf("a timed-out GET should be tried twice, was tried %d times", n)
		}
	})
}

func countPath(rs []stubRequest, path string) int {
	n := 0
	for _, r := range rs {
		if r.Path == path {
			n++
		}
	}
	return n
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
