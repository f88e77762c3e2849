package main

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"microlab/services/platform/httpx"
	"microlab/services/shop"
)

// api registers the monolith's internal HTTP API: the union of what the gateway calls
// on users, catalog and orders, path for path and JSON for JSON, so the gateway can
// point a route family at either side (strangler.routes) without translating anything.
//
//	POST /users          {email, name, password} → 201 {id, email, name} | 400 | 409 email_taken
//	POST /login          {email, password} → 200 {token, expiresAt} | 401 invalid_credentials
//	GET  /users/{id}     → 200 {id, email, name} | 404
//	GET  /internal/jwks  → 200 {keys: [the monolith's Ed25519 public key]}
//	GET  /products       → 200 {items: [product...]} sorted by sku
//	GET  /products/{sku} → 200 product | 404
//	POST /orders         (X-User-Id; Idempotency-Key optional) → 202 {orderId, status, traceId}
//	                     where status is already final: confirmed or cancelled
//	GET  /orders/{id}    → 200 order with steps | 404 (also another user's)
//	GET  /orders?limit=&cursor= → 200 {items, nextCursor} newest first
func (m *Monolith) api(mux *http.ServeMux) {
	log := m.app.Log
	h := func(pattern string, f httpx.HandlerFunc) { mux.Handle(pattern, httpx.Handle(log, f)) }
	h("POST /users", m.register)
	h("POST /login", m.login)
	h("GET /users/{id}", m.getUser)
	mux.Handle("GET /internal/jwks", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		httpx.WriteJSON(w, http.StatusOK, m.signer.JWKS())
	}))
	h("GET /products", m.listProducts)
	h("GET /products/{sku}", m.getProduct)
	h("POST /orders", m.place)
	h("GET /orders/{id}", m.getOrder)
	h("GET /orders", m.listOrders)
}

// toHTTP translates domain errors into API errors, once, at the edge (users' codes).
func toHTTP(err error) error {
	var fe *shop.FieldError
	var unknown *UnknownSKUError
	switch {
	case errors.As(err, &fe):
		return httpx.Errorf(http.StatusBadRequest, "invalid_field", "%s %s", fe.Field, fe.Problem)
	case errors.Is(err, errEmailTaken):
		return httpx.Errorf(http.StatusConflict, "email_taken", "an account with this email already exists")
	case errors.Is(err, errInvalidCredentials):
		return httpx.Errorf(http.StatusUnauthorized, "invalid_credentials", "email or password is wrong")
	case errors.As(err, &unknown):
		return httpx.Errorf(http.StatusUnprocessableEntity, "unknown_sku", "no product with sku %q", unknown.SKU)
	case errors.Is(err, errKeyReused):
		return httpx.Errorf(http.StatusConflict, "idempotency_key_reused", "this Idempotency-Key was already used for a different request")
	}
	return err
}

func (m *Monolith) register(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email    string `json:"email"`
		Name     string `json:"name"`
		Password string `json:"password"`
	}
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	u, err := m.Register(r.Context(), shop.Account{Email: in.Email, Name: in.Name, Password: in.Password})
	if err != nil {
		return toHTTP(err)
	}
	httpx.WriteJSON(w, http.StatusCreated, u)
	return nil
}

func (m *Monolith) login(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := httpx.Decode(w, r, &in, 0); err != nil {
		return err
	}
	switch {
	case in.Email == "":
		return toHTTP(&shop.FieldError{Field: "email", Problem: "is required"})
	case in.Password == "":
		return toHTTP(&shop.FieldError{Field: "password", Problem: "is required"})
	}
	sess, err := m.Login(r.Context(), in.Email, in.Password)
	if err != nil {
		return toHTTP(err)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, sess)
	return nil
}

func (m *Monolith) getUser(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if uuid.Validate(id) != nil {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no user %q", id)
	}
	u, err := m.store.User(r.Context(), id)
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no user %q", id)
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, u)
	return nil
}

func (m *Monolith) listProducts(w http.ResponseWriter, r *http.Request) error {
	items, err := m.store.Products(r.Context())
	if err != nil {
		return err
	}
	if items == nil {
		items = []Product{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}

func (m *Monolith) getProduct(w http.ResponseWriter, r *http.Request) error {
	p, err := m.store.Product(r.Context(), r.PathValue("sku"))
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no product with sku %q", r.PathValue("sku"))
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, p)
	return nil
}

func caller(r *http.Request) (string, error) {
	id := r.Header.Get("X-User-Id")
	if id == "" {
		return "", httpx.Errorf(http.StatusUnauthorized, "unauthorized", "missing X-User-Id (the gateway sets it for an authenticated user)")
	}
	return id, nil
}

// Limits of an order (orders').
const (
	maxKeyLen = 255
)

// PlaceAnswer is the answer of POST /orders: orders' shape, with the status the order
// already has (the checkout ran to its end before the answer).
type PlaceAnswer struct {
	OrderID string `json:"orderId"`
	Status  string `json:"status"`
	TraceID string `json:"traceId"`
}

func (m *Monolith) place(w http.ResponseWriter, r *http.Request) error {
	user, err := caller(r)
	if err != nil {
		return err
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxKeyLen || !httpx.Printable(key) {
		return httpx.Errorf(http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be printable and at most %d characters", maxKeyLen)
	}
	var req PlaceRequest
	if err := httpx.Decode(w, r, &req, httpx.DefaultMaxBody); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	id, err := m.Checkout(r.Context(), user, key, req)
	if err != nil {
		return toHTTP(err)
	}
	o, err := m.store.Order(r.Context(), user, id)
	if err != nil {
		return err
	}
	// 202 like orders, so a client written for the saga (poll until final) works
	// unchanged; it just finds the order final at its first look.
	httpx.WriteJSON(w, http.StatusAccepted, PlaceAnswer{OrderID: id, Status: o.Status, TraceID: o.TraceID})
	return nil
}

// SagaMode is what the monolith's orders show as sagaMode: there is no saga.
const SagaMode = "monolith"

// OrderSummary, OrderView and ItemView are orders' API shapes.
type OrderSummary struct {
	OrderID      string     `json:"orderId"`
	Status       string     `json:"status"`
	CancelReason string     `json:"cancelReason"`
	Items        []ItemView `json:"items"`
	TotalCents   int64      `json:"totalCents"`
	Currency     string     `json:"currency"`
	SagaMode     string     `json:"sagaMode"`
	TraceID      string     `json:"traceId"`
	CreatedAt    time.Time  `json:"createdAt"`
}

type OrderView struct {
	OrderSummary
	Steps []Step `json:"steps"`
}

type ItemView struct {
	SKU        string `json:"sku"`
	Qty        int    `json:"qty"`
	PriceCents int64  `json:"priceCents"`
}

func summary(o Order) OrderSummary {
	v := OrderSummary{OrderID: o.ID, Status: o.Status, CancelReason: o.CancelReason, Items: []ItemView{},
		TotalCents: o.TotalCents, Currency: o.Currency, SagaMode: SagaMode, TraceID: o.TraceID, CreatedAt: o.CreatedAt}
	for _, it := range o.Items {
		v.Items = append(v.Items, ItemView{SKU: it.SKU, Qty: it.Qty, PriceCents: it.PriceCents})
	}
	return v
}

func (m *Monolith) getOrder(w http.ResponseWriter, r *http.Request) error {
	user, err := caller(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if uuid.Validate(id) != nil {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	o, err := m.store.Order(r.Context(), user, id)
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	if err != nil {
		return err
	}
	v := OrderView{OrderSummary: summary(o), Steps: o.Steps}
	if v.Steps == nil {
		v.Steps = []Step{}
	}
	httpx.WriteJSON(w, http.StatusOK, v)
	return nil
}

// Page sizes of GET /orders (orders').
const (
	defaultLimit = 20
	maxLimit     = 100
)

func (m *Monolith) listOrders(w http.ResponseWriter, r *http.Request) error {
	user, err := caller(r)
	if err != nil {
		return err
	}
	limit := defaultLimit
	if v := r.URL.Query().Get("limit"); v != "" || r.URL.Query().Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return httpx.Errorf(http.StatusBadRequest, "invalid_parameter", "limit must be an integer from 1 to %d", maxLimit)
		}
		limit = n
	}
	var after *Cursor
	if c := r.URL.Query().Get("cursor"); c != "" {
		cur, err := decodeCursor(c)
		if err != nil {
			return httpx.Errorf(http.StatusBadRequest, "invalid_parameter", "cursor is not one this API returned")
		}
		after = &cur
	}
	// view=history (read.model=cqrs) is accepted and answered from the one table: the
	// monolith has no separate read model, and needs none to answer the same page.
	if v := r.URL.Query().Get("view"); v != "" && v != "history" {
		return httpx.Errorf(http.StatusBadRequest, "invalid_parameter", "view must be \"history\" or absent")
	}
	orders, err := m.store.Orders(r.Context(), user, after, limit+1)
	if err != nil {
		return err
	}
	page := struct {
		Items      []OrderSummary `json:"items"`
		NextCursor string         `json:"nextCursor"`
	}{Items: []OrderSummary{}}
	if len(orders) > limit {
		orders = orders[:limit]
		last := orders[limit-1]
		page.NextCursor = encodeCursor(Cursor{CreatedAt: last.CreatedAt, ID: last.ID})
	}
	for _, o := range orders {
		page.Items = append(page.Items, summary(o))
	}
	httpx.WriteJSON(w, http.StatusOK, page)
	return nil
}

// Cursors are opaque to clients; the same form as orders' (base64url of
// "<created_at in unix microseconds>:<id>").
func encodeCursor(c Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + ":" + c.ID))
}

func decodeCursor(s string) (Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, err
	}
	ts, id, ok := strings.Cut(string(raw), ":")
	if !ok || uuid.Validate(id) != nil {
		return Cursor{}, errors.New("malformed cursor")
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Cursor{}, err
	}
	at := time.UnixMicro(us)
	if at.Year() < 2000 || at.Year() > 9999 {
		return Cursor{}, errors.New("malformed cursor")
	}
	return Cursor{CreatedAt: at, ID: id}, nil
}
