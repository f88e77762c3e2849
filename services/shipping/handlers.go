package main

import (
	"context"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// queue: shipping reacts to stock.reserved in choreography and to shipping.schedule in
// orchestration. Both arrive on one durable queue; the mode travels with the message.
var queue = bus.Queue{
	Service:  "shipping",
	Events:   []string{contracts.StockReserved, contracts.OrderCancelled},
	Commands: []string{contracts.CmdShippingSchedule},
}

func (s *Service) routes() bus.Routes {
	return bus.Routes{
		contracts.StockReserved:       bus.Typed(s.onStockReserved),
		contracts.CmdShippingSchedule: bus.Typed(s.onSchedule),
		contracts.OrderCancelled:      bus.Typed(s.onOrderCancelled),
	}
}

// onStockReserved: in choreography, reserved stock is shipping's cue. In orchestration
// the orchestrator decides, so the event is not ours to act on.
func (s *Service) onStockReserved(ctx context.Context, env contracts.Envelope, data contracts.StockReservedData) error {
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.schedule(ctx, env.EventID, data.Checkout)
}

func (s *Service) onSchedule(ctx context.Context, env contracts.Envelope, data contracts.ShippingScheduleData) error {
	return s.schedule(ctx, env.EventID, data.Checkout)
}

// onOrderCancelled: in both modes, a cancelled order must not ship (see cancel).
func (s *Service) onOrderCancelled(ctx context.Context, env contracts.Envelope, data contracts.OrderCancelledData) error {
	return s.cancel(ctx, data.OrderID)
}
