package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"microlab/dashboard/views"
	"microlab/exercises"
	"microlab/lab/loadgen"
	"microlab/services/platform/config"
	"microlab/services/platform/httpx"
)

// Orders' event store on the Sagas page (docs/patterns/event-sourcing.md): one order's
// stream with its state at any version, and the rebuild of the order history read model
// from every stream. Both are orders' internal API (ORDERS_URL; the gateway routes
// neither): GET /orders/{id}/events, POST /projections/order-history/rebuild and GET
// /projections/order-history/rebuild/{job}. The dashboard only shows what orders
// answers: the fold that makes a state out of events is orders' (Replay), so what the
// learner sees at version N is exactly what a replay builds, not a second copy of the
// rules.

// ordersTimeout bounds one call to orders' API: a page waits for it.
const ordersTimeout = 3 * time.Second

// streamAnswer is GET /orders/{id}/events as far as the dashboard reads it
// (services/orders/events.go: StreamView).
type streamAnswer struct {
	OrderID string `json:"orderId"`
	Version int    `json:"version"`
	Events  []struct {
		Version int `json:"version"`
		Type    string
		Data    struct {
			Name   string `json:"name"`
			Status string `json:"status"`
			Detail string `json:"detail"`
			Order  *struct {
				TotalCents int64  `json:"totalCents"`
				Currency   string `json:"currency"`
				Items      []struct {
					SKU string `json:"sku"`
					Qty int    `json:"qty"`
				} `json:"items"`
			} `json:"order"`
		} `json:"data"`
		OccurredAt time.Time   `json:"occurredAt"`
		State      stateAnswer `json:"state"`
	} `json:"events"`
}

// stateAnswer is an order as orders' API shows it (OrderView).
type stateAnswer struct {
	Status       string `json:"status"`
	CancelReason string `json:"cancelReason"`
	SagaMode     string `json:"sagaMode"`
	TotalCents   int64  `json:"totalCents"`
	Currency     string `json:"currency"`
	Items        []struct {
		SKU        string `json:"sku"`
		Qty        int    `json:"qty"`
		PriceCents int64  `json:"priceCents"`
	} `json:"items"`
	Steps []struct {
		Name   string    `json:"name"`
		Status string    `json:"status"`
		Detail string    `json:"detail"`
		At     time.Time `json:"at"`
	} `json:"steps"`
}

// rebuildJob is one rebuild as orders answers it (services/orders/rebuild.go: Rebuild).
type rebuildJob struct {
	JobID      string     `json:"jobId"`
	Projection string     `json:"projection"`
	Status     string     `json:"status"` // running, completed, failed
	Done       int        `json:"done"`
	Total      int        `json:"total"`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// newOrdersAPI is the one client of orders' API (one transport: its connections are
// reused from call to call).
func newOrdersAPI(base string) *loadgen.Client {
	return loadgen.NewClient(strings.TrimRight(base, "/"), httpx.NewClient(ordersTimeout))
}

func (s *server) ordersAPI() *loadgen.Client { return s.orders }

// ordersShown is orders' URL as messages show it (a password masked).
func (s *server) ordersShown() string { return config.MaskURL(s.cfg.OrdersURL) }

// streamModel reads one order's stream and picks the state at version (0: the latest).
// Orders not answering, and an order without a stream, are states of the section, not
// errors of the page: the saga above it is still worth showing.
func (s *server) streamModel(ctx context.Context, order string, version int) views.EventStreamModel {
	m := views.EventStreamModel{OrderID: order}
	if uuid.Validate(order) != nil {
		m.NoStream = true // orders' ids are UUIDs: this one is none of its
		return m
	}
	ctx, cancel := context.WithTimeout(ctx, ordersTimeout)
	defer cancel()
	var a streamAnswer
	err := s.ordersAPI().Do(ctx, http.MethodGet, "/orders/"+url.PathEscape(order)+"/events", "", nil, nil, &a)
	switch {
	case loadgen.StatusOf(err) == http.StatusNotFound:
		m.NoStream = true
		return m
	case err != nil:
		m.Error = fmt.Sprintf("%s: %v", s.ordersShown(), err)
		return m
	case len(a.Events) == 0:
		m.NoStream = true
		return m
	}
	m.Selected = len(a.Events)
	if version >= 1 && version <= len(a.Events) {
		m.Selected = version
	}
	for _, e := range a.Events {
		row := views.StreamEvent{Version: e.Version, Type: e.Type, At: e.OccurredAt, Key: strings.TrimSpace(e.Data.Name + " " + e.Data.Status)}
		if p := e.Data.Order; p != nil {
			n := 0
			for _, it := range p.Items {
				n += it.Qty
			}
			row.Key += fmt.Sprintf(": %d item(s), %s", n, views.Money(p.TotalCents, p.Currency))
		} else if e.Data.Detail != "" {
			row.Key += ": " + e.Data.Detail
		}
		m.Events = append(m.Events, row)
		if e.Version == m.Selected {
			m.State = orderStateOf(e.Version, e.State)
		}
	}
	return m
}

func orderStateOf(version int, a stateAnswer) views.OrderState {
	st := views.OrderState{Version: version, Status: a.Status, CancelReason: a.CancelReason, SagaMode: a.SagaMode,
		TotalCents: a.TotalCents, Currency: a.Currency}
	for _, it := range a.Items {
		st.Items = append(st.Items, views.StateItem{SKU: it.SKU, Qty: it.Qty, PriceCents: it.PriceCents})
	}
	for _, x := range a.Steps {
		st.Steps = append(st.Steps, views.StateStep{Name: x.Name, Status: x.Status, Detail: x.Detail, At: x.At})
	}
	return st
}

// versionParam reads ?version= (absent: 0, the latest); anything but a positive integer
// is a 400.
func versionParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, httpx.Errorf(http.StatusBadRequest, "invalid_version", "version is a positive integer (got %q)", v)
	}
	return n, nil
}

// sagaEvents is GET /sagas/{id}/events?version=N: the "Event stream" section alone, which
// sagas.js swaps in when the learner picks a version (the server stays the one place
// that draws it).
func (s *server) sagaEvents(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if uuid.Validate(id) != nil {
		return httpx.Errorf(http.StatusBadRequest, "invalid_order_id", "an order id is a UUID (got %q)", id)
	}
	version, err := versionParam(r)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := views.EventStream(s.streamModel(r.Context(), id, version)).Render(r.Context(), &buf); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err = buf.WriteTo(w)
	return err
}

// projectionParam is {projection}: one of the read models orders can rebuild.
func projectionParam(r *http.Request) (string, error) {
	p := r.PathValue("projection")
	if !slices.Contains(exercises.Projections, p) {
		return "", httpx.Errorf(http.StatusBadRequest, "unknown_projection", "orders rebuilds %s (got %q)",
			strings.Join(exercises.Projections, ", "), p)
	}
	return p, nil
}

// ordersRefusal turns orders' answer into the dashboard's: its 409 (a rebuild runs) and
// 404 pass through with orders' message; orders not answering is a 502 naming it.
func (s *server) ordersRefusal(err error) error {
	var ae *loadgen.APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusConflict, http.StatusNotFound:
			return httpx.Errorf(ae.Status, ae.Code, "%s", ae.Msg)
		}
		return httpx.Errorf(http.StatusBadGateway, "orders_failed", "orders answered %d %s: %s", ae.Status, ae.Code, ae.Msg)
	}
	return httpx.Errorf(http.StatusBadGateway, "orders_unreachable", "orders' event store is not answering: %s: %v", s.ordersShown(), err)
}

// startRebuild: POST /api/lab/projections/{projection}/rebuild → 202 with the job
// (orders' answer); 409 rebuild_running while one runs, from whichever face it was
// started (the dashboard, an exercise, a curl). A control action like the switches:
// Origin-checked (requireSameOrigin), so no other site can start one.
func (s *server) startRebuild(w http.ResponseWriter, r *http.Request) error {
	p, err := projectionParam(r)
	if err != nil {
		return err
	}
	var job rebuildJob
	if err := s.ordersAPI().Do(r.Context(), http.MethodPost, "/projections/"+url.PathEscape(p)+"/rebuild", "", nil, nil, &job); err != nil {
		return s.ordersRefusal(err)
	}
	httpx.WriteJSON(w, http.StatusAccepted, job)
	return nil
}

// rebuildStatus: GET /api/lab/projections/{projection}/rebuild/{job} → the job's
// progress (done of total, status), which sagas.js polls until it has ended.
func (s *server) rebuildStatus(w http.ResponseWriter, r *http.Request) error {
	p, err := projectionParam(r)
	if err != nil {
		return err
	}
	id := r.PathValue("job")
	if uuid.Validate(id) != nil {
		return httpx.Errorf(http.StatusBadRequest, "invalid_job_id", "a rebuild job id is a UUID (got %q)", id)
	}
	var job rebuildJob
	if err := s.ordersAPI().Do(r.Context(), http.MethodGet, "/projections/"+url.PathEscape(p)+"/rebuild/"+url.PathEscape(id), "", nil, nil, &job); err != nil {
		return s.ordersRefusal(err)
	}
	httpx.WriteJSON(w, http.StatusOK, job)
	return nil
}
