package main

import (
	"context"

	"github.com/google/uuid"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/shop"
)

// Service holds shipping's rules.
type Service struct {
	app   *app.App
	store *Store
}

// reasonOrderCancelled: a schedule request that arrived after the order was cancelled.
const reasonOrderCancelled = "order_cancelled"

// cancel makes sure a cancelled order never ships, whichever arrives first: the
// cancellation or a late schedule request (orchestration timeouts make both orders
// possible).
func (s *Service) cancel(ctx context.Context, orderID string) error {
	return s.store.Cancel(ctx, orderID, uuid.NewString())
}

// schedule decides a shipment for a checkout and emits shipment.scheduled or
// shipment.failed, in the caller's transaction. Deciding twice for one order returns
// the first decision: the carrier is not booked twice.
func (s *Service) schedule(ctx context.Context, causation string, c contracts.Checkout) error {
	// shop.ShippingDecision is the rule (country XX is served by no carrier, the
	// saga's deterministic failure, DESIGN §5), shared with the monolith.
	country, failure := shop.ShippingDecision(c.ShippingAddress.Country)
	sh := Shipment{OrderID: c.OrderID, ShipmentID: uuid.NewString(), Status: "scheduled", Country: country}
	if failure != "" {
		sh.Status, sh.Reason = "failed", failure
	}
	fresh, err := s.store.Insert(ctx, sh)
	if err != nil {
		return err
	}
	if !fresh {
		if sh, err = s.store.Get(ctx, c.OrderID); err != nil {
			return err
		}
	}
	var env contracts.Envelope
	if sh.Status != "scheduled" {
		observability.StepFailed(ctx, "schedule shipment", sh.Status+": "+sh.Reason)
	}
	switch sh.Status {
	case "failed":
		env, err = contracts.NewEnvelope(contracts.ShipmentFailed, "shipping", c.OrderID, causation,
			contracts.ShipmentFailedData{Saga: c.Saga, Reason: contracts.ReasonShippingFailed})
	case "cancelled":
		// The order was cancelled before this (late) request: never ship it.
		env, err = contracts.NewEnvelope(contracts.ShipmentFailed, "shipping", c.OrderID, causation,
			contracts.ShipmentFailedData{Saga: c.Saga, Reason: reasonOrderCancelled})
	default:
		env, err = contracts.NewEnvelope(contracts.ShipmentScheduled, "shipping", c.OrderID, causation,
			contracts.ShipmentScheduledData{Checkout: c, ShipmentID: sh.ShipmentID})
	}
	if err != nil {
		return err
	}
	return s.app.Emit(ctx, env)
}
