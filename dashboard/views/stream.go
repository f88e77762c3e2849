package views

import (
	"fmt"
	"strings"
	"time"
)

// EventStreamModel is the "Event stream" section of one order's saga page: the order's
// stream as orders' event store holds it (GET /orders/{id}/events), and the order as
// the stream says it was at one version. The saga timeline above it is what the
// wiretap saw go by; this is what orders wrote down, one event per change, and the
// state at version N is the fold of events 1..N (services/orders/events.go: Replay).
type EventStreamModel struct {
	OrderID string
	Events  []StreamEvent
	// Selected is the version whose state is shown (the latest unless one was picked).
	Selected int
	State    OrderState // at Selected
	// Error: orders did not answer (or answered nonsense); the section says so.
	Error string
	// NoStream: orders knows no stream for this id: an order placed before the event
	// store existed and not backfilled, or an id orders never saw.
	NoStream bool
}

// StreamEvent is one row of the stream.
type StreamEvent struct {
	Version int
	Type    string
	At      time.Time
	Key     string // the event's data in a few words
}

// OrderState is the order after one version: what the fold has built so far.
type OrderState struct {
	Version      int
	Status       string
	CancelReason string
	SagaMode     string
	TotalCents   int64
	Currency     string
	Items        []StateItem
	Steps        []StateStep
}

// StateItem is one order line.
type StateItem struct {
	SKU        string
	Qty        int
	PriceCents int64
}

// StateStep is one step of the order's log, as far as the version has it.
type StateStep struct {
	Name, Status, Detail string
	At                   time.Time
}

// Money is cents as "12.00 EUR".
func Money(cents int64, currency string) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return strings.TrimSpace(fmt.Sprintf("%s%d.%02d %s", sign, cents/100, cents%100, currency))
}

// streamHref is a version's link: the saga page showing that version's state. The
// page's JS swaps in the section alone (GET /sagas/{id}/events?version=N) instead of
// loading the page again; without JS the link works as it is.
func streamHref(order string, version int) string {
	return fmt.Sprintf("/sagas?order=%s&version=%d#event-stream", order, version)
}

// RebuildModel is the rebuild button's initial state; sagas.js takes over from there
// (POST to start, then polling the job until it has ended).
type RebuildModel struct {
	Projection string // order-history
}
