package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Store is inventory's SQL. Calls join the transaction in ctx (pg.InTx).
type Store struct {
	pool *pgxpool.Pool
	col  stockColumn // the name of stock's quantity column (schema.go)
}

// Line is one order line: asked for (Status ""), or a reservation row.
type Line struct {
	SKU    string `json:"sku"`
	Qty    int    `json:"qty"`
	Status string `json:"status,omitempty"`
}

// Reservation statuses.
const (
	statusReserved = "reserved"
	statusReleased = "released"
)

// Level is a product's stock level (GET /stock/{sku}).
type Level struct {
	SKU    string `json:"sku"`
	OnHand int    `json:"onHand"`
}

// Reservations is what inventory holds for one order (GET /reservations/{orderId}):
// Reserved and Released count lines in each status.
type Reservations struct {
	OrderID  string `json:"orderId"`
	Reserved int    `json:"reserved"`
	Released int    `json:"released"`
	Lines    []Line `json:"lines"`
}

var errNotFound = errors.New("not found")

// LockOrder serialises reserve and release of one order until the transaction ends.
// Without it a release and a late reserve of the same order, handled at the same moment,
// would each miss the other's row: the release would find nothing to return, the
// reserve no tombstone, and stock would stay taken for a cancelled order. A
// transaction-scoped advisory lock on a hash of the order id needs no extra table; a
// hash collision only makes two unrelated orders wait for each other.
func (s *Store) LockOrder(ctx context.Context, orderID string) error {
	return pg.LockKey(ctx, s.pool, "order:"+orderID)
}

// releasedQuery: whether the order has a release tombstone.
const releasedQuery = `SELECT EXISTS (SELECT 1 FROM releases WHERE order_id = $1)`

// LockReleased is LockOrder, then whether the order has a release tombstone, in one
// round trip (a batch: PostgreSQL runs them in order, so the read sees every release
// committed before the lock was granted).
func (s *Store) LockReleased(ctx context.Context, orderID string) (released bool, err error) {
	if !pg.InTxNow(ctx) {
		return false, fmt.Errorf("lock order %s: not in a transaction", orderID)
	}
	b := &pgx.Batch{}
	b.Queue(pg.LockKeySQL, "order:"+orderID)
	b.Queue(releasedQuery, orderID)
	br := pg.Q(ctx, s.pool).SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			released, err = false, fmt.Errorf("read releases: %w", cerr)
		}
	}()
	if _, err := br.Exec(); err != nil {
		return false, fmt.Errorf("lock order %s: %w", orderID, err)
	}
	if err := br.QueryRow().Scan(&released); err != nil {
		return false, fmt.Errorf("read releases: %w", err)
	}
	return released, nil
}

// LockStock locks the stock rows of skus until the transaction ends and returns their
// levels; an unknown SKU is simply absent from the map. Rows are locked in SKU order
// (ORDER BY sku) so that every transaction takes them in the same order: two checkouts
// of {mug, tee} and {tee, mug} would otherwise each hold one row and wait for the other
// (a deadlock, which PostgreSQL breaks by failing one of them).
func (s *Store) LockStock(ctx context.Context, skus []string) (map[string]int, error) {
	col, err := s.column(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock stock: %w", err)
	}
	rows, err := pg.Q(ctx, s.pool).Query(ctx, fmt.Sprintf(`SELECT sku, %s FROM stock
		WHERE sku = ANY($1) ORDER BY sku FOR UPDATE`, col), skus)
	if err != nil {
		return nil, fmt.Errorf("lock stock: %w", err)
	}
	out := map[string]int{}
	var lv Level
	if _, err := pgx.ForEachRow(rows, []any{&lv.SKU, &lv.OnHand}, func() error {
		out[lv.SKU] = lv.OnHand
		return nil
	}); err != nil {
		return nil, fmt.Errorf("lock stock: %w", err)
	}
	return out, nil
}

// Take decrements stock by one line and records it as reserved for the order. Both
// are queued until commit (pg.Later), with the handler's event: the stock rows are
// locked (LockStock) and already checked, and nothing reads them again in the
// transaction.
func (s *Store) Take(ctx context.Context, orderID string, l Line) error {
	col, err := s.column(ctx)
	if err != nil {
		return fmt.Errorf("take %s: %w", l.SKU, err)
	}
	if err := pg.Later(ctx, s.pool, fmt.Sprintf(`UPDATE stock SET %[1]s = %[1]s - $2 WHERE sku = $1`, col), l.SKU, l.Qty); err != nil {
		return fmt.Errorf("take %s: %w", l.SKU, err)
	}
	if err := pg.Later(ctx, s.pool, `INSERT INTO reservations (order_id, sku, qty, status) VALUES ($1, $2, $3, $4)`,
		orderID, l.SKU, l.Qty, statusReserved); err != nil {
		return fmt.Errorf("record reservation of %s: %w", l.SKU, err)
	}
	return nil
}

// MarkReleased flips every line still reserved for the order to released and returns
// those lines (the stock to give back). Lines released before are not returned again.
func (s *Store) MarkReleased(ctx context.Context, orderID string) ([]Line, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `UPDATE reservations SET status = $2, updated_at = now()
		WHERE order_id = $1 AND status = $3 RETURNING sku, qty`, orderID, statusReleased, statusReserved)
	if err != nil {
		return nil, fmt.Errorf("release reservations: %w", err)
	}
	lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Line, error) {
		var l Line
		err := r.Scan(&l.SKU, &l.Qty)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("release reservations: %w", err)
	}
	return lines, nil
}

// Return puts one line back in stock. Queued until commit (pg.Later), like Take.
func (s *Store) Return(ctx context.Context, l Line) error {
	col, err := s.column(ctx)
	if err != nil {
		return fmt.Errorf("return %s: %w", l.SKU, err)
	}
	if err := pg.Later(ctx, s.pool, fmt.Sprintf(`UPDATE stock SET %[1]s = %[1]s + $2 WHERE sku = $1`, col), l.SKU, l.Qty); err != nil {
		return fmt.Errorf("return %s: %w", l.SKU, err)
	}
	return nil
}

// Tombstone records that the order's stock was released (once; later releases keep
// the first reason). Queued until commit (pg.Later): the release reads it no more.
func (s *Store) Tombstone(ctx context.Context, orderID, reason string) error {
	if err := pg.Later(ctx, s.pool, `INSERT INTO releases (order_id, reason) VALUES ($1, $2)
		ON CONFLICT (order_id) DO NOTHING`, orderID, reason); err != nil {
		return fmt.Errorf("record release: %w", err)
	}
	return nil
}

// Level returns a product's stock, or errNotFound.
func (s *Store) Level(ctx context.Context, sku string) (Level, error) {
	lv := Level{SKU: sku}
	col, err := s.column(ctx)
	if err != nil {
		return Level{}, fmt.Errorf("read stock: %w", err)
	}
	err = pg.Q(ctx, s.pool).QueryRow(ctx, fmt.Sprintf(`SELECT %s FROM stock WHERE sku = $1`, col), sku).Scan(&lv.OnHand)
	if errors.Is(err, pgx.ErrNoRows) {
		return Level{}, errNotFound
	}
	if err != nil {
		return Level{}, fmt.Errorf("read stock: %w", err)
	}
	return lv, nil
}

// Reservations returns an order's reservation lines, oldest first.
func (s *Store) Reservations(ctx context.Context, orderID string) (Reservations, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT sku, qty, status FROM reservations
		WHERE order_id = $1 ORDER BY id`, orderID)
	if err != nil {
		return Reservations{}, fmt.Errorf("read reservations: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Line])
	if err != nil {
		return Reservations{}, fmt.Errorf("read reservations: %w", err)
	}
	out := Reservations{OrderID: orderID, Lines: lines}
	if out.Lines == nil {
		out.Lines = []Line{} // [] on the wire, never null
	}
	for _, l := range lines {
		switch l.Status {
		case statusReserved:
			out.Reserved++
		case statusReleased:
			out.Released++
		}
	}
	return out, nil
}
