package main

import (
	"context"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// queue: payments listens to the choreography's cues (order.placed to authorize;
// stock.rejected and shipment.failed to refund), to the orchestrator's commands, and to
// order.confirmed (capture, in both modes). One durable queue; the saga mode travels in
// every message, so each handler knows whether the message is its cue.
var queue = bus.Queue{
	Service: "payments",
	Events: []string{contracts.OrderPlaced, contracts.StockRejected, contracts.ShipmentFailed,
		contracts.OrderConfirmed},
	Commands: []string{contracts.CmdPaymentsAuthorize, contracts.CmdPaymentsRefund},
}

func (s *Service) routes() bus.Routes {
	return bus.Routes{
		contracts.OrderPlaced:          bus.Typed(s.onOrderPlaced),
		contracts.CmdPaymentsAuthorize: bus.Typed(s.onAuthorize),
		contracts.StockRejected:        bus.Typed(s.onStockRejected),
		contracts.ShipmentFailed:       bus.Typed(s.onShipmentFailed),
		contracts.CmdPaymentsRefund:    bus.Typed(s.onRefund),
		contracts.OrderConfirmed:       bus.Typed(s.onOrderConfirmed),
	}
}

// onOrderPlaced: in choreography a placed order is payments' cue to authorize. In
// orchestration the orchestrator sends payments.authorize instead; acting on the event
// too would authorize twice.
func (s *Service) onOrderPlaced(ctx context.Context, env contracts.Envelope, data contracts.OrderPlacedData) error {
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.authorize(ctx, env.EventID, data)
}

func (s *Service) onAuthorize(ctx context.Context, env contracts.Envelope, data contracts.PaymentsAuthorizeData) error {
	return s.authorize(ctx, env.EventID, data)
}

// onStockRejected: in choreography nobody else will give the customer's money back when
// inventory cannot fill the order, so payments compensates on its own.
func (s *Service) onStockRejected(ctx context.Context, env contracts.Envelope, data contracts.StockRejectedData) error {
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.refund(ctx, env.EventID, data.Saga, contracts.ReasonOutOfStock)
}

// onShipmentFailed: the deepest compensation of the choreography; inventory releases
// the stock on the same event, in parallel.
func (s *Service) onShipmentFailed(ctx context.Context, env contracts.Envelope, data contracts.ShipmentFailedData) error {
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.refund(ctx, env.EventID, data.Saga, contracts.ReasonShippingFailed)
}

func (s *Service) onRefund(ctx context.Context, env contracts.Envelope, data contracts.PaymentRefundData) error {
	return s.refund(ctx, env.EventID, data.Saga, data.Reason)
}

// onOrderConfirmed captures in both modes: a confirmed order is the end of the saga
// whoever coordinated it.
func (s *Service) onOrderConfirmed(ctx context.Context, env contracts.Envelope, data contracts.OrderConfirmedData) error {
	return s.capture(ctx, data.OrderID)
}
