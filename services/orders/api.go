package main

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"microlab/services/platform/httpx"

	"github.com/google/uuid"
)

// api registers orders' internal HTTP API (the gateway exposes it as /api/v1/orders).
// X-User-Id is the authenticated caller: the gateway sets it from the verified token and
// never passes a client's own; orders trusts it because only the gateway can reach it.
//
//	POST /orders         (Idempotency-Key optional) {items:[{sku,qty}], card, shippingAddress}
//	                     → 202 {orderId, status:"pending", traceId}
//	                     | 400 validation | 401 | 409 idempotency_key_reused | 422 unknown_sku
//	                     | 503 catalog_unavailable
//	GET  /orders/{id}    → 200 order | 401 | 404 (also for another user's order)
//	GET  /orders?limit=&cursor=&view=
//	                     → 200 {items:[order...], nextCursor} newest first; nextCursor ""
//	                       on the last page. view=history: from the read model (history.go;
//	                       steps are [] there)
func (s *Service) api(mux *http.ServeMux) {
	mux.Handle("POST /orders", httpx.Handle(s.app.Log, s.place))
	mux.Handle("GET /orders/{id}", httpx.Handle(s.app.Log, s.get))
	mux.Handle("GET /orders/{id}/events", httpx.Handle(s.app.Log, s.events))
	mux.Handle("POST /projections/order-history/rebuild", httpx.Handle(s.app.Log, s.startRebuild))
	mux.Handle("GET /projections/order-history/rebuild/{job}", httpx.Handle(s.app.Log, s.rebuildStatus))
	mux.Handle("GET /orders", httpx.Handle(s.app.Log, s.list))
}

// maxKeyLen bounds an Idempotency-Key (an order's own limits: shop.MaxLines, MaxQty).
const maxKeyLen = 255

func caller(r *http.Request) (string, error) {
	id := r.Header.Get("X-User-Id")
	if id == "" {
		return "", httpx.Errorf(http.StatusUnauthorized, "unauthorized", "missing X-User-Id (the gateway sets it for an authenticated user)")
	}
	return id, nil
}

// PlaceAnswer is the answer of POST /orders.
type PlaceAnswer struct {
	OrderID string `json:"orderId"`
	Status  string `json:"status"`
	TraceID string `json:"traceId"`
}

func (s *Service) place(w http.ResponseWriter, r *http.Request) error {
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
	id, err := s.Place(r.Context(), user, key, req)
	var unknown *UnknownSKUError
	switch {
	case errors.As(err, &unknown):
		return httpx.Errorf(http.StatusUnprocessableEntity, "unknown_sku", "no product with sku %q", unknown.SKU)
	case errors.Is(err, errCatalogUnavailable):
		s.app.Log.WarnContext(r.Context(), "catalog unavailable; order refused", "err", err)
		return httpx.Errorf(http.StatusServiceUnavailable, "catalog_unavailable", "prices cannot be read right now; retry later")
	case errors.Is(err, errKeyReused):
		return httpx.Errorf(http.StatusConflict, "idempotency_key_reused",
			"this Idempotency-Key was already used for a different request")
	case err != nil:
		return err
	}
	// A repeated request gets the first answer again, status included: the order's
	// progress since is for GET /orders/{id} to tell.
	// traceId is the trace the order was placed in (for a repeat, the first request's),
	// so a client can open the whole checkout in Jaeger.
	o, err := s.store.Get(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, PlaceAnswer{OrderID: id, Status: statusPending, TraceID: o.TraceID})
	return nil
}

// OrderSummary is an order as a list shows it (GET /orders, in either read.model): what
// it is and how it ended, not how it got there. The step log is the write side's own
// record — it holds entries no event carries (commands sent, timeouts, overdue marks) —
// so the CQRS read model could not list it, and the write side's list need not pay a
// query for it: both lists answer the same, and GET /orders/{id} tells the story.
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

// OrderView is one order as GET /orders/{id} shows it: its summary and its saga's steps.
type OrderView struct {
	OrderSummary
	Steps []Step `json:"steps"`
}

// ItemView is one order line as the API shows it.
type ItemView struct {
	SKU        string `json:"sku"`
	Qty        int    `json:"qty"`
	PriceCents int64  `json:"priceCents"`
}

func summary(o Order) OrderSummary {
	v := OrderSummary{OrderID: o.ID, Status: o.Status, CancelReason: o.CancelReason, Items: []ItemView{},
		TotalCents: o.TotalCents, Currency: o.Currency, SagaMode: o.SagaMode, TraceID: o.TraceID, CreatedAt: o.CreatedAt}
	for _, it := range o.Items {
		v.Items = append(v.Items, ItemView{SKU: it.SKU, Qty: it.Qty, PriceCents: it.PriceCents})
	}
	return v
}

func view(o Order) OrderView {
	v := OrderView{OrderSummary: summary(o), Steps: o.Steps}
	if v.Steps == nil {
		v.Steps = []Step{}
	}
	return v
}

func (s *Service) get(w http.ResponseWriter, r *http.Request) error {
	user, err := caller(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if uuid.Validate(id) != nil { // order ids are UUIDs: anything else cannot exist
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	o, err := s.store.GetFor(r.Context(), user, id)
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, view(o))
	return nil
}

// Page sizes of GET /orders.
const (
	defaultLimit = 20
	maxLimit     = 100
)

// OrderPage is the answer of GET /orders.
type OrderPage struct {
	Items      []OrderSummary `json:"items"`
	NextCursor string         `json:"nextCursor"`
}

func (s *Service) list(w http.ResponseWriter, r *http.Request) error {
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
	// view=history: the same page from the CQRS read model (history.go), which the
	// gateway asks for with read.model=cqrs; the same cursors work in both.
	list := s.store.List
	switch v := r.URL.Query().Get("view"); v {
	case "":
	case viewHistory:
		list = s.history.List
	default:
		return httpx.Errorf(http.StatusBadRequest, "invalid_parameter", "view must be %q or absent", viewHistory)
	}
	// One more than asked: if it exists, there is a next page.
	orders, err := list(r.Context(), user, after, limit+1)
	if err != nil {
		return err
	}
	page := OrderPage{Items: []OrderSummary{}}
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

// Cursors are opaque to clients: base64url of "<created_at in unix microseconds>:<id>"
// (PostgreSQL keeps microseconds, so the position round-trips exactly).
func encodeCursor(c Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + ":" + c.ID))
}

func decodeCursor(s string) (Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, err
	}
	ts, id, ok := strings.Cut(string(raw), ":")
	if !ok || id == "" {
		return Cursor{}, errors.New("malformed cursor")
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Cursor{}, err
	}
	at := time.UnixMicro(us)
	// Only positions this API could have produced: a real order id and a timestamp
	// PostgreSQL can store (a forged cursor is the client's 400, not our 500).
	if uuid.Validate(id) != nil || at.Year() < 2000 || at.Year() > 9999 {
		return Cursor{}, errors.New("malformed cursor")
	}
	return Cursor{CreatedAt: at, ID: id}, nil
}
