package main

import (
	"context"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// queue: inventory reacts to payment.authorized (reserve) and shipment.failed (release)
// in choreography, and to the orchestrator's inventory.reserve and inventory.release
// commands. One durable queue; the saga mode travels in every message.
var queue = bus.Queue{
	Service:  "inventory",
	Events:   []string{contracts.PaymentAuthorized, contracts.ShipmentFailed},
	Commands: []string{contracts.CmdInventoryReserve, contracts.CmdInventoryRelease},
}

func (s *Service) routes() bus.Routes {
	return bus.Routes{
		contracts.PaymentAuthorized:   bus.Typed(s.onPaymentAuthorized),
		contracts.CmdInventoryReserve: bus.Typed(s.onReserve),
		contracts.ShipmentFailed:      bus.Typed(s.onShipmentFailed),
		contracts.CmdInventoryRelease: bus.Typed(s.onRelease),
	}
}

// onPaymentAuthorized: in choreography a paid order is inventory's cue. The event carries
// the whole checkout (event-carried state transfer), so inventory never asks orders what
// was bought. In orchestration the orchestrator sends inventory.reserve instead.
func (s *Service) onPaymentAuthorized(ctx context.Context, env contracts.Envelope, data contracts.PaymentAuthorizedData) error {
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.reserve(ctx, env.EventID, data.Checkout)
}

func (s *Service) onReserve(ctx context.Context, env contracts.Envelope, data contracts.InventoryReserveData) error {
	return s.reserve(ctx, env.EventID, data.Checkout)
}

// onShipmentFailed: in choreography, stock reserved for an order no carrier can ship must
// go back on the shelf; payments refunds on the same event, in parallel.
func (s *Service) onShipmentFailed(ctx context.Context, env contracts.Envelope, data contracts.ShipmentFailedData) error {
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.release(ctx, env.EventID, data.Saga, contracts.ReasonShippingFailed)
}

func (s *Service) onRelease(ctx context.Context, env contracts.Envelope, data contracts.InventoryReleaseData) error {
	return s.release(ctx, env.EventID, data.Saga, data.Reason)
}
