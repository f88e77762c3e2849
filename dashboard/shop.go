package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"microlab/dashboard/views"
	"microlab/services/platform/httpx"
)

// The Shop view's server side: the browser talks to the dashboard only; the dashboard
// calls the gateway's public API exactly as any client would (so the orders it places
// are real checkouts, with their traces and sagas). The gateway's JWT stays here, in a
// server-side session the browser knows by an HttpOnly cookie.

// demoUsers are the seeded accounts (README). Their passwords are never sent to the page.
var demoUsers = []struct{ email, password string }{
	{"alice@example.com", "alice-secret"},
	{"bob@example.com", "bob-secret"},
}

// Test cards and destinations (DESIGN §5: deterministic failure triggers).
var (
	cards     = map[string]string{"ok": "4242 4242 4242 4242", "declined": "4000 0000 0000 0002"}
	countries = map[string]bool{"DE": true, "XX": true}
)

// fallbackProducts are shown when the catalog cannot be read, so the page still works
// (the gateway will say what is wrong when the order is placed).
var fallbackProducts = []views.Product{
	{SKU: "LAB-MUG", Name: "Lab mug", PriceCents: 1200, Currency: "EUR"},
	{SKU: "LAB-TEE", Name: "Trace tee", PriceCents: 2500, Currency: "EUR"},
	{SKU: "LAB-UNICORN", Name: "Exactly-once unicorn (never in stock)", PriceCents: 9900, Currency: "EUR"},
}

// gatewayClient calls the gateway's /api/v1.
type gatewayClient struct {
	base string
	http *http.Client
}

// gatewayError is the gateway's answer to a call that did not succeed.
type gatewayError struct {
	status  int
	code    string
	message string
}

func (e *gatewayError) Error() string {
	return fmt.Sprintf("gateway: %d %s: %s", e.status, e.code, e.message)
}

// toHTTP translates a gateway failure for our own client: its 4xx pass through (the
// learner's input was wrong: 422 unknown SKU, 429 rate limited), anything else is 502.
func toHTTP(err error) error {
	if ge, ok := err.(*gatewayError); ok && ge.status >= 400 && ge.status < 500 {
		return httpx.Errorf(ge.status, ge.code, "gateway: %s", ge.message)
	}
	return httpx.Errorf(http.StatusBadGateway, "gateway_unavailable", "%v", err)
}

func (g *gatewayClient) call(ctx context.Context, method, path, token string, in, out any, hdr map[string]string) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(g.base, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return fmt.Errorf("gateway unreachable at %s", g.base)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var eb httpx.ErrorBody
		_ = json.Unmarshal(b, &eb)
		if eb.Error.Code == "" {
			eb.Error.Code, eb.Error.Message = "http_"+fmt.Sprint(resp.StatusCode), strings.TrimSpace(string(b))
		}
		return &gatewayError{status: resp.StatusCode, code: eb.Error.Code, message: eb.Error.Message}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = b
		return nil
	}
	return json.Unmarshal(b, out)
}

func (g *gatewayClient) login(ctx context.Context, email, password string) (string, time.Time, error) {
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	err := g.call(ctx, http.MethodPost, "/api/v1/auth/login", "", map[string]string{"email": email, "password": password}, &out, nil)
	return out.Token, out.ExpiresAt, err
}

func (g *gatewayClient) products(ctx context.Context) ([]views.Product, error) {
	var out struct {
		Items []views.Product `json:"items"`
	}
	err := g.call(ctx, http.MethodGet, "/api/v1/products", "", nil, &out, nil)
	return out.Items, err
}

// orderInput is what the Shop page (and the traffic generator) choose.
type orderInput struct {
	SKU     string `json:"sku"`
	Qty     int    `json:"qty"`
	Card    string `json:"card"`    // ok | declined
	Country string `json:"country"` // DE | XX
}

func (in orderInput) validate() error {
	if in.SKU == "" || len(in.SKU) > 64 {
		return httpx.Errorf(http.StatusBadRequest, "invalid_sku", "pick a product")
	}
	if in.Qty < 1 || in.Qty > 10 {
		return httpx.Errorf(http.StatusBadRequest, "invalid_qty", "quantity must be 1 to 10")
	}
	if _, ok := cards[in.Card]; !ok {
		return httpx.Errorf(http.StatusBadRequest, "invalid_card", `card must be "ok" or "declined"`)
	}
	if !countries[in.Country] {
		return httpx.Errorf(http.StatusBadRequest, "invalid_country", `country must be "DE" or "XX"`)
	}
	return nil
}

// accepted is the gateway's 202 to an order.
type accepted struct {
	OrderID string `json:"orderId"`
	Status  string `json:"status"`
	TraceID string `json:"traceId"`
}

func (g *gatewayClient) placeOrder(ctx context.Context, token, name string, in orderInput) (accepted, error) {
	body := map[string]any{
		"items":   []map[string]any{{"sku": in.SKU, "qty": in.Qty}},
		"payment": map[string]string{"card": cards[in.Card]},
		"shippingAddress": map[string]string{"name": name, "street": "1 Lab Street", "city": "Berlin",
			"postalCode": "10115", "country": in.Country},
	}
	var out accepted
	err := g.call(ctx, http.MethodPost, "/api/v1/orders", token, body, &out, map[string]string{"Idempotency-Key": randomID()})
	return out, err
}

func (g *gatewayClient) order(ctx context.Context, token, id string) (json.RawMessage, error) {
	var out json.RawMessage
	err := g.call(ctx, http.MethodGet, "/api/v1/orders/"+id, token, nil, &out, nil)
	return out, err
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sessions maps the Shop page's cookie to a gateway token. Bounded: the oldest session
// is forgotten when full (the learner logs in again).
type sessions struct {
	mu   sync.Mutex
	max  int
	byID map[string]session
}

type session struct {
	email, token string
	expires      time.Time
	created      time.Time
}

const sessionCookie = "microlab_shop"

func newSessions(max int) *sessions { return &sessions{max: max, byID: map[string]session{}} }

func (s *sessions) put(se session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.max {
		var oldest string
		for id, v := range s.byID {
			if oldest == "" || v.created.Before(s.byID[oldest].created) {
				oldest = id
			}
		}
		delete(s.byID, oldest)
	}
	id := randomID()
	s.byID[id] = se
	return id
}

func (s *sessions) get(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.byID[c.Value]
	if ok && time.Now().After(se.expires) {
		delete(s.byID, c.Value)
		return session{}, false
	}
	return se, ok
}

func (s *server) shopProducts(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.gateway.products(r.Context())
	if err != nil {
		return toHTTP(err)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": ps})
	return nil
}

// shopLogin: POST /api/shop/login {email} → logs a demo user in at the gateway.
func (s *server) shopLogin(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string `json:"email"`
	}
	if err := httpx.Decode(w, r, &in, 1<<10); err != nil {
		return err
	}
	password := ""
	for _, u := range demoUsers {
		if u.email == in.Email {
			password = u.password
		}
	}
	if password == "" {
		return httpx.Errorf(http.StatusBadRequest, "unknown_user", "pick one of the demo users")
	}
	token, exp, err := s.gateway.login(r.Context(), in.Email, password)
	if err != nil {
		return toHTTP(err)
	}
	if exp.IsZero() {
		exp = time.Now().Add(time.Hour)
	}
	id := s.sessions.put(session{email: in.Email, token: token, expires: exp, created: time.Now()})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/api/shop", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Expires: exp})
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"email": in.Email, "expiresAt": exp})
	return nil
}

func (s *server) shopSession(r *http.Request) (session, error) {
	se, ok := s.sessions.get(r)
	if !ok {
		return session{}, httpx.Errorf(http.StatusUnauthorized, "not_logged_in", "log in as a demo user first")
	}
	return se, nil
}

// shopOrder: POST /api/shop/orders {sku, qty, card, country} → 202 {orderId, status, traceId}.
func (s *server) shopOrder(w http.ResponseWriter, r *http.Request) error {
	var in orderInput
	if err := httpx.Decode(w, r, &in, 1<<10); err != nil {
		return err
	}
	if err := in.validate(); err != nil {
		return err
	}
	se, err := s.shopSession(r)
	if err != nil {
		return err
	}
	acc, err := s.gateway.placeOrder(r.Context(), se.token, strings.Split(se.email, "@")[0], in)
	if err != nil {
		return toHTTP(err)
	}
	httpx.WriteJSON(w, http.StatusAccepted, acc)
	return nil
}

// shopGetOrder: GET /api/shop/orders/{id} → the gateway's order, as is.
func (s *server) shopGetOrder(w http.ResponseWriter, r *http.Request) error {
	se, err := s.shopSession(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if len(id) > 64 || strings.ContainsAny(id, "/?#%") {
		return httpx.Errorf(http.StatusBadRequest, "invalid_order_id", "not an order id")
	}
	o, err := s.gateway.order(r.Context(), se.token, id)
	if err != nil {
		return toHTTP(err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(o)
	return err
}
