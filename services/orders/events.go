package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"microlab/services/contracts"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
)

// Event sourcing of the order aggregate (docs/patterns/event-sourcing.md). Every state
// change of an order is also appended to order_events, in the same statement as its step
// (Store.addStep) and so in the same transaction as the change: the stream is never
// behind the tables, and a rolled-back change leaves no event. Replaying the stream
// (Replay) rebuilds the order as the tables hold it, by the same rules: the stream alone
// is enough to know the order, which is what makes it a possible source of truth.
//
// Cost: one INSERT per step, folded into the step's own statement (a CTE) and queued
// with the transaction's other statements (pg.Later), so no round trip is added. A
// checkout that confirms appends 8 events in orchestration (placed, payment requested
// and authorized, stock requested and reserved, shipment requested and scheduled,
// confirmed) and 5 in choreography (placed, authorized, reserved, scheduled, confirmed),
// in 4 transactions either way: one per message orders handles.

// versionConflict reports the optimistic-concurrency conflict of Store.addStep: two
// transactions appended the same version of one order's stream and this one lost. It
// is not bad data: the message is retried at once (app.Options.Conflict), reads the
// version the winner wrote and appends the next. Left as a plain unique violation it
// would count as poison, and a burst of messages for one order (after a database
// restart, every order's replies arrive together) could use up its retries and
// dead-letter a step the order needs.
func versionConflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "order_events_pkey"
}

// eventData is an event's data: the step it recorded, and for order.placed the order.
type eventData struct {
	Name   string      `json:"name"`
	Status string      `json:"status"`
	Detail string      `json:"detail"`
	Order  *placedData `json:"order,omitempty"`
}

// placedData is the order as placed: everything that never changes afterwards.
type placedData struct {
	UserID     string            `json:"userId"`
	SagaMode   string            `json:"sagaMode"`
	TotalCents int64             `json:"totalCents"`
	Currency   string            `json:"currency"`
	Address    contracts.Address `json:"shippingAddress"`
	CardLast4  string            `json:"cardLast4"`
	TraceID    string            `json:"traceId"`
	CreatedAt  time.Time         `json:"createdAt"`
	Items      []contracts.Item  `json:"items"`
}

// Event is one entry of an order's stream.
type Event struct {
	Version    int       `json:"version"`
	Type       string    `json:"type"`
	Data       eventData `json:"data"`
	OccurredAt time.Time `json:"occurredAt"`
}

// errNoPlacedEvent: a stream that does not start with order.placed cannot be replayed.
var errNoPlacedEvent = errors.New("stream does not start with order.placed")

// Apply is the fold's step: the order after event e, given the order before it (the zero
// Order before the first event). Pure: the same events give the same order, always. The
// rules are the write side's: order.placed creates a pending order; order.confirmed and
// order.cancelled end it only while it is pending (Store.Finish's guard), the
// cancellation's detail being its reason; every event is a step of its log, which lists
// steps by time, ties in the order they were appended (order_steps' ORDER BY at, id).
func Apply(o Order, orderID string, e Event) (Order, error) {
	step := Step{Name: e.Data.Name, Status: e.Data.Status, Detail: e.Data.Detail, At: e.OccurredAt}
	if e.Version == 1 {
		p := e.Data.Order
		if e.Type != "order.placed" || p == nil {
			return Order{}, fmt.Errorf("order %s: %w (got %s)", orderID, errNoPlacedEvent, e.Type)
		}
		items := append([]contracts.Item{}, p.Items...)
		return Order{ID: orderID, UserID: p.UserID, Status: statusPending, SagaMode: p.SagaMode,
			TotalCents: p.TotalCents, Currency: p.Currency, Address: p.Address, CardLast4: p.CardLast4,
			TraceID: p.TraceID, CreatedAt: p.CreatedAt, Items: items, Steps: []Step{step}}, nil
	}
	if o.ID == "" {
		return Order{}, fmt.Errorf("order %s: %w (version %d first)", orderID, errNoPlacedEvent, e.Version)
	}
	switch e.Type {
	case "order.confirmed":
		if o.Status == statusPending {
			o.Status = statusConfirmed
		}
	case "order.cancelled":
		if o.Status == statusPending {
			o.Status, o.CancelReason = statusCancelled, e.Data.Detail
		}
	}
	// A copy, so every version's state stays as it was (GET /orders/{id}/events shows
	// them all); inserted after the last step not later than it.
	steps := make([]Step, 0, len(o.Steps)+1)
	i := len(o.Steps)
	for i > 0 && o.Steps[i-1].At.After(step.At) {
		i--
	}
	steps = append(append(append(steps, o.Steps[:i]...), step), o.Steps[i:]...)
	o.Steps = steps
	return o, nil
}

// Replay folds a whole stream into the order it describes, and returns the state after
// each version too (states[i] is the order after events[i]).
func Replay(orderID string, events []Event) (Order, []Order, error) {
	var o Order
	states := make([]Order, 0, len(events))
	for i, e := range events {
		if e.Version != i+1 {
			return Order{}, nil, fmt.Errorf("order %s: version %d where %d was expected: the stream has a gap", orderID, e.Version, i+1)
		}
		var err error
		if o, err = Apply(o, orderID, e); err != nil {
			return Order{}, nil, err
		}
		states = append(states, o)
	}
	if len(events) == 0 {
		return Order{}, nil, errNotFound
	}
	return o, states, nil
}

// Events returns an order's stream, oldest first (errNotFound: no event, no order).
func (s *Store) Events(ctx context.Context, orderID string) ([]Event, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT version, type, data, occurred_at FROM order_events
		WHERE order_id = $1 ORDER BY version`, orderID)
	if err != nil {
		return nil, fmt.Errorf("read order events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.Version, &e.Type, &e.Data, &e.OccurredAt)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read order events: %w", err)
	}
	if len(events) == 0 {
		return nil, errNotFound
	}
	return events, nil
}

// EventView is one event of GET /orders/{id}/events with the order's state after it.
type EventView struct {
	Event
	State OrderView `json:"state"`
}

// StreamView is the answer of GET /orders/{id}/events: the stream, and the order it
// replays to (the same as GET /orders/{id} answers, or the event store is wrong).
type StreamView struct {
	OrderID string      `json:"orderId"`
	Version int         `json:"version"`
	Events  []EventView `json:"events"`
	State   OrderView   `json:"state"`
}

// events is GET /orders/{id}/events: orders' internal API (the gateway does not route
// it), for the dashboard and the exercises; any order, whoever placed it.
func (s *Service) events(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if uuid.Validate(id) != nil {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	events, err := s.store.Events(r.Context(), id)
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	if err != nil {
		return err
	}
	o, states, err := Replay(id, events)
	if err != nil {
		return err
	}
	out := StreamView{OrderID: id, Version: len(events), Events: make([]EventView, len(events)), State: view(o)}
	for i, e := range events {
		out.Events[i] = EventView{Event: e, State: view(states[i])}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}
