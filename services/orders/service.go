package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"microlab/services/contracts"
	"microlab/services/orders/saga"
	"microlab/services/platform/app"
	"microlab/services/platform/pg"
	"microlab/services/shop"
)

// Service holds orders' rules.
type Service struct {
	app      *app.App
	store    *Store
	catalog  *Catalog
	notifier *Notifier // notifications.mode=sync; nil: never called (tests without one)
	history  *History  // the CQRS read model (history.go): GET /orders?view=history
	// rebuilder rebuilds the read model from the event store (rebuild.go).
	rebuilder *Rebuilder
}

// currency: the shop sells in euros only (the catalog's prices are EUR).
const currency = "EUR"

// PlaceRequest is the body of POST /orders, shared with the monolith (services/shop):
// one validation and one Idempotency-Key hash for both sides of the strangler fig.
type PlaceRequest = shop.OrderRequest

// Line is one requested order line.
type Line = shop.Line

// UnknownSKUError names a SKU the catalog does not know.
type UnknownSKUError struct{ SKU string }

func (e *UnknownSKUError) Error() string { return "unknown sku " + e.SKU }

// errKeyReused: the Idempotency-Key was used before for a different request.
var errKeyReused = errors.New("idempotency key reused with a different request")

// Place creates an order (or, for a repeated Idempotency-Key with the same request,
// returns the order the first request created) and starts its saga.
func (s *Service) Place(ctx context.Context, userID, key string, req PlaceRequest) (string, error) {
	hash := req.Hash()
	if key != "" {
		id, err := s.replay(ctx, userID, key, hash)
		if !errors.Is(err, errNotFound) {
			return id, err
		}
	}
	items, total, err := s.price(ctx, req.Items)
	if err != nil {
		return "", err
	}
	// One snapshot of the lab settings for the whole placement: the mode chosen here is
	// the mode this order's saga runs in to the end, whatever the lab switches to later.
	settings := s.app.Settings.Current()
	mode := settings.SagaMode()
	o := Order{ID: uuid.NewString(), UserID: userID, Status: statusPending, SagaMode: mode,
		TotalCents: total, Currency: currency, Address: req.ShippingAddress, CardLast4: last4(req.Card), Items: items,
		// One clock reading for the row's created_at and order.placed's occurredAt, at
		// PostgreSQL's precision: the read model (history.go) lists and pages the order at
		// exactly the position the write side does.
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	// The order remembers the trace it was placed in, so GET /orders/{id} links to the
	// whole checkout in Jaeger long after the request.
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		o.TraceID = sc.TraceID().String()
	}
	err = pg.InTx(ctx, s.app.DB, func(ctx context.Context) error {
		if key != "" {
			// Claimed first: a concurrent request with the same key waits here until this
			// transaction ends, then finds the key taken and answers with this order.
			if err := s.store.ClaimKey(ctx, userID, key, hash, o.ID); err != nil {
				return err
			}
		}
		if err := s.store.Insert(ctx, o); err != nil {
			return err
		}
		if err := s.store.AddPlaced(ctx, o,
			fmt.Sprintf("%d line(s), %d cents, saga mode %s", len(items), total, mode)); err != nil {
			return err
		}
		placed, err := contracts.NewEnvelope(contracts.OrderPlaced, "orders", o.ID, "", contracts.OrderPlacedData{Checkout: o.Checkout(), Card: req.Card})
		if err != nil {
			return err
		}
		placed.OccurredAt = o.CreatedAt
		if err := s.app.Emit(ctx, placed); err != nil {
			return err
		}
		if mode != contracts.ModeOrchestration {
			return nil // choreography: payments reacts to order.placed on its own
		}
		start := saga.Start()
		if err := s.store.InsertSaga(ctx, o.ID, start.Saga, settings.StepTimeout()); err != nil {
			return err
		}
		for _, c := range start.Commands {
			if err := s.send(ctx, o, req.Card, c, placed.EventID, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errKeyTaken) {
		// Lost the race for the key: the winner committed; answer as a retry would.
		id, err := s.replay(ctx, userID, key, hash)
		if errors.Is(err, errNotFound) {
			return "", fmt.Errorf("idempotency key %q taken but not readable", key)
		}
		return id, err
	}
	if err != nil {
		return "", fmt.Errorf("place order: %w", err)
	}
	s.app.Tel.Metrics.SagaStarted.WithLabelValues(mode).Inc()
	s.app.Log.InfoContext(ctx, "order placed", "order_id", o.ID, "user_id", userID, "total_cents", total,
		"saga_mode", mode, "card_last4", o.CardLast4)
	return o.ID, nil
}

// replay answers a request whose Idempotency-Key was seen before: the same order for the
// same request, errKeyReused for a different one, errNotFound for a new key.
func (s *Service) replay(ctx context.Context, userID, key, hash string) (string, error) {
	h, id, err := s.store.Key(ctx, userID, key)
	switch {
	case err != nil:
		return "", err
	case h != hash:
		return "", errKeyReused
	}
	s.app.Log.InfoContext(ctx, "repeated request answered with the order it created", "order_id", id, "user_id", userID)
	return id, nil
}

// price asks catalog for the price of each distinct SKU and returns the priced lines and
// the total. The client never sets a price.
func (s *Service) price(ctx context.Context, lines []Line) ([]contracts.Item, int64, error) {
	if s.app.Settings.Current().SharedDB() { // the shared database's shortcut (shared.go)
		if items, total, err := s.priceShared(ctx, lines); !errors.Is(err, errNotSharedYet) {
			return items, total, err
		}
	}
	prices := map[string]int64{}
	for _, l := range lines {
		if _, ok := prices[l.SKU]; ok {
			continue
		}
		p, err := s.catalog.Product(ctx, l.SKU)
		if errors.Is(err, errUnknownSKU) {
			return nil, 0, &UnknownSKUError{SKU: l.SKU}
		}
		if err != nil {
			return nil, 0, err
		}
		if p.Currency != currency {
			return nil, 0, fmt.Errorf("%w: %s is priced in %q, orders sells in %s", errCatalogUnavailable, l.SKU, p.Currency, currency)
		}
		prices[l.SKU] = p.PriceCents
	}
	items := make([]contracts.Item, len(lines))
	var total int64
	for i, l := range lines {
		items[i] = contracts.Item{SKU: l.SKU, Qty: l.Qty, PriceCents: prices[l.SKU]}
		total += prices[l.SKU] * int64(l.Qty)
	}
	return items, total, nil
}

// last4 keeps the last four digits of a card number: all orders ever stores of it.
func last4(card string) string {
	var digits []byte
	for i := len(card) - 1; i >= 0 && len(digits) < 4; i-- {
		if c := card[i]; c >= '0' && c <= '9' {
			digits = append([]byte{c}, digits...)
		}
	}
	return string(digits)
}

// emit records an outgoing event or command in the caller's transaction (outbox). The
// correlation id of everything in a checkout is the order id; causation is the id of the
// message that caused this one ("" when an API call or the clock did).
func (s *Service) emit(ctx context.Context, typ, orderID, causation string, data any) (contracts.Envelope, error) {
	env, err := contracts.NewEnvelope(typ, "orders", orderID, causation, data)
	if err != nil {
		return contracts.Envelope{}, err
	}
	return env, s.app.Emit(ctx, env)
}

// commandStep names the step each orchestrator command is logged as.
func commandStep(cmd string) (name, status string) {
	switch cmd {
	case contracts.CmdPaymentsAuthorize:
		return "payment", "requested"
	case contracts.CmdInventoryReserve:
		return "stock", "requested"
	case contracts.CmdShippingSchedule:
		return "shipment", "requested"
	case contracts.CmdPaymentsRefund:
		return "payment", "refund_requested"
	case contracts.CmdInventoryRelease:
		return "stock", "release_requested"
	}
	return cmd, "sent"
}

// send emits one orchestrator command for order o and logs it as a step. card is needed
// only for payments.authorize, which is sent once, at placement, while the full number
// is still in hand (orders never stores it).
func (s *Service) send(ctx context.Context, o Order, card string, c saga.Command, causation, note string) error {
	var data any
	switch c.Type {
	case contracts.CmdPaymentsAuthorize:
		if card == "" {
			return fmt.Errorf("order %s: payments.authorize without a card", o.ID)
		}
		data = contracts.PaymentsAuthorizeData{Checkout: o.Checkout(), Card: card}
	case contracts.CmdInventoryReserve:
		data = contracts.InventoryReserveData{Checkout: o.Checkout()}
	case contracts.CmdShippingSchedule:
		data = contracts.ShippingScheduleData{Checkout: o.Checkout()}
	case contracts.CmdPaymentsRefund:
		data = contracts.PaymentRefundData{Saga: o.Checkout().Saga, Reason: c.Reason}
	case contracts.CmdInventoryRelease:
		data = contracts.InventoryReleaseData{Saga: o.Checkout().Saga, Reason: c.Reason}
	default:
		return fmt.Errorf("order %s: unknown command %q", o.ID, c.Type)
	}
	if _, err := s.emit(ctx, c.Type, o.ID, causation, data); err != nil {
		return err
	}
	name, status := commandStep(c.Type)
	return s.store.AddStep(ctx, o.ID, name, status, joinDetail(c.Reason, note))
}

// finish confirms or cancels a pending order and announces it (order.confirmed /
// order.cancelled: notifications tell the customer, payments captures). An order that is
// already final is left alone and nothing is emitted, so the end happens once.
func (s *Service) finish(ctx context.Context, o Order, status, reason, causation string) error {
	done, err := s.store.Finish(ctx, o.ID, status, reason)
	if err != nil {
		return err
	}
	if !done {
		s.app.Log.InfoContext(ctx, "order already final; not finishing it again", "order_id", o.ID, "wanted", status)
		return nil
	}
	if err := s.store.AddStep(ctx, o.ID, "order", status, reason); err != nil {
		return err
	}
	pg.AfterCommit(ctx, func(context.Context) { s.sagaEnded(o, status, reason) })
	sg := o.Checkout().Saga
	if status == statusConfirmed {
		data := contracts.OrderConfirmedData{Saga: sg, UserID: o.UserID, TotalCents: o.TotalCents}
		// notifications.mode=sync: the customer is told before the confirmation is
		// committed. If notifications fails, so does this transaction (nothing recorded,
		// nothing emitted) and the message that brought the outcome is retried: the order
		// confirms once notifications answers. The call holds this transaction open for
		// as long as it takes, bounded by http.timeout (per attempt) — part of the price.
		if s.notifier != nil && s.app.Settings.Current().NotifySync() {
			if err := s.notifier.Confirmed(ctx, data); err != nil {
				s.app.Log.WarnContext(ctx, "order not confirmed yet: notifications did not take the confirmation (notifications.mode=sync)",
					"order_id", o.ID, "err", err)
				return fmt.Errorf("confirm order %s: %w", o.ID, err)
			}
		}
		s.app.Log.InfoContext(ctx, "order confirmed", "order_id", o.ID, "saga_mode", o.SagaMode)
		_, err = s.emit(ctx, contracts.OrderConfirmed, o.ID, causation, data)
		return err
	}
	s.app.Log.InfoContext(ctx, "order cancelled", "order_id", o.ID, "reason", reason, "saga_mode", o.SagaMode)
	_, err = s.emit(ctx, contracts.OrderCancelled, o.ID, causation,
		contracts.OrderCancelledData{Saga: sg, UserID: o.UserID, Reason: reason})
	return err
}

// sagaEnded counts a saga that ended (committed): outcome, duration, and whether it had
// to compensate. A declined payment cancels without undoing anything; every other
// cancellation (out of stock, shipping failed, timeout) refunded or released something.
func (s *Service) sagaEnded(o Order, status, reason string) {
	m := s.app.Tel.Metrics
	m.SagaCompleted.WithLabelValues(o.SagaMode, status).Inc()
	m.SagaDuration.WithLabelValues(o.SagaMode, status).Observe(time.Since(o.CreatedAt).Seconds())
	if status == statusCancelled && reason != contracts.ReasonPaymentDeclined {
		if !slices.Contains(compensationReasons, reason) {
			reason = "other"
		}
		m.SagaCompensated.WithLabelValues(o.SagaMode, reason).Inc()
	}
}

// compensationReasons are the reasons a saga compensates for (metric label values).
var compensationReasons = []string{contracts.ReasonOutOfStock, contracts.ReasonShippingFailed, contracts.ReasonTimeout}

// joinDetail joins the non-empty parts of a step's detail.
func joinDetail(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}
