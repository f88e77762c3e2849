// Package saga is the checkout saga's orchestrator as a pure state machine (DESIGN §5,
// orchestration mode). Given where a saga stands and what just happened — a reply from a
// participant, or the step's deadline passing — it answers where the saga goes next and
// which commands to send. It does no I/O and keeps nothing in memory: orders persists
// the Saga value in its database, sends the commands through its outbox in the same
// transaction, and locks the saga row while it applies one step. That split is why an
// orders instance can be killed at any moment, or run as N copies, and every saga still
// finishes: the whole truth is the row.
//
// The happy path, one participant at a time:
//
//	authorizing --payment.authorized--> reserving --stock.reserved--> scheduling --shipment.scheduled--> confirmed
//
// Compensations undo what already happened, in the opposite direction:
//
//	authorizing  --payment.declined-->  cancelled(payment_declined)     nothing to undo
//	reserving    --stock.rejected-->    refunding(out_of_stock)         payments.refund
//	scheduling   --shipment.failed-->   compensating(shipping_failed)   inventory.release + payments.refund, in parallel
//	refunding    --payment.refunded-->  cancelled(reason)
//	compensating --both replies-->      cancelled(reason)
//
// Timeouts (a step without a reply within saga.step_timeout) compensate as if the step
// had failed; the participant may still act late, which is why payments and inventory
// keep tombstones that turn a late authorize or reserve into a decline or rejection.
// A compensation that is not answered in time is sent again: refunds and releases are
// safe to repeat. Replies that do not fit the current state (late or duplicated) change
// nothing.
package saga

import (
	"slices"

	"microlab/services/contracts"
)

// State is where a saga stands. The value is what the sagas table stores.
type State string

// The states. Each non-final state waits for particular replies.
const (
	// Authorizing: payments.authorize sent; waiting for payment.authorized or .declined.
	Authorizing State = "authorizing"
	// Reserving: inventory.reserve sent; waiting for stock.reserved or .rejected.
	Reserving State = "reserving"
	// Scheduling: shipping.schedule sent; waiting for shipment.scheduled or .failed.
	Scheduling State = "scheduling"
	// Refunding: compensating with payments.refund only; waiting for payment.refunded.
	Refunding State = "refunding"
	// Compensating: inventory.release and payments.refund sent in parallel; waiting for
	// stock.released AND payment.refunded (Awaiting says which are still missing).
	Compensating State = "compensating"
	// Confirmed and Cancelled are final: nothing moves a saga out of them.
	Confirmed State = "confirmed"
	Cancelled State = "cancelled"
)

// States lists every state.
func States() []State {
	return []State{Authorizing, Reserving, Scheduling, Refunding, Compensating, Confirmed, Cancelled}
}

// Final reports whether s ends the saga.
func (s State) Final() bool { return s == Confirmed || s == Cancelled }

// Saga is the persisted state of one checkout's saga.
type Saga struct {
	State State
	// Reason is why the saga is being compensated or was cancelled
	// (contracts.Reason*); "" on the happy path.
	Reason string
	// Awaiting lists the replies a compensation still waits for (payment.refunded,
	// stock.released). Empty outside Refunding and Compensating.
	Awaiting []string
}

// Command is a command the orchestrator must send. The caller fills in the payload
// (the checkout, the order id) from its own records.
type Command struct {
	Type   string // contracts.Cmd*
	Reason string // for payments.refund and inventory.release: why
}

// Result is the outcome of one transition.
type Result struct {
	Saga     Saga      // the state to persist
	Commands []Command // to send, in the same transaction as the state change
	// Ignored: the reply does not fit the state (a late or duplicated reply). Saga is
	// the unchanged input and there are no commands; the caller only records it.
	Ignored bool
	// Ended: this transition moved the saga into a final state; the caller confirms or
	// cancels the order (order.confirmed / order.cancelled).
	Ended bool
}

// commandFor is the command that asks for a reply a compensation waits for.
func commandFor(reply string) string {
	if reply == contracts.StockReleased {
		return contracts.CmdInventoryRelease
	}
	return contracts.CmdPaymentsRefund
}

// Start is the first step of every orchestrated checkout: ask payments to authorize.
func Start() Result {
	return Result{
		Saga:     Saga{State: Authorizing},
		Commands: []Command{{Type: contracts.CmdPaymentsAuthorize}},
	}
}

// Transition applies a reply (an event type) to s.
func Transition(s Saga, event string) Result {
	switch {
	case s.State == Authorizing && event == contracts.PaymentAuthorized:
		return next(Reserving, Command{Type: contracts.CmdInventoryReserve})
	case s.State == Authorizing && event == contracts.PaymentDeclined:
		// Nothing happened that needs undoing: the card was never charged.
		return end(Cancelled, contracts.ReasonPaymentDeclined)
	case s.State == Reserving && event == contracts.StockReserved:
		return next(Scheduling, Command{Type: contracts.CmdShippingSchedule})
	case s.State == Reserving && event == contracts.StockRejected:
		// The money was authorized: give it back before the order can be cancelled.
		return compensate(Refunding, contracts.ReasonOutOfStock, contracts.PaymentRefunded)
	case s.State == Scheduling && event == contracts.ShipmentScheduled:
		return end(Confirmed, "")
	case s.State == Scheduling && event == contracts.ShipmentFailed:
		// Both earlier steps succeeded: undo both, in parallel (they do not depend on
		// each other), and wait for both answers.
		return compensate(Compensating, contracts.ReasonShippingFailed, contracts.StockReleased, contracts.PaymentRefunded)
	case (s.State == Refunding || s.State == Compensating) && slices.Contains(s.Awaiting, event):
		left := slices.DeleteFunc(slices.Clone(s.Awaiting), func(e string) bool { return e == event })
		if len(left) == 0 {
			return end(Cancelled, s.Reason)
		}
		return Result{Saga: Saga{State: s.State, Reason: s.Reason, Awaiting: left}}
	}
	return Result{Saga: s, Ignored: true}
}

// Timeout applies "the current step got no reply before its deadline" to s.
//
// A forward step that times out is compensated: whatever may have happened (or may
// still happen late) is undone. A compensation that times out is sent again, for the
// replies still missing; the saga stays where it is.
func Timeout(s Saga) Result {
	switch s.State {
	case Authorizing:
		// The authorization may have happened (and its reply been lost or be slow):
		// refund. If it has not happened yet, the refund leaves a tombstone in payments
		// and the late authorize is declined.
		return compensate(Refunding, contracts.ReasonTimeout, contracts.PaymentRefunded)
	case Reserving, Scheduling:
		// Stock may be reserved (or be reserved late, then rejected by inventory's
		// tombstone), and the payment was authorized: undo both.
		return compensate(Compensating, contracts.ReasonTimeout, contracts.StockReleased, contracts.PaymentRefunded)
	case Refunding, Compensating:
		if len(s.Awaiting) == 0 { // cannot happen: a compensation with nothing left has ended
			return end(Cancelled, s.Reason)
		}
		r := Result{Saga: Saga{State: s.State, Reason: s.Reason, Awaiting: slices.Clone(s.Awaiting)}}
		for _, e := range s.Awaiting {
			r.Commands = append(r.Commands, Command{Type: commandFor(e), Reason: s.Reason})
		}
		return r
	}
	return Result{Saga: s, Ignored: true} // final: nothing is waiting
}

func next(st State, c Command) Result {
	return Result{Saga: Saga{State: st}, Commands: []Command{c}}
}

func end(st State, reason string) Result {
	return Result{Saga: Saga{State: st, Reason: reason}, Ended: true}
}

func compensate(st State, reason string, awaiting ...string) Result {
	r := Result{Saga: Saga{State: st, Reason: reason, Awaiting: awaiting}}
	for _, e := range awaiting {
		r.Commands = append(r.Commands, Command{Type: commandFor(e), Reason: reason})
	}
	return r
}
