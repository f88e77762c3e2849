// Package reconcile holds a lab's ledgers up to its orders: it reads the orders,
// payments and inventory databases directly (not through the services, which may be
// the thing that is broken) and RabbitMQ's dead-letter queues, and reports what a
// checkout saga must never leave behind — an order the gateway accepted that never
// reached a final state, money taken twice (or kept for a cancelled order), stock
// reserved twice (or held for a cancelled order), a message parked in a DLQ.
//
// `lab chaos` prints the report after its faults; the end-to-end tests hold every
// order's ledgers to the same rules (Check), so they are written once.
package reconcile

import (
	"fmt"
	"slices"
	"strings"
)

// Order statuses and the cancel reason of a declined card, as the orders service
// stores them.
const (
	StatusPending   = "pending"
	StatusConfirmed = "confirmed"
	StatusCancelled = "cancelled"
	ReasonDeclined  = "payment_declined"
)

// Order is what the services recorded about one order, put side by side.
type Order struct {
	ID       string
	Accepted bool // the gateway accepted it (202), as the load generator saw
	InOrders bool // the orders database has it
	Status   string
	Reason   string // cancel_reason
	Total    int64  // total_cents
	// Lines counts the order's lines per SKU (order_items).
	Lines   map[string]int
	Payment Payment
	// Stock is the order's reservation rows per SKU (inventory's reservations).
	Stock map[string]Reservation
}

// Payment adds up an order's rows in payments' append-only ledger, as GET
// /payments/{orderId} does.
type Payment struct {
	Authorizations, Captures, Refunds, Declines   int
	AuthorizedCents, CapturedCents, RefundedCents int64
}

// Reservation counts an order's reservation rows of one SKU in each status.
type Reservation struct{ Reserved, Released int }

func (o Order) touched() bool {
	p := o.Payment
	return p.Authorizations+p.Captures+p.Refunds+p.Declines > 0 || len(o.Stock) > 0
}

// Kind is a class of anomaly.
type Kind string

// The anomalies, in the order the report lists them.
const (
	Lost              Kind = "lost"                   // accepted, and not final (or not there at all)
	DoubleCharge      Kind = "double charge"          // authorized or captured twice, captured though cancelled, or not the total
	DoubleReservation Kind = "double reservation"     // more reservations held than lines of the SKU
	Unreleased        Kind = "unreleased reservation" // stock still held for a cancelled order
	MissingRefund     Kind = "missing refund"         // a cancelled order's authorization not (fully) refunded
	Mismatch          Kind = "ledger mismatch"        // any other disagreement: a confirmed order never captured, …
)

// Kinds lists every kind of anomaly, in report order.
var Kinds = []Kind{Lost, DoubleCharge, DoubleReservation, Unreleased, MissingRefund, Mismatch}

// Finding is one anomaly of one order.
type Finding struct {
	Kind    Kind   `json:"kind"`
	OrderID string `json:"orderId"`
	What    string `json:"what"`
}

func (f Finding) String() string { return fmt.Sprintf("%s: order %s: %s", f.Kind, f.OrderID, f.What) }

// Check holds one order's ledgers to the saga's rules (DESIGN §5) and returns what
// breaks them; nothing for an order that is in order:
//
//   - confirmed: authorized once, captured once for exactly the total, nothing refunded;
//     every line's SKU reserved once and not released.
//   - cancelled because the card was declined: neither money nor stock touched.
//   - cancelled otherwise: at most one authorization, refunded in full, nothing captured,
//     no reservation still held.
//   - pending (after recovery), or accepted and absent: lost.
func Check(o Order) []Finding {
	var out []Finding
	add := func(k Kind, format string, args ...any) {
		out = append(out, Finding{Kind: k, OrderID: o.ID, What: fmt.Sprintf(format, args...)})
	}
	p := o.Payment
	switch {
	case !o.InOrders && o.Accepted:
		add(Lost, "accepted by the gateway, not in the orders database")
	case !o.InOrders:
		add(Mismatch, "payments or inventory hold rows for it, the orders database does not know it")
	case o.Status == StatusPending:
		add(Lost, "no final state (still pending)")
	}

	// Money.
	if p.Authorizations > 1 {
		add(DoubleCharge, "authorized %d times", p.Authorizations)
	}
	if p.Captures > 1 {
		add(DoubleCharge, "captured %d times", p.Captures)
	}
	if p.Captures > 0 && o.Status == StatusCancelled {
		add(DoubleCharge, "captured %d cents though cancelled (%s)", p.CapturedCents, o.Reason)
	}
	if p.Captures > 0 && o.InOrders && p.CapturedCents != o.Total {
		add(DoubleCharge, "captured %d cents of a %d cents total", p.CapturedCents, o.Total)
	}
	switch {
	case o.Status == StatusConfirmed:
		if p.Authorizations == 0 {
			add(Mismatch, "confirmed without an authorization")
		}
		if p.Captures == 0 {
			add(Mismatch, "confirmed, never captured")
		}
		if p.RefundedCents > 0 {
			add(Mismatch, "confirmed, yet %d cents refunded", p.RefundedCents)
		}
	case o.Status == StatusCancelled && o.Reason == ReasonDeclined:
		if p.Authorizations > 0 {
			add(Mismatch, "the card was declined, yet authorized %d cents", p.AuthorizedCents)
		}
	case o.Status == StatusCancelled:
		if p.AuthorizedCents > p.RefundedCents {
			add(MissingRefund, "authorized %d cents, refunded %d", p.AuthorizedCents, p.RefundedCents)
		}
		if p.RefundedCents > p.AuthorizedCents {
			add(Mismatch, "refunded %d cents of %d authorized", p.RefundedCents, p.AuthorizedCents)
		}
	}

	// Stock.
	for _, sku := range skus(o) {
		r, lines := o.Stock[sku], o.Lines[sku]
		if r.Reserved > max(lines, 1) {
			add(DoubleReservation, "%s reserved %d times for %d line(s)", sku, r.Reserved, lines)
		}
		switch {
		case o.Status == StatusCancelled && o.Reason == ReasonDeclined:
			if r.Reserved+r.Released > 0 {
				add(Mismatch, "the card was declined, yet %s was reserved", sku)
			}
		case o.Status == StatusCancelled:
			if r.Reserved > 0 {
				add(Unreleased, "%d reservation(s) of %s still held", r.Reserved, sku)
			}
		case o.Status == StatusConfirmed:
			if r.Reserved < lines {
				add(Mismatch, "confirmed, %s reserved for %d of %d line(s)", sku, r.Reserved, lines)
			}
			if r.Released > 0 {
				add(Mismatch, "confirmed, yet %d reservation(s) of %s released", r.Released, sku)
			}
		}
	}
	return out
}

// skus lists the SKUs an order has lines or reservations of, sorted.
func skus(o Order) []string {
	var out []string
	for s := range o.Lines {
		out = append(out, s)
	}
	for s := range o.Stock {
		if _, ok := o.Lines[s]; !ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Error is Check's findings as one error, nil when there are none.
func Error(fs []Finding) error {
	if len(fs) == 0 {
		return nil
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return fmt.Errorf("%s", strings.Join(parts, "; "))
}
