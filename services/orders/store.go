package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/contracts"
	"microlab/services/orders/saga"
	"microlab/services/platform/pg"
)

// Store is orders' SQL. Calls join the transaction in ctx (pg.InTx), so a handler's
// state change, its step log and its outgoing messages commit together.
type Store struct {
	pool *pgxpool.Pool
}

// Order statuses.
const (
	statusPending   = "pending"
	statusConfirmed = "confirmed"
	statusCancelled = "cancelled"
)

// Order is one order with its lines (and, when read for the API, its steps).
type Order struct {
	ID           string
	UserID       string
	Status       string
	CancelReason string
	SagaMode     string
	TotalCents   int64
	Currency     string
	Address      contracts.Address
	CardLast4    string
	TraceID      string
	CreatedAt    time.Time
	Items        []contracts.Item
	Steps        []Step
}

// Checkout is the state that travels with every message of the order's saga.
func (o Order) Checkout() contracts.Checkout {
	return contracts.Checkout{
		Saga:            contracts.Saga{OrderID: o.ID, SagaMode: o.SagaMode},
		UserID:          o.UserID,
		Items:           o.Items,
		TotalCents:      o.TotalCents,
		Currency:        o.Currency,
		ShippingAddress: o.Address,
	}
}

// Step is one entry of an order's step log.
type Step struct {
	Name   string    `json:"name"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail"`
}

var (
	errNotFound = errors.New("not found")
	// errKeyTaken: another request claimed the idempotency key first.
	errKeyTaken = errors.New("idempotency key taken")
)

// ClaimKey records an idempotency key for an order about to be inserted. A concurrent
// transaction claiming the same key waits on the primary key until this one ends, then
// gets errKeyTaken (and must roll back: the unique violation aborts its transaction).
func (s *Store) ClaimKey(ctx context.Context, userID, key, hash, orderID string) error {
	_, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO idempotency_keys (user_id, key, request_hash, order_id)
		VALUES ($1, $2, $3, $4)`, userID, key, hash, orderID)
	if pg.IsUniqueViolation(err) {
		return errKeyTaken
	}
	if err != nil {
		return fmt.Errorf("claim idempotency key: %w", err)
	}
	return nil
}

// Key returns the request hash and order of an idempotency key, or errNotFound.
func (s *Store) Key(ctx context.Context, userID, key string) (hash, orderID string, err error) {
	err = pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT request_hash, order_id FROM idempotency_keys
		WHERE user_id = $1 AND key = $2`, userID, key).Scan(&hash, &orderID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", errNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("read idempotency key: %w", err)
	}
	return hash, orderID, nil
}

// Insert records a new order and its lines. created_at is o.CreatedAt (now when zero).
// Queued until commit (pg.Later): nothing in the placing transaction reads the order
// back, so the order, its lines, its first step and its event go in one round trip.
func (s *Store) Insert(ctx context.Context, o Order) error {
	var at *time.Time
	if !o.CreatedAt.IsZero() {
		at = &o.CreatedAt
	}
	if err := pg.Later(ctx, s.pool, `INSERT INTO orders (order_id, user_id, status, saga_mode, total_cents, currency,
		shipping_address, card_last4, trace_id, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, clock_timestamp()))`,
		o.ID, o.UserID, o.Status, o.SagaMode, o.TotalCents, o.Currency, o.Address, o.CardLast4, o.TraceID, at); err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	for i, it := range o.Items {
		if err := pg.Later(ctx, s.pool, `INSERT INTO order_items (order_id, line, sku, qty, price_cents)
			VALUES ($1, $2, $3, $4, $5)`, o.ID, i+1, it.SKU, it.Qty, it.PriceCents); err != nil {
			return fmt.Errorf("insert order line: %w", err)
		}
	}
	return nil
}

// AddStep appends what orders itself did now to an order's step log. Queued until
// commit (pg.Later): a handler reads no step it logs.
func (s *Store) AddStep(ctx context.Context, orderID, name, status, detail string) error {
	return s.AddStepAt(ctx, orderID, name, status, detail, time.Time{})
}

// AddStepAt appends a step that happened at at: an event's own time (its occurredAt),
// so the log reads in the order things happened, not in the order orders received them
// (a shipment.failed handled after the payment.refunded it caused is still listed
// before it). The zero time is now.
//
// The same statement appends the step's event to the order's event stream (events.go):
// one statement, so the event store costs no extra round trip and cannot be forgotten.
func (s *Store) AddStepAt(ctx context.Context, orderID, name, status, detail string, at time.Time) error {
	return s.addStep(ctx, orderID, name, status, detail, at, nil)
}

// AddPlaced appends an order's first step, order/placed, whose event carries the order
// as placed: the start of its stream, from which a replay rebuilds it.
func (s *Store) AddPlaced(ctx context.Context, o Order, detail string) error {
	return s.addStep(ctx, o.ID, "order", "placed", detail, time.Time{}, &placedData{
		UserID: o.UserID, SagaMode: o.SagaMode, TotalCents: o.TotalCents, Currency: o.Currency,
		Address: o.Address, CardLast4: o.CardLast4, TraceID: o.TraceID, CreatedAt: o.CreatedAt, Items: o.Items})
}

// addStep inserts a step and its event. The version is the order's last one plus one,
// read in the same statement: two transactions appending to one order at once both read
// N, and the second to insert N+1 waits for the first and then fails on the primary key
// (optimistic concurrency; the message it handled is retried and reads N+1 next time).
func (s *Store) addStep(ctx context.Context, orderID, name, status, detail string, at time.Time, placed *placedData) error {
	var when *time.Time
	if !at.IsZero() {
		when = &at
	}
	data, err := json.Marshal(eventData{Name: name, Status: status, Detail: detail, Order: placed})
	if err != nil {
		return fmt.Errorf("encode event %s.%s: %w", name, status, err)
	}
	if err := pg.Later(ctx, s.pool, `WITH st AS (
			INSERT INTO order_steps (order_id, name, status, detail, at)
			VALUES ($1, $2, $3, $4, coalesce($5, clock_timestamp())) RETURNING order_id, at)
		INSERT INTO order_events (order_id, version, type, data, occurred_at)
		SELECT st.order_id, (SELECT coalesce(max(version), 0) + 1 FROM order_events WHERE order_id = $1),
			$2 || '.' || $3, $6, st.at FROM st`, orderID, name, status, detail, when, data); err != nil {
		return fmt.Errorf("record step %s/%s: %w", name, status, err)
	}
	return nil
}

const orderColumns = `order_id, user_id, status, cancel_reason, saga_mode, total_cents, currency,
	shipping_address, card_last4, trace_id, created_at`

func scanOrder(r pgx.Row) (Order, error) {
	var o Order
	err := r.Scan(&o.ID, &o.UserID, &o.Status, &o.CancelReason, &o.SagaMode, &o.TotalCents, &o.Currency,
		&o.Address, &o.CardLast4, &o.TraceID, &o.CreatedAt)
	return o, err
}

// Get returns an order with its lines (no steps), or errNotFound. The lines come in the
// same statement (a JSON array built by PostgreSQL): every saga event handler starts
// here, and one round trip is half the wait of two.
func (s *Store) Get(ctx context.Context, id string) (Order, error) {
	var lines []byte
	var o Order
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT `+orderColumns+`,
		(SELECT coalesce(json_agg(json_build_object('sku', i.sku, 'qty', i.qty, 'priceCents', i.price_cents) ORDER BY i.line), '[]')
		 FROM order_items i WHERE i.order_id = o.order_id)
		FROM orders o WHERE o.order_id = $1`, id).Scan(&o.ID, &o.UserID, &o.Status, &o.CancelReason, &o.SagaMode,
		&o.TotalCents, &o.Currency, &o.Address, &o.CardLast4, &o.TraceID, &o.CreatedAt, &lines)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, errNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("get order: %w", err)
	}
	if err := json.Unmarshal(lines, &o.Items); err != nil {
		return Order{}, fmt.Errorf("read order lines: %w", err)
	}
	o.Steps = []Step{}
	return o, nil
}

// GetFor returns a user's order with lines and steps. Someone else's order is
// errNotFound: its existence is not the caller's business.
func (s *Store) GetFor(ctx context.Context, userID, id string) (Order, error) {
	o, err := scanOrder(pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT `+orderColumns+` FROM orders
		WHERE order_id = $1 AND user_id = $2`, id, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, errNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("get order: %w", err)
	}
	orders := []Order{o}
	if err := s.fill(ctx, orders, true); err != nil {
		return Order{}, err
	}
	return orders[0], nil
}

// Cursor is a position in a user's order list: the last (created_at, order_id) seen.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// List returns up to limit of a user's orders, newest first, after cursor (nil: from the
// newest). Keyset pagination: the row comparison is served by orders_by_user, however
// deep the page, and an order placed meanwhile never shifts a page.
func (s *Store) List(ctx context.Context, userID string, after *Cursor, limit int) ([]Order, error) {
	q := `SELECT ` + orderColumns + ` FROM orders WHERE user_id = $1`
	args := []any{userID}
	if after != nil {
		q += ` AND (created_at, order_id) < ($2, $3)`
		args = append(args, after.CreatedAt, after.ID)
	}
	q += fmt.Sprintf(` ORDER BY created_at DESC, order_id DESC LIMIT %d`, limit)
	rows, err := pg.Q(ctx, s.pool).Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	orders, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	if err := s.fill(ctx, orders, false); err != nil {
		return nil, err
	}
	return orders, nil
}

// fill loads the lines (and steps) of several orders in one query each, not one per order.
func (s *Store) fill(ctx context.Context, orders []Order, steps bool) error {
	if len(orders) == 0 {
		return nil
	}
	ids := make([]string, len(orders))
	at := map[string]*Order{}
	for i := range orders {
		ids[i] = orders[i].ID
		at[orders[i].ID] = &orders[i]
		orders[i].Items = []contracts.Item{}
		orders[i].Steps = []Step{}
	}
	q := pg.Q(ctx, s.pool)
	rows, err := q.Query(ctx, `SELECT order_id, sku, qty, price_cents FROM order_items
		WHERE order_id = ANY($1) ORDER BY order_id, line`, ids)
	if err != nil {
		return fmt.Errorf("read order lines: %w", err)
	}
	for rows.Next() {
		var id string
		var it contracts.Item
		if err := rows.Scan(&id, &it.SKU, &it.Qty, &it.PriceCents); err != nil {
			rows.Close()
			return fmt.Errorf("read order lines: %w", err)
		}
		at[id].Items = append(at[id].Items, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read order lines: %w", err)
	}
	if !steps {
		return nil
	}
	rows, err = q.Query(ctx, `SELECT order_id, name, status, at, detail FROM order_steps
		WHERE order_id = ANY($1) ORDER BY order_id, at, id`, ids)
	if err != nil {
		return fmt.Errorf("read order steps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var st Step
		if err := rows.Scan(&id, &st.Name, &st.Status, &st.At, &st.Detail); err != nil {
			return fmt.Errorf("read order steps: %w", err)
		}
		at[id].Steps = append(at[id].Steps, st)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read order steps: %w", err)
	}
	return nil
}

// Finish moves a pending order to confirmed or cancelled. It reports false when the
// order was no longer pending: the guard in the WHERE clause makes a redelivered or
// late event a no-op, so the final transition (and its event) happens once.
func (s *Store) Finish(ctx context.Context, id, status, reason string) (bool, error) {
	tag, err := pg.Q(ctx, s.pool).Exec(ctx, `UPDATE orders SET status = $2, cancel_reason = $3, updated_at = clock_timestamp()
		WHERE order_id = $1 AND status = 'pending'`, id, status, reason)
	if err != nil {
		return false, fmt.Errorf("finish order: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// SagaRow is one row of sagas.
type SagaRow struct {
	OrderID  string
	Saga     saga.Saga
	Attempts int
	Deadline *time.Time
}

// InsertSaga creates an orchestrated order's saga row; the first step's deadline is
// timeout from now. Queued until commit (pg.Later), with the order's other rows.
func (s *Store) InsertSaga(ctx context.Context, orderID string, sg saga.Saga, timeout time.Duration) error {
	if err := pg.Later(ctx, s.pool, `INSERT INTO sagas (order_id, state, reason, awaiting, deadline)
		VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5))`,
		orderID, string(sg.State), sg.Reason, awaiting(sg), timeout.Seconds()); err != nil {
		return fmt.Errorf("insert saga: %w", err)
	}
	return nil
}

// LockSaga reads an order's saga row and locks it until the transaction ends: replies of
// one saga are applied one at a time, even across orders instances.
func (s *Store) LockSaga(ctx context.Context, orderID string) (SagaRow, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT order_id, state, reason, awaiting, attempts, deadline
		FROM sagas WHERE order_id = $1 FOR UPDATE`, orderID)
	if err != nil {
		return SagaRow{}, fmt.Errorf("lock saga: %w", err)
	}
	list, err := collectSagas(rows)
	if err != nil {
		return SagaRow{}, fmt.Errorf("lock saga: %w", err)
	}
	if len(list) == 0 {
		return SagaRow{}, errNotFound
	}
	return list[0], nil
}

// DueSagas claims up to limit live sagas whose deadline has passed, oldest first.
// SKIP LOCKED: a saga whose reply is being handled right now (or that another instance's
// scanner holds) is left alone; if its step is still overdue afterwards, the next tick
// takes it.
func (s *Store) DueSagas(ctx context.Context, limit int) ([]SagaRow, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT order_id, state, reason, awaiting, attempts, deadline
		FROM sagas WHERE deadline < clock_timestamp() AND state NOT IN ('confirmed', 'cancelled')
		ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
	if err != nil {
		return nil, fmt.Errorf("claim due sagas: %w", err)
	}
	list, err := collectSagas(rows)
	if err != nil {
		return nil, fmt.Errorf("claim due sagas: %w", err)
	}
	return list, nil
}

func collectSagas(rows pgx.Rows) ([]SagaRow, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SagaRow, error) {
		var row SagaRow
		var state string
		err := r.Scan(&row.OrderID, &state, &row.Saga.Reason, &row.Saga.Awaiting, &row.Attempts, &row.Deadline)
		row.Saga.State = saga.State(state)
		if len(row.Saga.Awaiting) == 0 {
			row.Saga.Awaiting = nil
		}
		return row, err
	})
}

// UpdateSaga stores a saga's new state. A live state gets a fresh deadline, timeout from
// now; a final one none. Queued until commit (pg.Later): the row is locked (LockSaga,
// DueSagas) and nothing reads it again in the same transaction.
func (s *Store) UpdateSaga(ctx context.Context, orderID string, sg saga.Saga, attempts int, timeout time.Duration) error {
	if err := pg.Later(ctx, s.pool, `UPDATE sagas SET state = $2, reason = $3, awaiting = $4, attempts = $5,
		deadline = CASE WHEN $6 THEN NULL ELSE clock_timestamp() + make_interval(secs => $7) END,
		updated_at = clock_timestamp() WHERE order_id = $1`,
		orderID, string(sg.State), sg.Reason, awaiting(sg), attempts, sg.State.Final(), timeout.Seconds()); err != nil {
		return fmt.Errorf("update saga: %w", err)
	}
	return nil
}

func awaiting(sg saga.Saga) []string {
	if sg.Awaiting == nil {
		return []string{}
	}
	return sg.Awaiting
}

// MarkOverdue records a "saga/overdue" step, once, for up to limit choreography orders
// still pending after deadline, and returns their ids. Nothing else changes: the order
// stays pending and finishes normally if its saga's messages arrive after all.
func (s *Store) MarkOverdue(ctx context.Context, deadline time.Duration, detail string, limit int) ([]string, error) {
	// The saga/overdue step is appended to each order's event stream too, like every step.
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `WITH st AS (INSERT INTO order_steps (order_id, name, status, detail)
		SELECT o.order_id, 'saga', 'overdue', $2 FROM orders o
		WHERE o.status = 'pending' AND o.saga_mode = 'choreography'
		  AND o.created_at < clock_timestamp() - make_interval(secs => $1)
		  AND NOT EXISTS (SELECT 1 FROM order_steps s WHERE s.order_id = o.order_id AND s.name = 'saga' AND s.status = 'overdue')
		ORDER BY o.created_at LIMIT $3
		RETURNING order_id, at)
		INSERT INTO order_events (order_id, version, type, data, occurred_at)
		SELECT st.order_id, (SELECT coalesce(max(version), 0) + 1 FROM order_events e WHERE e.order_id = st.order_id),
			'saga.overdue', jsonb_build_object('name', 'saga', 'status', 'overdue', 'detail', $2::text), st.at FROM st
		RETURNING order_id`, deadline.Seconds(), detail, limit)
	if err != nil {
		return nil, fmt.Errorf("mark overdue orders: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("mark overdue orders: %w", err)
	}
	return ids, nil
}

// Overdue counts choreography orders pending for longer than deadline.
func (s *Store) Overdue(ctx context.Context, deadline time.Duration) (int, error) {
	var n int
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT count(*) FROM orders WHERE status = 'pending'
		AND saga_mode = 'choreography' AND created_at < clock_timestamp() - make_interval(secs => $1)`,
		deadline.Seconds()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count overdue orders: %w", err)
	}
	return n, nil
}
