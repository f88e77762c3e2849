package main

import (
	"context"
	"errors"
	"fmt"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// queue: notifications only listens; it takes no part in the saga's decisions, so it
// handles the same events in both modes and receives no commands.
var queue = bus.Queue{
	Service: "notifications",
	Events:  []string{contracts.OrderConfirmed, contracts.OrderCancelled, contracts.UserRegistered},
}

func (s *Service) routes() bus.Routes {
	return bus.Routes{
		contracts.OrderConfirmed: bus.Typed(s.onOrderConfirmed),
		contracts.OrderCancelled: bus.Typed(s.onOrderCancelled),
		contracts.UserRegistered: bus.Typed(s.onUserRegistered),
	}
}

// errNoUser: an order event without the customer's id cannot be sent to anyone.
var errNoUser = errors.New("missing userId")

func (s *Service) onOrderConfirmed(ctx context.Context, env contracts.Envelope, data contracts.OrderConfirmedData) error {
	if data.UserID == "" {
		return fmt.Errorf("%w: %s data: %w", contracts.ErrMalformed, env.EventType, errNoUser)
	}
	// With notifications.mode=sync orders called POST /notify before confirming: the
	// customer has their email already.
	if done, err := s.store.SentSync(ctx, data.OrderID, kindOrderConfirmed); err != nil || done {
		if done {
			s.app.Log.InfoContext(ctx, "confirmation already sent synchronously; not sending it again", "order_id", data.OrderID)
		}
		return err
	}
	return s.send(ctx, env.EventID, data.OrderID, Notification{UserID: data.UserID, OrderID: &data.OrderID, Kind: kindOrderConfirmed})
}

func (s *Service) onOrderCancelled(ctx context.Context, env contracts.Envelope, data contracts.OrderCancelledData) error {
	if data.UserID == "" {
		return fmt.Errorf("%w: %s data: %w", contracts.ErrMalformed, env.EventType, errNoUser)
	}
	return s.send(ctx, env.EventID, data.OrderID, Notification{UserID: data.UserID, OrderID: &data.OrderID, Kind: kindOrderCancelled})
}

func (s *Service) onUserRegistered(ctx context.Context, env contracts.Envelope, data contracts.UserRegisteredData) error {
	corr := env.CorrelationID
	if corr == "" {
		corr = data.UserID
	}
	return s.send(ctx, env.EventID, corr, Notification{UserID: data.UserID, Kind: kindWelcome})
}
