package main

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/shop"
)

// Service holds payments' rules.
type Service struct {
	app   *app.App
	store *Store
}

// Decline reasons (payment.declined). The saga's cancel reason is always
// payment_declined; these say why, for the ledger and the dashboard. The issuer's two
// (card declined, invalid card) are shop's rule, shared with the monolith.
const (
	reasonCardDeclined = shop.ReasonCardDeclined
	reasonInvalidCard  = shop.ReasonInvalidCard
	// reasonAlreadyCompensated: a refund (or its 0-cent tombstone) is already on the
	// ledger. The orchestrator gave up on this order before the authorize command arrived;
	// authorizing now would hold money for an order that is already cancelled.
	reasonAlreadyCompensated = "already_compensated"
)

// cardDecision is the simulated issuer (shop.CardDecision: 4000 0000 0000 0002 is
// declined, any other Luhn-valid 13–19 digit number authorizes). It lives in
// services/shop because the monolith must decline exactly the same cards.
func cardDecision(card string) (last4, reason string) { return shop.CardDecision(card) }

// authorize decides a payment for a checkout and emits payment.authorized (carrying the
// checkout forward for inventory) or payment.declined, in the caller's transaction.
//
// Every call that authorizes appends an 'authorize' row: there is deliberately no check
// for an earlier authorization of the same order. Redeliveries are the inbox's job; with
// the inbox switched off a duplicate authorizes twice, which is what the lab shows.
func (s *Service) authorize(ctx context.Context, causation string, o contracts.OrderPlacedData) error {
	if o.TotalCents < 0 {
		return fmt.Errorf("%w: %s: negative totalCents", contracts.ErrMalformed, o.OrderID)
	}
	ledger, err := s.store.LockLedger(ctx, o.OrderID)
	if err != nil {
		return err
	}
	last4, reason := cardDecision(o.Card)
	if summarize(o.OrderID, ledger).Refunds > 0 {
		reason = reasonAlreadyCompensated
	}
	log := s.app.Log.With("order_id", o.OrderID, "card_last4", last4, "amount_cents", o.TotalCents)
	if reason != "" {
		if err := s.store.Append(ctx, Entry{OrderID: o.OrderID, Kind: kindDecline, AmountCents: o.TotalCents, Reason: reason}); err != nil {
			return err
		}
		log.InfoContext(ctx, "payment declined", "reason", reason)
		observability.StepFailed(ctx, "authorize payment", reason)
		return s.emit(ctx, contracts.PaymentDeclined, o.OrderID, causation,
			contracts.PaymentDeclinedData{Saga: o.Saga, Reason: reason})
	}
	id := uuid.NewString()
	if err := s.store.Append(ctx, Entry{OrderID: o.OrderID, PaymentID: id, Kind: kindAuthorize, AmountCents: o.TotalCents}); err != nil {
		return err
	}
	log.InfoContext(ctx, "payment authorized", "payment_id", id)
	return s.emit(ctx, contracts.PaymentAuthorized, o.OrderID, causation,
		contracts.PaymentAuthorizedData{Checkout: o.Checkout, PaymentID: id, AmountCents: o.TotalCents})
}

// refund gives back what is still held for an order (authorized − refunded, never
// negative) and emits payment.refunded with that amount. A second refund finds nothing
// outstanding and refunds 0: money never leaves twice, with or without the inbox.
//
// A refund with no authorization before it records a 0-cent 'refund' row, the
// tombstone that makes a late authorize decline (see reasonAlreadyCompensated), and
// still emits payment.refunded so the saga can finish.
func (s *Service) refund(ctx context.Context, causation string, saga contracts.Saga, reason string) (err error) {
	// A compensation: its own span, so the waterfall says what the saga undid and why.
	ctx, span := s.app.Tel.Step(ctx, "compensate: refund payment", attribute.String("saga.compensation.reason", reason))
	defer func() { observability.Fail(span, err); span.End() }()
	ledger, err := s.store.LockLedger(ctx, saga.OrderID)
	if err != nil {
		return err
	}
	sum := summarize(saga.OrderID, ledger)
	amount := max(sum.AuthorizedCents-sum.RefundedCents, 0)
	paymentID := lastAuthorization(ledger).PaymentID
	if err := s.store.Append(ctx, Entry{OrderID: saga.OrderID, PaymentID: paymentID, Kind: kindRefund, AmountCents: amount, Reason: reason}); err != nil {
		return err
	}
	if sum.Authorizations == 0 {
		s.app.Log.InfoContext(ctx, "refund before any authorization: tombstone recorded, a late authorize will be declined",
			"order_id", saga.OrderID, "reason", reason)
	} else {
		s.app.Log.InfoContext(ctx, "payment refunded", "order_id", saga.OrderID, "payment_id", paymentID,
			"amount_cents", amount, "reason", reason)
	}
	return s.emit(ctx, contracts.PaymentRefunded, saga.OrderID, causation,
		contracts.PaymentRefundedData{Saga: saga, PaymentID: paymentID, AmountCents: amount, Reason: reason})
}

// capture takes the money of a confirmed order: one 'capture' row for the amount of the
// order's authorization. Only an authorized, unrefunded order can be captured. Like
// authorize it has no duplicate check of its own (the inbox guards it). Nothing is
// emitted: the saga is over, no one waits for a capture.
func (s *Service) capture(ctx context.Context, orderID string) error {
	ledger, err := s.store.LockLedger(ctx, orderID)
	if err != nil {
		return err
	}
	sum := summarize(orderID, ledger)
	switch {
	case sum.Authorizations == 0:
		s.app.Log.WarnContext(ctx, "order confirmed without an authorization: nothing to capture", "order_id", orderID)
		return nil
	case sum.Refunds > 0:
		s.app.Log.WarnContext(ctx, "order confirmed after a refund: not capturing", "order_id", orderID)
		return nil
	}
	auth := lastAuthorization(ledger)
	if err := s.store.Append(ctx, Entry{OrderID: orderID, PaymentID: auth.PaymentID, Kind: kindCapture, AmountCents: auth.AmountCents}); err != nil {
		return err
	}
	s.app.Log.InfoContext(ctx, "payment captured", "order_id", orderID, "payment_id", auth.PaymentID, "amount_cents", auth.AmountCents)
	return nil
}

// emit records an outgoing event in the handler's transaction (outbox). The correlation
// id of everything in a checkout is the order id.
func (s *Service) emit(ctx context.Context, typ, orderID, causation string, data any) error {
	env, err := contracts.NewEnvelope(typ, "payments", orderID, causation, data)
	if err != nil {
		return err
	}
	return s.app.Emit(ctx, env)
}
