package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Store is payments' SQL. Calls join the transaction in ctx (pg.InTx).
type Store struct {
	pool *pgxpool.Pool
}

// Ledger entry kinds.
const (
	kindAuthorize = "authorize"
	kindDecline   = "decline"
	kindCapture   = "capture"
	kindRefund    = "refund"
)

// Entry is one row of payment_ledger.
type Entry struct {
	OrderID     string    `json:"-"`
	PaymentID   string    `json:"-"`
	Kind        string    `json:"kind"`
	AmountCents int64     `json:"amountCents"`
	Reason      string    `json:"reason"`
	At          time.Time `json:"at"`
}

// Summary is what the ledger says about one order (GET /payments/{orderId}). The counts
// are ledger rows of each kind: two authorizations for one order is the visible trace of
// a duplicate that got past a switched-off inbox.
type Summary struct {
	OrderID         string  `json:"orderId"`
	AuthorizedCents int64   `json:"authorizedCents"`
	CapturedCents   int64   `json:"capturedCents"`
	RefundedCents   int64   `json:"refundedCents"`
	Authorizations  int     `json:"authorizations"`
	Captures        int     `json:"captures"`
	Refunds         int     `json:"refunds"`
	Declines        int     `json:"declines"`
	Entries         []Entry `json:"entries"`
}

// summarize adds up an order's ledger (entries in ledger order).
func summarize(orderID string, ledger []Entry) Summary {
	s := Summary{OrderID: orderID, Entries: ledger}
	if s.Entries == nil {
		s.Entries = []Entry{} // [] on the wire, never null
	}
	for _, e := range ledger {
		switch e.Kind {
		case kindAuthorize:
			s.Authorizations++
			s.AuthorizedCents += e.AmountCents
		case kindCapture:
			s.Captures++
			s.CapturedCents += e.AmountCents
		case kindRefund:
			s.Refunds++
			s.RefundedCents += e.AmountCents
		case kindDecline:
			s.Declines++
		}
	}
	return s
}

// lastAuthorization returns the latest 'authorize' entry (zero Entry if none).
func lastAuthorization(ledger []Entry) Entry {
	for i := len(ledger) - 1; i >= 0; i-- {
		if ledger[i].Kind == kindAuthorize {
			return ledger[i]
		}
	}
	return Entry{}
}

const ledgerQuery = `SELECT order_id, payment_id, kind, amount_cents, reason, created_at
	FROM payment_ledger WHERE order_id = $1 ORDER BY id`

// LockLedger locks every payment decision about one order until the transaction ends,
// then returns the order's ledger, oldest first. Without the lock, a refund and a late
// authorize for the same order, handled at the same moment by two workers (or two
// instances), would each read a ledger without the other's row: the refund would see
// nothing to refund, the authorize no tombstone, and the customer's money would stay
// held for a cancelled order. A transaction-scoped advisory lock on a hash of the order
// id needs no extra table; a hash collision only makes two unrelated orders wait for
// each other, it never mixes them up.
//
// The lock and the read go in one round trip (a batch): PostgreSQL runs them in order,
// and the read, a statement of its own, sees every decision committed before the lock
// was granted.
func (s *Store) LockLedger(ctx context.Context, orderID string) (entries []Entry, err error) {
	if !pg.InTxNow(ctx) {
		return nil, fmt.Errorf("lock order %s: not in a transaction", orderID)
	}
	b := &pgx.Batch{}
	b.Queue(pg.LockKeySQL, "order:"+orderID)
	b.Queue(ledgerQuery, orderID)
	br := pg.Q(ctx, s.pool).SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			entries, err = nil, fmt.Errorf("read ledger: %w", cerr)
		}
	}()
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("lock order %s: %w", orderID, err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	return collectLedger(rows)
}

// Ledger returns an order's entries, oldest first.
func (s *Store) Ledger(ctx context.Context, orderID string) ([]Entry, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, ledgerQuery, orderID)
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	return collectLedger(rows)
}

func collectLedger(rows pgx.Rows) ([]Entry, error) {
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		err := r.Scan(&e.OrderID, &e.PaymentID, &e.Kind, &e.AmountCents, &e.Reason, &e.At)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	return out, nil
}

// Append adds one entry to the ledger. Queued until commit (pg.Later), with the
// handler's event: every decision reads the ledger before it appends, never after.
func (s *Store) Append(ctx context.Context, e Entry) error {
	if err := pg.Later(ctx, s.pool, `INSERT INTO payment_ledger (order_id, payment_id, kind, amount_cents, reason)
		VALUES ($1, $2, $3, $4, $5)`, e.OrderID, e.PaymentID, e.Kind, e.AmountCents, e.Reason); err != nil {
		return fmt.Errorf("append %s to ledger: %w", e.Kind, err)
	}
	return nil
}
