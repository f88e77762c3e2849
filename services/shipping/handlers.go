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
		contracts.StockReserved:       s.onStockReserved,
		contracts.CmdShippingSchedule: s.onSchedule,
		contracts.OrderCancelled:      s.onOrderCancelled,
	}
}

// onStockReserved: in choreography, reserved stock is shipping's cue. In orchestration
// the orchestrator decides, so the event is not ours to act on.
func (s *Service) onStockReserved(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.StockReservedData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	if data.SagaMode != contracts.ModeChoreography {
		return nil
	}
	return s.schedule(ctx, env.EventID, data.Checkout)
}

func (s *Service) onSchedule(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.ShippingScheduleData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	return s.schedule(ctx, env.EventID, data.Checkout)
}

// onOrderCancelled: in both modes, a cancelled order must not ship (see cancel).
func (s *Service) onOrderCancelled(ctx context.Context, d bus.Delivery) error {
	env, err := d.Envelope()
	if err != nil {
		return err
	}
	var data contracts.OrderCancelledData
	if err := env.DecodeData(&data); err != nil {
		return err
	}
	return s.cancel(ctx, data.OrderID)
}
