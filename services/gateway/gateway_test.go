package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
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

// TestGateway drives the public API against the real users, catalog and orders (as
// processes). What reaches orders is judged by what the real system then holds: the
// orders it lists, the order.placed events it emits.
func TestGateway(t *testing.T) {
	t.Parallel()
	up := startUpstreams(t)
	gw := startGateway(t, up, nil)
	alice := login(t, gw, "alice@example.com", "alice-secret")
	aliceID := subjectOf(t, alice)
	bob := login(t, gw, "bob@example.com", "bob-secret")

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
		email, a := register(t, gw, "Dave")
		body := map[string]string{"email": email, "name": "Dave", "password": "Dave-secret"}
		var u struct{ ID, Email, Name string }
		a.decode(t, &u)
		if a.Status != 201 || u.ID == "" || u.Email != email {
			t.Fatalf("register: %d %s", a.Status, a.Body)
		}
		// users' 409 passes through unchanged.
		a = retry5xx(t, func() answer { return do(t, "POST", gw+"/api/v1/users", "", body, nil) })
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
			a = retry5xx(t, func() answer { return do(t, "POST", gw+"/api/v1/users", "", tc.body, nil) })
			if code, _ := a.errorCode(); a.Status != tc.code || code != tc.want {
				t.Fatalf("register %v: %d %s", tc.body, a.Status, a.Body)
			}
		}
		d := login(t, gw, strings.ToUpper(email), "Dave-secret")
		a = retry5xx(t, func() answer {
			return do(t, "POST", gw+"/api/v1/auth/login", "", map[string]string{"email": email, "password": "wrong-password"}, nil)
		})
		if code, _ := a.errorCode(); a.Status != 401 || code != "invalid_credentials" || d == "" {
			t.Fatalf("bad login: %d %s", a.Status, a.Body)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		t.Parallel()
		// A shopper of its own, so that "no order was created" is about these requests
		// only (other subtests place orders for alice in parallel).
		eve, eveID := newUser(t, gw, "Eve")
		seed := devSeedBytes(t)
		_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
		pubKey := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		expired := signToken(t, seed, claimsFor(eveID, time.Now().Add(-time.Minute)))
		wrongAud := func() string {
			c := claimsFor(eveID, time.Now().Add(time.Hour))
			c.Audience = jwt.ClaimStrings{"someone-else"}
			return signToken(t, seed, c)
		}()
		// Forged: signed by another key but claiming users' kid.
		forged := func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claimsFor(eveID, time.Now().Add(time.Hour)))
			tok.Header["kid"] = kidOf(pubKey)
			s, err := tok.SignedString(otherKey)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}()
		forgedKid := signToken(t, otherKey.Seed(), claimsFor(eveID, time.Now().Add(time.Hour)))
		// alg "none": no signature at all.
		none := func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + kidOf(pubKey) + `"}`))
			c, _ := json.Marshal(claimsFor(eveID, time.Now().Add(time.Hour)))
			return h + "." + base64.RawURLEncoding.EncodeToString(c) + "."
		}()
		// HS256 "signed" with users' PUBLIC key as the HMAC secret: the classic
		// algorithm-confusion attack on verifiers that trust the header's alg.
		hs256 := func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor(eveID, time.Now().Add(time.Hour)))
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
			{"malformed JSON", eve, `{"items": [`, nil, 400, "malformed_json", ""},
			{"not an object", eve, `[]`, nil, 400, "malformed_json", ""},
			{"null body", eve, `null`, nil, 400, "missing_field", "items"},
			{"trailing data", eve, `{"items":[]} {}`, nil, 400, "malformed_json", ""},
			{"unknown field", eve, orderWith(func(o map[string]any) { o["coupon"] = "FREE" }), nil, 400, "unknown_field", "coupon"},
			{"unknown nested field", eve, orderWith(func(o map[string]any) { addr(o)["planet"] = "Mars" }), nil, 400, "unknown_field", "planet"},
			{"missing items", eve, orderWith(func(o map[string]any) { delete(o, "items") }), nil, 400, "missing_field", "items"},
			{"missing payment", eve, orderWith(func(o map[string]any) { delete(o, "payment") }), nil, 400, "missing_field", "payment"},
			{"missing card", eve, orderWith(func(o map[string]any) { o["payment"] = map[string]any{} }), nil, 400, "missing_field", "payment.card"},
			{"missing address", eve, orderWith(func(o map[string]any) { delete(o, "shippingAddress") }), nil, 400, "missing_field", "shippingAddress"},
			{"missing city", eve, orderWith(func(o map[string]any) { delete(addr(o), "city") }), nil, 400, "missing_field", "shippingAddress.city"},
			{"blank street", eve, orderWith(func(o map[string]any) { addr(o)["street"] = "   " }), nil, 400, "missing_field", "shippingAddress.street"},
			{"missing sku", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"qty": 1}} }), nil, 400, "missing_field", "items[0].sku"},
			{"missing qty", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG"}} }), nil, 400, "missing_field", "items[0].qty"},
			{"negative qty", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG", "qty": -1}} }), nil, 400, "invalid_field", "items[0].qty"},
			{"zero qty", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG", "qty": 0}} }), nil, 400, "invalid_field", "qty"},
			{"qty 101", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-MUG", "qty": 101}} }), nil, 400, "invalid_field", "qty"},
			{"huge qty 1e30", eve, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":1e30`, 1), nil, 400, "invalid_field", "qty"},
			{"huge qty 2^63", eve, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":9223372036854775808`, 1), nil, 400, "invalid_field", "qty"},
			{"fractional qty", eve, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":1.5`, 1), nil, 400, "invalid_field", "qty"},
			{"string qty", eve, strings.Replace(mustJSON(t, validOrder()), `"qty":2`, `"qty":"2"`, 1), nil, 400, "invalid_field", "qty"},
			{"zero items", eve, orderWith(func(o map[string]any) { o["items"] = []any{} }), nil, 400, "invalid_field", "items"},
			{"51 items", eve, orderWith(func(o map[string]any) { o["items"] = lines(51) }), nil, 400, "invalid_field", "items"},
			{"lower-case sku", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "lab-mug", "qty": 1}} }), nil, 400, "invalid_field", "items[0].sku"},
			{"sku with space", eve, orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB MUG", "qty": 1}} }), nil, 400, "invalid_field", "sku"},
			{"sku too long", eve, orderWith(func(o map[string]any) {
				o["items"] = []any{map[string]any{"sku": strings.Repeat("A", 65), "qty": 1}}
			}), nil, 400, "invalid_field", "sku"},
			{"card not Luhn", eve, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242 4242 4242 4241"} }), nil, 400, "invalid_card", "card"},
			{"card with letters", eve, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242 4242 4242 424a"} }), nil, 400, "invalid_card", "card"},
			{"card with dashes", eve, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242-4242-4242-4242"} }), nil, 400, "invalid_card", "card"},
			{"card too short", eve, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": "4242 4242 42"} }), nil, 400, "invalid_card", "card"},
			{"card too long", eve, orderWith(func(o map[string]any) { o["payment"] = map[string]any{"card": strings.Repeat("0", 20)} }), nil, 400, "invalid_card", "card"},
			{"card as number", eve, strings.Replace(mustJSON(t, validOrder()), `"4242 4242 4242 4242"`, `4242424242424242`, 1), nil, 400, "invalid_field", "card"},
			{"lower-case country", eve, orderWith(func(o map[string]any) { addr(o)["country"] = "de" }), nil, 400, "invalid_field", "country"},
			{"three-letter country", eve, orderWith(func(o map[string]any) { addr(o)["country"] = "DEU" }), nil, 400, "invalid_field", "country"},
			{"address field too long", eve, orderWith(func(o map[string]any) { addr(o)["city"] = strings.Repeat("é", 201) }), nil, 400, "invalid_field", "shippingAddress.city"},
			{"oversized body", eve, big, nil, 413, "body_too_large", ""},
			{"wrong content type", eve, mustJSON(t, validOrder()), map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type", ""},
			{"no content type", eve, mustJSON(t, validOrder()), map[string]string{"Content-Type": ""}, 415, "unsupported_media_type", ""},
			{"idempotency key too long", eve, validOrder(), map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, 400, "invalid_idempotency_key", ""},
			{"idempotency key not ASCII", eve, validOrder(), map[string]string{"Idempotency-Key": "clé"}, 400, "invalid_idempotency_key", ""},
			{"idempotency key with tab", eve, validOrder(), map[string]string{"Idempotency-Key": "a\tb"}, 400, "invalid_idempotency_key", ""},
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
		// Nothing invalid ever reached orders: the real orders holds no order for eve
		// (whom every forged or expired token above claims to be). Several of the bodies
		// (a card failing Luhn, a lower-case country, odd Idempotency-Keys) are ones orders
		// itself would accept, so any that slipped through would be listed here.
		if ids := orderIDs(t, gw, eve, ""); len(ids) != 0 {
			t.Fatalf("invalid requests created orders: %v", ids)
		}
	})

	t.Run("orders forwarding", func(t *testing.T) {
		t.Parallel()
		placed := testenv.Dial(t, up.env["AMQP_URL"]).Tap(t, contracts.ExchangeEvents, contracts.OrderPlaced)
		body := orderWith(func(o map[string]any) { addr(o)["name"] = "forwarded" })
		// The client's own X-User-Id must be ignored: the gateway sets it from the token.
		hdr := map[string]string{"Idempotency-Key": "key-1", "X-User-Id": "someone-else"}
		a := retry5xx(t, func() answer { return do(t, "POST", gw+"/api/v1/orders", alice, body, hdr) })
		var ans struct{ OrderID, Status, TraceID *string }
		strictDecode(t, a, &ans)
		if a.Status != 202 || a.Header.Get("Content-Type") != "application/json" || ans.OrderID == nil || *ans.OrderID == "" ||
			ans.Status == nil || *ans.Status != "pending" || ans.TraceID == nil {
			t.Fatalf("place: %d %s", a.Status, a.Body)
		}
		id := *ans.OrderID
		// What orders received, as it announced it: alice's order (X-User-Id from the
		// token), the card moved from payment.card to card, items and address as sent.
		// (orders decodes strictly: a body still holding "payment", or one sent without
		// Content-Type: application/json, would have been refused, not placed.)
		ev := awaitPlaced(t, placed, id)
		if ev.UserID != aliceID || ev.Card != "4242 4242 4242 4242" || ev.ShippingAddress.Name != "forwarded" ||
			ev.ShippingAddress.Country != "DE" || len(ev.Items) != 1 || ev.Items[0].SKU != "LAB-MUG" || ev.Items[0].Qty != 2 {
			t.Fatalf("order.placed: %+v", ev)
		}
		a = do(t, "GET", gw+"/api/v1/orders/"+id, alice, nil, nil)
		var o struct {
			OrderID    string
			TotalCents int64
			Items      []struct {
				SKU        string
				Qty        int
				PriceCents int64
			}
		}
		a.decode(t, &o)
		if a.Status != 200 || o.OrderID != id || o.TotalCents != 2400 || len(o.Items) != 1 || o.Items[0].PriceCents != 1200 {
			t.Fatalf("get order: %d %s", a.Status, a.Body)
		}
		// Nobody else sees it: orders got alice's id, not the client's header.
		a = do(t, "GET", gw+"/api/v1/orders/"+id, bob, nil, nil)
		if code, _ := a.errorCode(); a.Status != 404 || code != "not_found" {
			t.Fatalf("bob reads alice's order: %d %s", a.Status, a.Body)
		}
		// The Idempotency-Key reached orders: the same request again is the same order,
		// and the key with another body is orders' 409, passed through.
		a = retry5xx(t, func() answer { return do(t, "POST", gw+"/api/v1/orders", alice, body, hdr) })
		if a.Status != 202 || !strings.Contains(string(a.Body), `"orderId":"`+id+`"`) {
			t.Fatalf("repeated with the same key: %d %s, want order %s", a.Status, a.Body, id)
		}
		a = retry5xx(t, func() answer {
			return do(t, "POST", gw+"/api/v1/orders", alice, orderWith(func(o map[string]any) { addr(o)["name"] = "other" }), hdr)
		})
		if code, _ := a.errorCode(); a.Status != 409 || code != "idempotency_key_reused" {
			t.Fatalf("key reused: %d %s", a.Status, a.Body)
		}
		// Without the key the same body is a new order. (Sent once, not retried: a retry
		// without a key could itself make a second order.)
		a = do(t, "POST", gw+"/api/v1/orders", alice, body, nil)
		var other struct{ OrderID string }
		a.decode(t, &other)
		if a.Status != 202 || other.OrderID == "" {
			t.Fatalf("place without a key: %d %s", a.Status, a.Body)
		}
		if other.OrderID == id {
			t.Fatal("an order without Idempotency-Key was deduplicated")
		}

		// orders' 4xx passes through unchanged: byte for byte what orders itself answers.
		nope := orderWith(func(o map[string]any) { o["items"] = []any{map[string]any{"sku": "LAB-NOPE", "qty": 1}} })
		// (Both ask catalog, so both are retried past a 5xx: an unknown SKU is refused
		// before anything is stored.)
		a = retry5xx(t, func() answer { return do(t, "POST", gw+"/api/v1/orders", alice, nope, nil) })
		direct := retry5xx(t, func() answer {
			return do(t, "POST", up.orders+"/orders", "", map[string]any{
				"items": []any{map[string]any{"sku": "LAB-NOPE", "qty": 1}}, "card": "4242 4242 4242 4242",
				"shippingAddress": addr(validOrder())}, map[string]string{"X-User-Id": aliceID})
		})
		if code, _ := a.errorCode(); a.Status != 422 || code != "unknown_sku" || direct.Status != 422 || string(a.Body) != string(direct.Body) {
			t.Fatalf("unknown sku: %d %q, orders answers %d %q", a.Status, a.Body, direct.Status, direct.Body)
		}
		a = do(t, "GET", gw+"/api/v1/orders/nope", alice, nil, nil)
		if code, _ := a.errorCode(); a.Status != 404 || code != "not_found" {
			t.Fatalf("missing order: %d %s", a.Status, a.Body)
		}
		for _, q := range []string{"limit=0", "limit=101", "limit=abc", "limit=", "limit=1e3", "cursor=" + strings.Repeat("c", 600)} {
			a = do(t, "GET", gw+"/api/v1/orders?"+q, alice, nil, nil)
			if code, _ := a.errorCode(); a.Status != 400 || code != "invalid_parameter" {
				t.Fatalf("list ?%s: %d %s", q, a.Status, a.Body)
			}
		}
	})

	t.Run("orders list", func(t *testing.T) {
		t.Parallel()
		tok, _ := newUser(t, gw, "Lis")
		var ids []string // oldest first
		for range 3 {
			ids = append(ids, placeOrder(t, gw, tok, validOrder(), nil))
		}
		// limit and cursor reach orders (and nothing else does: the gateway builds the
		// query from scratch, so evil=1 is dropped): two pages, newest first.
		a := do(t, "GET", gw+"/api/v1/orders?limit=2&evil=1", tok, nil, nil)
		first := decodePage(t, a)
		if a.Status != 200 || len(first.Items) != 2 || first.Items[0].OrderID != ids[2] || first.Items[1].OrderID != ids[1] || first.NextCursor == "" {
			t.Fatalf("page 1: %d %s", a.Status, a.Body)
		}
		a = do(t, "GET", gw+"/api/v1/orders?limit=2&cursor="+url.QueryEscape(first.NextCursor), tok, nil, nil)
		second := decodePage(t, a)
		if a.Status != 200 || len(second.Items) != 1 || second.Items[0].OrderID != ids[0] || second.NextCursor != "" {
			t.Fatalf("page 2: %d %s", a.Status, a.Body)
		}
		// A cursor orders did not make is orders' 400, passed through (so it got there).
		a = do(t, "GET", gw+"/api/v1/orders?limit=7&cursor=abc%2Fdef", tok, nil, nil)
		if code, _ := a.errorCode(); a.Status != 400 || code != "invalid_parameter" || !strings.Contains(string(a.Body), "cursor") {
			t.Fatalf("foreign cursor: %d %s", a.Status, a.Body)
		}
	})

	t.Run("home", func(t *testing.T) {
		t.Parallel()
		tok, id := newUser(t, gw, "Hana")
		var ids []string // oldest first
		for range homeOrders + 1 {
			ids = append(ids, placeOrder(t, gw, tok, validOrder(), nil))
		}
		a := do(t, "GET", gw+"/api/v1/home", tok, nil, nil)
		var h struct {
			User     *struct{ ID, Email, Name string }
			Orders   []struct{ OrderID string }
			Products []struct{ SKU string }
			Degraded []string
		}
		a.decode(t, &h)
		if a.Status != 200 || h.User == nil || h.User.Name != "Hana" || h.User.ID != id ||
			len(h.Products) != 4 || h.Products[0].SKU != "LAB-BOTTLE" || h.Degraded == nil || len(h.Degraded) != 0 {
			t.Fatalf("home: %d %s", a.Status, a.Body)
		}
		// The caller's 5 most recent orders, newest first (alice's, placed in parallel in
		// the same orders, are not among them).
		if len(h.Orders) != homeOrders {
			t.Fatalf("home shows %d orders, want the %d most recent: %s", len(h.Orders), homeOrders, a.Body)
		}
		for i, o := range h.Orders {
			if want := ids[len(ids)-1-i]; o.OrderID != want {
				t.Fatalf("home order %d is %s, want %s: %s", i, o.OrderID, want, a.Body)
			}
		}
	})

	t.Run("home degrades", func(t *testing.T) {
		t.Parallel()
		dead := startGateway(t, up, map[string]string{"ORDERS_URL": deadUpstream(t).url})
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
		// One token per 100 s: however slowly this runs, no bucket refills during the
		// test, so every answer below is decided by the burst alone.
		const refill = 100
		limited := startGateway(t, up, map[string]string{"RATE_LIMIT_RPS": strconv.FormatFloat(1.0/refill, 'f', -1, 64), "RATE_LIMIT_BURST": "3"})
		// Anonymous: keyed by IP.
		start := time.Now()
		for i := range 4 {
			a := do(t, "GET", limited+"/api/v1/openapi.json", "", nil, nil)
			if i < 3 && a.Status != 200 {
				t.Fatalf("request %d: %d", i, a.Status)
			}
			if i == 3 {
				// The next token comes one refill after the bucket was first used, less the
				// time this took since (its lower bound: the test started its clock first).
				code, _ := a.errorCode()
				ra, err := strconv.Atoi(a.Header.Get("Retry-After"))
				least := refill - int(math.Ceil(time.Since(start).Seconds()))
				if a.Status != 429 || code != "rate_limited" || err != nil || ra > refill || ra < max(1, least) {
					t.Fatalf("over the limit: %d %s Retry-After=%q, want %d..%d", a.Status, a.Body, a.Header.Get("Retry-After"), max(1, least), refill)
				}
			}
		}
		// Authenticated users have buckets of their own, even from the same IP.
		for _, tok := range []string{alice, bob} {
			for i := range 4 {
				a := do(t, "GET", limited+"/api/v1/orders?limit=1", tok, nil, nil)
				if want := map[bool]int{true: 200, false: 429}[i < 3]; a.Status != want {
					t.Fatalf("user request %d: %d %s, want %d", i, a.Status, a.Body, want)
				}
			}
		}
	})

	t.Run("breaker opens on a dead upstream", func(t *testing.T) {
		t.Parallel()
		orders := deadUpstream(t)
		dead := startGateway(t, up, map[string]string{
			"ORDERS_URL":       orders.url,
			"BREAKER_FAILURES": "3", "BREAKER_OPEN_FOR": "1m",
		})
		for i := range 3 { // POSTs are never retried: one call, one failure each
			a := do(t, "POST", dead+"/api/v1/orders", alice, validOrder(), nil)
			if code, _ := a.errorCode(); a.Status != 502 || code != "bad_gateway" {
				t.Fatalf("call %d: %d %s", i, a.Status, a.Body)
			}
		}
		called := orders.connections()
		if called == 0 {
			t.Fatal("the failing calls never reached the dead upstream")
		}
		a := do(t, "POST", dead+"/api/v1/orders", alice, validOrder(), nil)
		code, _ := a.errorCode()
		if a.Status != 503 || code != "upstream_unavailable" || a.Header.Get("Retry-After") != "60" {
			t.Fatalf("open breaker: %d %s Retry-After=%q", a.Status, a.Body, a.Header.Get("Retry-After"))
		}
		// An open breaker answers at once: without calling the upstream at all.
		if n := orders.connections(); n != called {
			t.Fatalf("the open breaker called the upstream: %d connection(s), %d before", n, called)
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

	t.Run("upstream 5xx", func(t *testing.T) {
		t.Parallel()
		// A real orders whose catalog is down answers a new order with 503
		// catalog_unavailable. The gateway shows its clients a 502 of its own, not
		// orders' insides.
		_, sick := startLoneOrders(t, deadUpstream(t).url)
		direct := do(t, "POST", "http://"+sick["HTTP_ADDR"]+"/orders", "", map[string]any{
			"items": []any{map[string]any{"sku": "LAB-MUG", "qty": 1}}, "card": "4242 4242 4242 4242",
			"shippingAddress": addr(validOrder())}, map[string]string{"X-User-Id": aliceID})
		if direct.Status < 500 {
			t.Fatalf("orders without its catalog answered %d %s, want a 5xx", direct.Status, direct.Body)
		}
		gw5 := startGateway(t, up, map[string]string{"ORDERS_URL": "http://" + sick["HTTP_ADDR"]})
		a := do(t, "POST", gw5+"/api/v1/orders", alice, validOrder(), nil)
		if code, msg := a.errorCode(); a.Status != 502 || code != "bad_gateway" || strings.Contains(msg, "catalog") {
			t.Fatalf("upstream 5xx: %d %s", a.Status, a.Body)
		}
	})

	t.Run("upstream 5xx that is the lesson", func(t *testing.T) {
		t.Parallel()
		// The shared database's coupling breaking checkout is what the lab shows: that
		// one failure's code and message reach the client (any other 5xx stays hidden).
		orders := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":{"code":"schema_coupling","message":"catalog/inventory schema changed under orders: column s.on_hand does not exist"}}`))
		}))
		t.Cleanup(orders.Close)
		gw := startGateway(t, up, map[string]string{"ORDERS_URL": orders.URL})
		a := do(t, "POST", gw+"/api/v1/orders", alice, validOrder(), nil)
		if code, msg := a.errorCode(); a.Status != 502 || code != "schema_coupling" || !strings.Contains(msg, "on_hand") || !strings.Contains(msg, "orders") {
			t.Fatalf("lesson 5xx: %d %s", a.Status, a.Body)
		}
	})

	t.Run("upstream timeout", func(t *testing.T) {
		t.Parallel()
		// A real orders, frozen (SIGSTOP): the kernel still accepts connections on its
		// port, but nothing ever answers.
		frozen, env := startLoneOrders(t, up.catalog)
		slow := startGateway(t, up, map[string]string{"ORDERS_URL": "http://" + env["HTTP_ADDR"], "UPSTREAM_TIMEOUT": "300ms"})
		port := portOf(t, env)
		if n := acceptBacklog(t, port); n != 0 {
			t.Fatalf("%d connections wait on orders before the test", n)
		}
		frozen.freeze(t)
		thawed := false
		thaw := func() {
			if !thawed {
				thawed = true
				frozen.signal(t, syscall.SIGCONT)
			}
		}
		t.Cleanup(thaw) // before the process is stopped (cleanups run last-in first-out)
		// orders never answers while frozen: without the gateway's timeout this call would
		// wait for ever, so the client gives up after patience (and the test fails).
		start := time.Now()
		a := doWith(t, &http.Client{Timeout: patience}, "GET", slow+"/api/v1/orders/some-order", alice, nil, nil)
		took := time.Since(start)
		attempts := acceptBacklog(t, port)
		thaw()
		if code, msg := a.errorCode(); a.Status != 504 || code != "gateway_timeout" || !strings.Contains(msg, "orders") || !strings.Contains(msg, "300ms") {
			t.Fatalf("slow upstream: %d %s, want 504 gateway_timeout naming orders and the 300ms", a.Status, a.Body)
		}
		// Two attempts (a GET is retried once), each given up after its 300ms: the answer
		// cannot come sooner. (That the 300ms is UPSTREAM_TIMEOUT unless http.timeout says
		// otherwise is TestKnobsFollowSettings'; an upper bound on took would be a bet on
		// how busy the machine is.)
		if took < 2*300*time.Millisecond {
			t.Fatalf("answered after %s: both attempts should have waited out the 300ms timeout", took)
		}
		// Each attempt is a connection of its own (a timed-out one is closed, never
		// reused), waiting in the frozen orders' accept queue.
		if attempts != 2 {
			t.Fatalf("a timed-out GET should be tried twice, was tried %d times", attempts)
		}
	})
}

// register registers a new shopper (password name+"-secret") through the gateway and
// returns the email and the answer. A 5xx (on a busy machine, a call outlasting the
// gateway's UPSTREAM_TIMEOUT) is retried with a fresh email: the timed-out attempt may
// have created its user, so the same email could answer 409.
func register(t *testing.T, gw, name string) (string, answer) {
	t.Helper()
	var email string
	a := retry5xx(t, func() answer {
		email = testenv.Name(strings.ToLower(name)) + "@example.com"
		return do(t, "POST", gw+"/api/v1/users", "", map[string]string{"email": email, "name": name, "password": name + "-secret"}, nil)
	})
	return email, a
}

// newUser registers a new shopper through the gateway and logs them in.
func newUser(t *testing.T, gw, name string) (token, id string) {
	t.Helper()
	email, a := register(t, gw, name)
	var u struct{ ID string }
	a.decode(t, &u)
	if a.Status != 201 || u.ID == "" {
		t.Fatalf("register %s: %d %s", name, a.Status, a.Body)
	}
	return login(t, gw, email, name+"-secret"), u.ID
}

// subjectOf is the user id a token names (unverified: the token came from users).
func subjectOf(t *testing.T, token string) string {
	t.Helper()
	var c tokenClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		t.Fatal(err)
	}
	return c.Subject
}

// placeOrder places an order through the gateway and returns its id. It always sends
// an Idempotency-Key (a fresh one unless header has one), so that a 5xx can be retried
// without placing a second order: on a busy machine the call can outlast the gateway's
// UPSTREAM_TIMEOUT (and orders may have stored the order meanwhile) or orders' call to
// catalog its CATALOG_TIMEOUT.
func placeOrder(t *testing.T, gw, token string, body any, header map[string]string) string {
	t.Helper()
	h := map[string]string{"Idempotency-Key": testenv.Name("place-")}
	for k, v := range header {
		h[k] = v
	}
	a := retry5xx(t, func() answer { return do(t, "POST", gw+"/api/v1/orders", token, body, h) })
	var ans struct{ OrderID string }
	a.decode(t, &ans)
	if a.Status != 202 || ans.OrderID == "" {
		t.Fatalf("place order: %d %s", a.Status, a.Body)
	}
	return ans.OrderID
}

type orderPage struct {
	Items      []struct{ OrderID string }
	NextCursor string
}

func decodePage(t *testing.T, a answer) orderPage {
	t.Helper()
	var p orderPage
	a.decode(t, &p)
	return p
}

// orderIDs lists the ids of the caller's orders (one page of up to 100), newest first.
func orderIDs(t *testing.T, gw, token, query string) []string {
	t.Helper()
	a := do(t, "GET", gw+"/api/v1/orders?limit=100"+query, token, nil, nil)
	if a.Status != 200 {
		t.Fatalf("list orders: %d %s", a.Status, a.Body)
	}
	var ids []string
	for _, o := range decodePage(t, a).Items {
		ids = append(ids, o.OrderID)
	}
	return ids
}

// strictDecode decodes a's body into v, refusing fields v does not have.
func strictDecode(t *testing.T, a answer, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(a.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %d %s: %v", a.Status, a.Body, err)
	}
}

// awaitPlaced waits for the order.placed of order id on tap and returns its data.
func awaitPlaced(t *testing.T, tap <-chan amqp.Delivery, id string) contracts.OrderPlacedData {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case d, ok := <-tap:
			if !ok {
				t.Fatal("event tap closed")
			}
			env, err := contracts.Decode(d.Body)
			if err != nil {
				t.Fatalf("order.placed: %v", err)
			}
			if env.CorrelationID != id {
				continue
			}
			var data contracts.OrderPlacedData
			if err := env.DecodeData(&data); err != nil {
				t.Fatal(err)
			}
			if data.OrderID != id || env.EventType != contracts.OrderPlaced || env.Source != "orders" {
				t.Fatalf("order.placed for %s: %+v %+v", id, env, data)
			}
			return data
		case <-timeout:
			t.Fatalf("no order.placed for order %s", id)
		}
	}
}
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// dead is an upstream that is down in the way that fails fast: it accepts connections
// and drops them at once, before reading anything. Unlike a port nobody listens on (until
// another test's process binds it), it stays down, and it counts the connections made
// to it.
type dead struct {
	url string
	n   atomic.Int64
}

func deadUpstream(t *testing.T) *dead {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	d := &dead{url: "http://" + ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at the test's end
			}
			// Counted before it is dropped: a caller sees the failure only after that.
			d.n.Add(1)
			_ = c.Close()
		}
	}()
	return d
}

// connections is how many connections were made to the upstream so far.
func (d *dead) connections() int64 { return d.n.Load() }
