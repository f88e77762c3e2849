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
		contracts.OrderPlaced:          s.onOrderPlaced,
		contracts.CmdPaymentsAuthorize: s.onAuthorize,
		contracts.StockRejected:        s.onStockRejected,
		contracts.ShipmentFailed:       s.onShipmentFailed,
		contracts.CmdPaymentsRefund:    s.onRefund,
		contracts.OrderConfirmed:       s.onOrderConfirmed,
	}
}

// onOrderPlaced: in choreography a placed order is payments' cue to authorize. In
// orchestration the orchestrator sends payments.authorize instead; acting on the event
// too would authorize twice.
func (s *Service) onOrderPlaced(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.OrderPlacedData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.authorize(ctx, env.EventID, data)
}

func (s *Service) onAuthorize(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.PaymentsAuthorizeData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	return s.authorize(ctx, env.EventID, data)
}

// onStockRejected: in choreography nobody else will give the customer's money back when
// inventory cannot fill the order, so payments compensates on its own.
func (s *Service) onStockRejected(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.StockRejectedData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.refund(ctx, env.EventID, data.Saga, contracts.ReasonOutOfStock)
}

// onShipmentFailed: the deepest compensation of the choreography; inventory releases
// the stock on the same event, in parallel.
func (s *Service) onShipmentFailed(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.ShipmentFailedData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.refund(ctx, env.EventID, data.Saga, contracts.ReasonShippingFailed)
}

func (s *Service) onRefund(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.PaymentRefundData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	return s.refund(ctx, env.EventID, data.Saga, data.Reason)
}

// onOrderConfirmed captures in both modes: a confirmed order is the end of the saga
// whoever coordinated it.
func (s *Service) onOrderConfirmed(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.OrderConfirmedData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	return s.capture(ctx, data.OrderID)
}
