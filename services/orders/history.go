package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/pg"
)

// The query side of CQRS (read.model=cqrs, DESIGN §7; docs/architecture.md "The order
// history read model"). The write side answers GET /orders by joining orders,
// order_items and order_steps; the read model answers GET /orders?view=history from one
// denormalised table, order_history, that it keeps from EVENTS ONLY: it never reads the
// write side's tables (bar the one-time backfill in its migration). It could live in
// another service with another database; it lives in orders to stay small.
//
// It consumes on a queue of its own, orders-history.events, with its own inbox name
// (app.Pipeline uses the queue's Service as the inbox consumer), all the time, whatever
// read.model says: switching the setting only chooses which side the gateway asks, so
// the read model is current whenever it is switched on.
//
// What it shows lags behind what happened by the trip through the outbox and the broker
// (read_model_apply_lag_seconds): an order placed a moment ago may not be listed yet.
// That is the price of CQRS, and what the lab lets a learner see.

// historyEvents are the events that change what the history lists: order.placed brings
// everything but the outcome, order.confirmed and order.cancelled the outcome.
var historyEvents = []string{contracts.OrderPlaced, contracts.OrderConfirmed, contracts.OrderCancelled}

// historyQueue is the read model's queue: a consumer of its own, so its inbox, retries
// and DLQ are its own too, and a slow projection never holds up the saga.
var historyQueue = bus.Queue{Service: "orders-history", Events: historyEvents}

// viewHistory is GET /orders?view=history: the list from the read model.
const viewHistory = "history"

// History is the read model: its table and its lag metric.
type History struct {
	pool *pgxpool.Pool
	lag  prometheus.Histogram
}

// newHistory creates the read model and registers read_model_apply_lag_seconds on reg
// (nil: not exported).
func newHistory(pool *pgxpool.Pool, reg prometheus.Registerer) *History {
	h := &History{pool: pool, lag: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "read_model_apply_lag_seconds",
		Help: "Order history read model: from an event's occurredAt to the commit that applied it.",
		// From a few milliseconds (the lab idle) to minutes (orders was down, a backlog).
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	})}
	if reg != nil {
		reg.MustRegister(h.lag)
	}
	return h
}

func (h *History) routes() bus.Routes {
	return bus.Routes{
		contracts.OrderPlaced:    h.onPlaced,
		contracts.OrderConfirmed: h.onFinal,
		contracts.OrderCancelled: h.onFinal,
	}
}

// Every apply is idempotent and commutative, so a redelivery (with the inbox switched
// off too) or events in any order end in the same row:
//   - order.placed fills what it carries, once (only while created_at is NULL), and
//     never touches the status;
//   - order.confirmed / order.cancelled set the outcome only while the row is pending:
//     a final status outranks pending, and an order ends once, so the first outcome
//     is the only one;
//   - whichever comes first creates the row.

func (h *History) onPlaced(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var p contracts.OrderPlacedData
	if err := env.DecodeData(&p); err != nil {
		return err
	}
	items := p.Items
	if items == nil {
		items = []contracts.Item{}
	}
	raw, err := json.Marshal(items)
	if err != nil {
		return err
	}
	// The order's trace: the delivery's context continues the trace the order was placed
	// in (the outbox row kept it), which is the trace id the write side stored.
	var traceID string
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		traceID = sc.TraceID().String()
	}
	// The order's createdAt is order.placed's occurredAt (Place writes both from one
	// clock reading), at PostgreSQL's precision.
	at := env.OccurredAt.Truncate(time.Microsecond)
	if _, err := pg.Q(ctx, h.pool).Exec(ctx, `INSERT INTO order_history AS h
		(order_id, user_id, saga_mode, total_cents, currency, items, trace_id, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (order_id) DO UPDATE SET user_id = EXCLUDED.user_id, saga_mode = EXCLUDED.saga_mode,
			total_cents = EXCLUDED.total_cents, currency = EXCLUDED.currency, items = EXCLUDED.items,
			trace_id = EXCLUDED.trace_id, created_at = EXCLUDED.created_at, applied_at = clock_timestamp()
		WHERE h.created_at IS NULL`,
		p.OrderID, p.UserID, p.SagaMode, p.TotalCents, p.Currency, raw, traceID, at); err != nil {
		return fmt.Errorf("read model: apply order.placed: %w", err)
	}
	h.observe(ctx, env)
	return nil
}

func (h *History) onFinal(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var f struct {
		contracts.Saga
		UserID string `json:"userId"`
		Reason string `json:"reason"`
	}
	if err := env.DecodeData(&f); err != nil {
		return err
	}
	status, reason := statusConfirmed, ""
	if env.EventType == contracts.OrderCancelled {
		status, reason = statusCancelled, f.Reason
	}
	if _, err := pg.Q(ctx, h.pool).Exec(ctx, `INSERT INTO order_history AS h (order_id, user_id, saga_mode, status, cancel_reason)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, cancel_reason = EXCLUDED.cancel_reason,
			applied_at = clock_timestamp()
		WHERE h.status = 'pending'`,
		f.OrderID, f.UserID, f.SagaMode, status, reason); err != nil {
		return fmt.Errorf("read model: apply %s: %w", env.EventType, err)
	}
	h.observe(ctx, env)
	return nil
}

// observe records the event's lag once its change is committed (a rolled-back apply is
// retried, and counted then).
func (h *History) observe(ctx context.Context, env contracts.Envelope) {
	pg.AfterCommit(ctx, func(context.Context) {
		h.lag.Observe(max(0, time.Since(env.OccurredAt).Seconds()))
	})
}

// List is GET /orders?view=history: up to limit of a user's orders, newest first, after
// cursor, exactly as Store.List pages the write side (same order, same cursor, the same
// OrderSummary fields: no steps), from order_history alone.
func (h *History) List(ctx context.Context, userID string, after *Cursor, limit int) ([]Order, error) {
	q := `SELECT order_id, user_id, status, cancel_reason, saga_mode, total_cents, currency, items, trace_id, created_at
		FROM order_history WHERE user_id = $1 AND created_at IS NOT NULL`
	args := []any{userID}
	if after != nil {
		q += ` AND (created_at, order_id) < ($2, $3)`
		args = append(args, after.CreatedAt, after.ID)
	}
	q += fmt.Sprintf(` ORDER BY created_at DESC, order_id DESC LIMIT %d`, limit)
	rows, err := pg.Q(ctx, h.pool).Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list order history: %w", err)
	}
	orders, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) {
		var o Order
		var items []byte
		if err := r.Scan(&o.ID, &o.UserID, &o.Status, &o.CancelReason, &o.SagaMode, &o.TotalCents, &o.Currency,
			&items, &o.TraceID, &o.CreatedAt); err != nil {
			return Order{}, err
		}
		if err := json.Unmarshal(items, &o.Items); err != nil {
			return Order{}, fmt.Errorf("order %s: items: %w", o.ID, err)
		}
		return o, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list order history: %w", err)
	}
	return orders, nil
}
