package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/contracts"
	"microlab/services/platform/pg"
	"microlab/services/shop"
)

// Store is the monolith's SQL, over its one database. Calls join the transaction in ctx
// (pg.InTx): a checkout's every write, from the stock to the shipment, commits or rolls
// back together.
type Store struct {
	pool *pgxpool.Pool
}

var (
	errNotFound = errors.New("not found")
	errKeyTaken = errors.New("idempotency key taken")
)

// User is a user as the API shows it (users' shape).
type User struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

// Product is a product as the API shows it (catalog's shape: no stock).
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"priceCents"`
	Currency   string `json:"currency"`
}

// Order statuses (orders').
const (
	statusPending   = "pending"
	statusConfirmed = "confirmed"
	statusCancelled = "cancelled"
)

// Order is one order with its lines and steps.
type Order struct {
	ID           string
	UserID       string
	Status       string
	CancelReason string
	TotalCents   int64
	Currency     string
	Address      contracts.Address
	CardLast4    string
	TraceID      string
	CreatedAt    time.Time
	Items        []contracts.Item
	Steps        []Step
}

// Step is one entry of an order's step log (orders' shape).
type Step struct {
	Name   string    `json:"name"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail"`
}

// SeedProducts inserts the seed products with their stock (shop.SeedProducts) that are
// missing; existing rows, prices and stock included, are left as they are.
func (s *Store) SeedProducts(ctx context.Context) error {
	for _, p := range shop.SeedProducts {
		if _, err := s.pool.Exec(ctx, `INSERT INTO products (sku, name, price_cents, currency, on_hand)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sku) DO NOTHING`, p.SKU, p.Name, p.PriceCents, p.Currency, p.Stock); err != nil {
			return fmt.Errorf("seed product %s: %w", p.SKU, err)
		}
	}
	return nil
}

// InsertUser creates a user; false without an error when the email is taken.
func (s *Store) InsertUser(ctx context.Context, u User, hash []byte) (bool, error) {
	tag, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO users (id, email, name, password_hash)
		VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING`, u.ID, u.Email, u.Name, string(hash))
	if err != nil {
		return false, fmt.Errorf("insert user: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// UserByEmail returns a user and its password hash, or errNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, []byte, error) {
	var u User
	var hash string
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT id::text, email, name, password_hash FROM users WHERE email = $1`, email).
		Scan(&u.ID, &u.Email, &u.Name, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, nil, errNotFound
	}
	if err != nil {
		return User{}, nil, fmt.Errorf("user by email: %w", err)
	}
	return u, []byte(hash), nil
}

// User returns a user by id (a valid UUID), or errNotFound.
func (s *Store) User(ctx context.Context, id string) (User, error) {
	var u User
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT id::text, email, name FROM users WHERE id = $1`, id).Scan(&u.ID, &u.Email, &u.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, errNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// Products returns every product, sorted by SKU.
func (s *Store) Products(ctx context.Context) ([]Product, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT sku, name, price_cents, currency FROM products ORDER BY sku`)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Product, error) {
		var p Product
		return p, r.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency)
	})
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return out, nil
}

// Product returns one product, or errNotFound.
func (s *Store) Product(ctx context.Context, sku string) (Product, error) {
	var p Product
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT sku, name, price_cents, currency FROM products WHERE sku = $1`, sku).
		Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, errNotFound
	}
	if err != nil {
		return Product{}, fmt.Errorf("get product %s: %w", sku, err)
	}
	return p, nil
}

// Prices returns the price of each of skus that exists (one query: catalog's API is a
// function call away here, not an HTTP hop per SKU).
func (s *Store) Prices(ctx context.Context, skus []string) (map[string]Product, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT sku, name, price_cents, currency FROM products WHERE sku = ANY($1)`, skus)
	if err != nil {
		return nil, fmt.Errorf("prices: %w", err)
	}
	out := map[string]Product{}
	for rows.Next() {
		var p Product
		if err := rows.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency); err != nil {
			return nil, fmt.Errorf("prices: %w", err)
		}
		out[p.SKU] = p
	}
	return out, rows.Err()
}

// ClaimKey records an idempotency key for the order about to be inserted; errKeyTaken
// when another transaction has it (this one must then roll back).
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
	err = pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT request_hash, order_id::text FROM idempotency_keys
		WHERE user_id = $1 AND key = $2`, userID, key).Scan(&hash, &orderID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", errNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("read idempotency key: %w", err)
	}
	return hash, orderID, nil
}

// InsertOrder records a new (pending) order and its lines.
func (s *Store) InsertOrder(ctx context.Context, o Order) error {
	q := pg.Q(ctx, s.pool)
	if _, err := q.Exec(ctx, `INSERT INTO orders (order_id, user_id, status, total_cents, currency,
		shipping_address, card_last4, trace_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		o.ID, o.UserID, o.Status, o.TotalCents, o.Currency, o.Address, o.CardLast4, o.TraceID, o.CreatedAt); err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	for i, it := range o.Items {
		if _, err := q.Exec(ctx, `INSERT INTO order_items (order_id, line, sku, qty, price_cents) VALUES ($1, $2, $3, $4, $5)`,
			o.ID, i+1, it.SKU, it.Qty, it.PriceCents); err != nil {
			return fmt.Errorf("insert order line: %w", err)
		}
	}
	return nil
}

// AddSteps appends steps to an order's log, in the order given.
func (s *Store) AddSteps(ctx context.Context, orderID string, steps []Step) error {
	for _, st := range steps {
		if _, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO order_steps (order_id, name, status, detail, at) VALUES ($1, $2, $3, $4, $5)`,
			orderID, st.Name, st.Status, st.Detail, st.At); err != nil {
			return fmt.Errorf("add step: %w", err)
		}
	}
	return nil
}

// Finish sets the order's final status.
func (s *Store) Finish(ctx context.Context, orderID, status, reason string) error {
	if _, err := pg.Q(ctx, s.pool).Exec(ctx, `UPDATE orders SET status = $2, cancel_reason = $3 WHERE order_id = $1`,
		orderID, status, reason); err != nil {
		return fmt.Errorf("finish order: %w", err)
	}
	return nil
}

// LockStock locks the stock rows of skus (sorted: every checkout locks in the same
// order, so two never deadlock) and returns their levels; unknown SKUs are absent.
func (s *Store) LockStock(ctx context.Context, skus []string) (map[string]int, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT sku, on_hand FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE`, skus)
	if err != nil {
		return nil, fmt.Errorf("lock stock: %w", err)
	}
	out := map[string]int{}
	for rows.Next() {
		var sku string
		var n int
		if err := rows.Scan(&sku, &n); err != nil {
			return nil, fmt.Errorf("lock stock: %w", err)
		}
		out[sku] = n
	}
	return out, rows.Err()
}

// Take takes one line out of stock for an order.
func (s *Store) Take(ctx context.Context, orderID string, l shop.StockLine) error {
	q := pg.Q(ctx, s.pool)
	if _, err := q.Exec(ctx, `UPDATE products SET on_hand = on_hand - $2 WHERE sku = $1`, l.SKU, l.Qty); err != nil {
		return fmt.Errorf("take stock %s: %w", l.SKU, err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO reservations (order_id, sku, qty) VALUES ($1, $2, $3)`, orderID, l.SKU, l.Qty); err != nil {
		return fmt.Errorf("reserve %s: %w", l.SKU, err)
	}
	return nil
}

// AppendPayment appends a row to the payment ledger.
func (s *Store) AppendPayment(ctx context.Context, orderID, paymentID, kind string, cents int64, reason string) error {
	if _, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO payments (order_id, payment_id, kind, amount_cents, reason)
		VALUES ($1, $2, $3, $4, $5)`, orderID, paymentID, kind, cents, reason); err != nil {
		return fmt.Errorf("payment %s: %w", kind, err)
	}
	return nil
}

// InsertShipment records the shipment decision for an order.
func (s *Store) InsertShipment(ctx context.Context, orderID, shipmentID, status, country, reason string) error {
	if _, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO shipments (order_id, shipment_id, status, country, reason)
		VALUES ($1, $2, $3, $4, $5)`, orderID, shipmentID, status, country, reason); err != nil {
		return fmt.Errorf("shipment: %w", err)
	}
	return nil
}

const orderColumns = `order_id::text, user_id, status, cancel_reason, total_cents, currency, shipping_address,
	card_last4, trace_id, created_at`

func scanOrder(r pgx.Row) (Order, error) {
	var o Order
	err := r.Scan(&o.ID, &o.UserID, &o.Status, &o.CancelReason, &o.TotalCents, &o.Currency, &o.Address,
		&o.CardLast4, &o.TraceID, &o.CreatedAt)
	return o, err
}

// Order returns one order of userID with its lines and steps, or errNotFound (also for
// another user's order: whose it is is not revealed). id must be a valid UUID.
func (s *Store) Order(ctx context.Context, userID, id string) (Order, error) {
	q := pg.Q(ctx, s.pool)
	o, err := scanOrder(q.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE order_id = $1 AND user_id = $2`, id, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, errNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("get order: %w", err)
	}
	if err := s.items(ctx, []*Order{&o}); err != nil {
		return Order{}, err
	}
	rows, err := q.Query(ctx, `SELECT name, status, at, detail FROM order_steps WHERE order_id = $1 ORDER BY id`, id)
	if err != nil {
		return Order{}, fmt.Errorf("order steps: %w", err)
	}
	o.Steps, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Step, error) {
		var st Step
		return st, r.Scan(&st.Name, &st.Status, &st.At, &st.Detail)
	})
	if err != nil {
		return Order{}, fmt.Errorf("order steps: %w", err)
	}
	return o, nil
}

// Cursor is a position in a user's order list (newest first).
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Orders returns up to limit orders of userID, newest first, after the cursor if any.
func (s *Store) Orders(ctx context.Context, userID string, after *Cursor, limit int) ([]Order, error) {
	q := pg.Q(ctx, s.pool)
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = q.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE user_id = $1
			ORDER BY created_at DESC, order_id DESC LIMIT $2`, userID, limit)
	} else {
		rows, err = q.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE user_id = $1
			AND (created_at, order_id) < ($2, $3::uuid) ORDER BY created_at DESC, order_id DESC LIMIT $4`,
			userID, after.CreatedAt, after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	orders, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	ptrs := make([]*Order, len(orders))
	for i := range orders {
		ptrs[i] = &orders[i]
	}
	if err := s.items(ctx, ptrs); err != nil {
		return nil, err
	}
	return orders, nil
}

// items fills in the lines of orders, in one query.
func (s *Store) items(ctx context.Context, orders []*Order) error {
	if len(orders) == 0 {
		return nil
	}
	ids := make([]string, len(orders))
	byID := map[string]*Order{}
	for i, o := range orders {
		ids[i], byID[o.ID] = o.ID, o
	}
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT order_id::text, sku, qty, price_cents FROM order_items
		WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line`, ids)
	if err != nil {
		return fmt.Errorf("order lines: %w", err)
	}
	for rows.Next() {
		var id string
		var it contracts.Item
		if err := rows.Scan(&id, &it.SKU, &it.Qty, &it.PriceCents); err != nil {
			return fmt.Errorf("order lines: %w", err)
		}
		byID[id].Items = append(byID[id].Items, it)
	}
	return rows.Err()
}
