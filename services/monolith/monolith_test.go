package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"microlab/services/platform/testenv"
	"microlab/services/shop"
)

// harness is a running monolith on its own database, and a connection to that database
// to check what the checkout left behind.
type harness struct {
	base string
	db   *pgx.Conn
}

func start(t *testing.T) *harness {
	t.Helper()
	env := testenv.ServiceEnv(t, "monolith", true)
	env["BCRYPT_COST"] = "4" // bcrypt under the race detector is very slow at cost 10
	dbURL := env["DATABASE_URL"]
	base := testenv.Run(t, run, env, nil)
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &harness{base: base, db: conn}
}

func (h *harness) do(t *testing.T, method, path string, body any, hdr map[string]string, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, h.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func (h *harness) scalar(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := h.db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func order(sku string, qty int, card, country string) map[string]any {
	return map[string]any{
		"items": []map[string]any{{"sku": sku, "qty": qty}},
		"card":  card,
		"shippingAddress": map[string]string{"name": "Alice", "street": "1 Lab Way", "city": "Berlin",
			"postalCode": "10115", "country": country},
	}
}

const goodCard = "4242 4242 4242 4242"

// Every outcome of the checkout, and what it leaves in the tables: a confirmed order
// took its stock and holds an authorize and a capture; a failed one is cancelled with
// the saga's reason and left NO stock taken and no money held, because its transaction
// rolled back to the savepoint instead of compensating. Only the failing step's own
// record stays (payments' decline row, shipping's failed shipment).
func TestCheckoutOutcomes(t *testing.T) {
	t.Parallel()
	h := start(t)
	user := map[string]string{"X-User-Id": "11111111-1111-1111-1111-111111111111"}
	for _, tc := range []struct {
		name                   string
		body                   map[string]any
		status, reason         string
		stockTaken             int64
		authorize, capture     int64
		decline, failedShipped int64
		lastStep               string
	}{
		{"confirmed", order("LAB-MUG", 3, goodCard, "de"), "confirmed", "", 3, 1, 1, 0, 0, "order/confirmed"},
		{"card declined", order("LAB-MUG", 2, shop.DeclinedCard, "DE"), "cancelled", "payment_declined", 0, 0, 0, 1, 0, "order/cancelled"},
		{"out of stock", order(shop.NeverInStock, 1, goodCard, "DE"), "cancelled", "out_of_stock", 0, 0, 0, 0, 0, "order/cancelled"},
		{"shipping fails for XX", order("LAB-MUG", 5, goodCard, "xx"), "cancelled", "shipping_failed", 0, 0, 0, 0, 1, "order/cancelled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mugsBefore := h.scalar(t, `SELECT on_hand FROM products WHERE sku = 'LAB-MUG'`)
			var placed PlaceAnswer
			if code := h.do(t, "POST", "/orders", tc.body, user, &placed); code != http.StatusAccepted {
				t.Fatalf("POST /orders: %d", code)
			}
			if placed.Status != tc.status {
				t.Fatalf("answered status %q, want %q (final at once)", placed.Status, tc.status)
			}
			var got OrderView
			if code := h.do(t, "GET", "/orders/"+placed.OrderID, nil, user, &got); code != http.StatusOK {
				t.Fatalf("GET order: %d", code)
			}
			if got.Status != tc.status || got.CancelReason != tc.reason || got.SagaMode != SagaMode {
				t.Fatalf("order %+v, want %s/%q", got.OrderSummary, tc.status, tc.reason)
			}
			if got.TraceID == "" || got.TraceID != placed.TraceID {
				t.Fatalf("traceId %q, answered %q", got.TraceID, placed.TraceID)
			}
			last := got.Steps[len(got.Steps)-1]
			if last.Name+"/"+last.Status != tc.lastStep || got.Steps[0].Name+"/"+got.Steps[0].Status != "order/placed" {
				t.Fatalf("steps %+v", got.Steps)
			}
			id := placed.OrderID
			if n := h.scalar(t, `SELECT coalesce(sum(qty), 0) FROM reservations WHERE order_id = $1`, id); n != tc.stockTaken {
				t.Errorf("reserved %d, want %d", n, tc.stockTaken)
			}
			if tc.body["items"].([]map[string]any)[0]["sku"] == "LAB-MUG" {
				if after := h.scalar(t, `SELECT on_hand FROM products WHERE sku = 'LAB-MUG'`); mugsBefore-after != tc.stockTaken {
					t.Errorf("mugs on hand %d → %d, want %d taken", mugsBefore, after, tc.stockTaken)
				}
			}
			for kind, want := range map[string]int64{"authorize": tc.authorize, "capture": tc.capture, "decline": tc.decline} {
				if n := h.scalar(t, `SELECT count(*) FROM payments WHERE order_id = $1 AND kind = $2`, id, kind); n != want {
					t.Errorf("%d %s row(s), want %d", n, kind, want)
				}
			}
			if n := h.scalar(t, `SELECT count(*) FROM shipments WHERE order_id = $1 AND status = 'failed'`, id); n != tc.failedShipped {
				t.Errorf("%d failed shipment(s), want %d", n, tc.failedShipped)
			}
			scheduled := h.scalar(t, `SELECT count(*) FROM shipments WHERE order_id = $1 AND status = 'scheduled'`, id)
			if (scheduled == 1) != (tc.status == "confirmed") {
				t.Errorf("%d scheduled shipment(s) for a %s order", scheduled, tc.status)
			}
		})
	}

	t.Run("unknown sku", func(t *testing.T) {
		var body struct{ Error struct{ Code string } }
		if code := h.do(t, "POST", "/orders", order("LAB-NOPE", 1, goodCard, "DE"), user, &body); code != 422 || body.Error.Code != "unknown_sku" {
			t.Fatalf("%d %q, want 422 unknown_sku", code, body.Error.Code)
		}
	})
	t.Run("another user's order is not found", func(t *testing.T) {
		var placed PlaceAnswer
		h.do(t, "POST", "/orders", order("LAB-PEN", 1, goodCard, "DE"), user, &placed)
		if code := h.do(t, "GET", "/orders/"+placed.OrderID, nil, map[string]string{"X-User-Id": "someone-else"}, nil); code != 404 {
			t.Fatalf("%d, want 404", code)
		}
	})
	t.Run("list newest first, paged", func(t *testing.T) {
		var page struct {
			Items      []OrderSummary
			NextCursor string
		}
		if code := h.do(t, "GET", "/orders?limit=2", nil, user, &page); code != 200 || len(page.Items) != 2 || page.NextCursor == "" {
			t.Fatalf("%d %+v", code, page)
		}
		first := slices.Clone(page.Items)
		cursor := page.NextCursor
		page.Items = nil
		if code := h.do(t, "GET", "/orders?limit=2&cursor="+cursor, nil, user, &page); code != 200 || len(page.Items) != 2 {
			t.Fatalf("%d %+v", code, page)
		}
		if first[1].OrderID == page.Items[0].OrderID || first[1].CreatedAt.Before(page.Items[0].CreatedAt) {
			t.Fatalf("page 2 repeats page 1: %+v %+v", first, page.Items)
		}
	})
}

// A repeated Idempotency-Key with the same request is the same order, taken once; with
// a different request it is refused.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	h := start(t)
	hdr := map[string]string{"X-User-Id": "u-idem", "Idempotency-Key": "checkout-1"}
	before := h.scalar(t, `SELECT on_hand FROM products WHERE sku = 'LAB-TEE'`)
	var a, b PlaceAnswer
	if code := h.do(t, "POST", "/orders", order("LAB-TEE", 2, goodCard, "DE"), hdr, &a); code != 202 {
		t.Fatalf("first: %d", code)
	}
	if code := h.do(t, "POST", "/orders", order("LAB-TEE", 2, goodCard, "DE"), hdr, &b); code != 202 {
		t.Fatalf("repeat: %d", code)
	}
	if a.OrderID != b.OrderID || b.Status != "confirmed" {
		t.Fatalf("repeat answered %+v, first %+v", b, a)
	}
	if after := h.scalar(t, `SELECT on_hand FROM products WHERE sku = 'LAB-TEE'`); before-after != 2 {
		t.Fatalf("stock %d → %d: the repeat took stock again", before, after)
	}
	if n := h.scalar(t, `SELECT count(*) FROM orders WHERE user_id = 'u-idem'`); n != 1 {
		t.Fatalf("%d orders", n)
	}
	var body struct{ Error struct{ Code string } }
	if code := h.do(t, "POST", "/orders", order("LAB-TEE", 3, goodCard, "DE"), hdr, &body); code != 409 || body.Error.Code != "idempotency_key_reused" {
		t.Fatalf("different body: %d %q", code, body.Error.Code)
	}
}

// The users side: the seed accounts log in, a token verifies with the monolith's own
// JWKS and carries users' contract (issuer, audience), a sign-up works once, and the
// catalog side serves the seed products.
func TestUsersAndCatalog(t *testing.T) {
	t.Parallel()
	h := start(t)
	acc := shop.DemoAccounts[0]
	var sess Session
	if code := h.do(t, "POST", "/login", map[string]string{"email": acc.Email, "password": acc.Password}, nil, &sess); code != 200 {
		t.Fatalf("login: %d", code)
	}
	var set struct{ Keys []shop.JWK }
	h.do(t, "GET", "/internal/jwks", nil, nil, &set)
	if len(set.Keys) != 1 {
		t.Fatalf("jwks %+v", set)
	}
	var claims shop.Claims
	_, err := jwt.ParseWithClaims(sess.Token, &claims, func(tok *jwt.Token) (any, error) {
		if tok.Header["kid"] != set.Keys[0].Kid {
			return nil, fmt.Errorf("kid %v not in the set", tok.Header["kid"])
		}
		x, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].X)
		return ed25519.PublicKey(x), nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer(shop.TokenIssuer), jwt.WithAudience(shop.TokenAudience))
	if err != nil {
		t.Fatal(err)
	}
	if claims.Email != acc.Email || claims.Subject != acc.ID {
		t.Fatalf("claims %+v; want the demo account's fixed id %s (users seeds the same)", claims, acc.ID)
	}
	var u User
	if code := h.do(t, "GET", "/users/"+claims.Subject, nil, nil, &u); code != 200 || u.Email != acc.Email {
		t.Fatalf("GET user: %d %+v", code, u)
	}
	if code := h.do(t, "POST", "/login", map[string]string{"email": acc.Email, "password": "wrong-password"}, nil, nil); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	reg := map[string]string{"email": "Carol@Example.com", "name": "Carol", "password": "carol-secret"}
	if code := h.do(t, "POST", "/users", reg, nil, &u); code != 201 || u.Email != "carol@example.com" {
		t.Fatalf("register: %d %+v", code, u)
	}
	if code := h.do(t, "POST", "/users", reg, nil, nil); code != 409 {
		t.Fatalf("register twice: %d", code)
	}
	var list struct{ Items []Product }
	h.do(t, "GET", "/products", nil, nil, &list)
	if len(list.Items) != len(shop.SeedProducts) {
		t.Fatalf("%d products, want the %d seeded", len(list.Items), len(shop.SeedProducts))
	}
	var p Product
	if code := h.do(t, "GET", "/products/LAB-MUG", nil, nil, &p); code != 200 || p.PriceCents != 1200 {
		t.Fatalf("LAB-MUG: %d %+v", code, p)
	}
}
