package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// sagaEvents are the participants' results: orders logs every one of them as a step of
// its order, and acts on them in the order's saga mode.
var sagaEvents = []string{
	contracts.PaymentAuthorized, contracts.PaymentDeclined, contracts.PaymentRefunded,
	contracts.StockReserved, contracts.StockRejected, contracts.StockReleased,
	contracts.ShipmentScheduled, contracts.ShipmentFailed,
}

// queue: orders consumes events only. Commands are what the orchestrator sends; the
// replies to them are ordinary events, the same ones the choreography runs on.
var queue = bus.Queue{Service: "orders", Events: sagaEvents}

func (s *Service) routes() bus.Routes {
	r := bus.Routes{}
	for _, e := range sagaEvents {
		r[e] = s.onSagaEvent
	}
	return r
}

// reply is what orders reads of any saga event: every payload starts with the saga
// (order id and mode); the other fields exist on some events and make the step's detail.
type reply struct {
	contracts.Saga
	Reason      string `json:"reason"`
	SKU         string `json:"sku"`
	AmountCents int64  `json:"amountCents"`
	PaymentID   string `json:"paymentId"`
	ShipmentID  string `json:"shipmentId"`
}

// step names the step an event is logged as: payment.authorized → payment/authorized.
func step(eventType string) (name, status string) {
	name, status, _ = strings.Cut(eventType, ".")
	return name, status
}

// detail says, for a learner reading the order's timeline, what the event carried.
func (r reply) detail(eventType string) string {
	switch eventType {
	case contracts.PaymentAuthorized:
		return fmt.Sprintf("payment %s, %d cents", r.PaymentID, r.AmountCents)
	case contracts.PaymentRefunded:
		return joinDetail(fmt.Sprintf("%d cents", r.AmountCents), r.Reason)
	case contracts.StockRejected:
		if r.SKU != "" {
			return r.SKU + ": " + r.Reason
		}
	case contracts.ShipmentScheduled:
		return "shipment " + r.ShipmentID
	}
	return r.Reason
}

// onSagaEvent handles every saga event, in the transaction the inbox middleware opened.
// The order's own record says which mode its saga runs in (fixed at placement).
func (s *Service) onSagaEvent(ctx context.Context, d bus.Delivery) (err error) {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var r reply
	if err := env.DecodeData(&r); err != nil {
		return err
	}
	o, err := s.store.Get(ctx, r.OrderID)
	if errors.Is(err, errNotFound) {
		// Orders commits an order before anything about it can be published, so this is
		// a message about an order that never existed here: retrying will not help.
		s.app.Log.WarnContext(ctx, "saga event for an unknown order; ignored", "order_id", r.OrderID, "type", env.EventType)
		return nil
	}
	if err != nil {
		return err
	}
	// A span per saga step in orders, named for what happened to the order, so the
	// waterfall reads as the saga's story between the message hops.
	ctx, span := s.app.Tel.Step(ctx, "saga "+o.SagaMode+": "+env.EventType,
		attribute.String("saga.mode", o.SagaMode), attribute.String("order.id", o.ID))
	defer func() { observability.Fail(span, err); span.End() }()
	if o.SagaMode == contracts.ModeOrchestration {
		return s.orchestrate(ctx, env, o, r)
	}
	return s.choreograph(ctx, env, o, r)
}

// choreograph is orders' part of the choreography: log the event, and end the order
// when the outcome is known. The guard in Store.Finish (only a pending order moves)
// makes a redelivered or late event harmless.
//
//	payment.declined   → cancelled (payment_declined): nothing to undo
//	shipment.scheduled → confirmed: every step succeeded
//	payment.refunded   → cancelled with the refund's reason: payments refunds on
//	                     stock.rejected (out_of_stock) and shipment.failed
//	                     (shipping_failed); the money coming back is the last word
//
// The other events (authorized, reserved, rejected, released, failed) are steps of the
// timeline that other services act on.
func (s *Service) choreograph(ctx context.Context, env contracts.Envelope, o Order, r reply) error {
	name, status := step(env.EventType)
	if err := s.store.AddStepAt(ctx, o.ID, name, status, r.detail(env.EventType), env.OccurredAt); err != nil {
		return err
	}
	switch env.EventType {
	case contracts.PaymentDeclined:
		return s.finish(ctx, o, statusCancelled, contracts.ReasonPaymentDeclined, env.EventID)
	case contracts.ShipmentScheduled:
		return s.finish(ctx, o, statusConfirmed, "", env.EventID)
	case contracts.PaymentRefunded:
		return s.finish(ctx, o, statusCancelled, r.Reason, env.EventID)
	}
	return nil
}
