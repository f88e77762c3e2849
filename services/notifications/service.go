package main

import (
	"context"
	"time"

	"github.com/google/uuid"

	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/pg"
)

// Service holds notifications' rules.
type Service struct {
	app   *app.App
	store *Store
}

// Notification kinds.
const (
	kindOrderConfirmed = "order_confirmed"
	kindOrderCancelled = "order_cancelled"
	kindWelcome        = "welcome"
)

// channelEmail is the only channel the lab simulates.
const channelEmail = "email"

// send records a notification, "sends" it and emits notification.sent, in the caller's
// transaction: if the transaction rolls back, the record and the event vanish together
// and the broker's redelivery sends it again.
//
// Nothing here stops the same order being mailed twice: redeliveries are the inbox's
// job, and with the inbox off a duplicate order.confirmed visibly mails twice.
func (s *Service) send(ctx context.Context, causation, correlation string, n Notification) error {
	n.ID, n.Channel, n.At = uuid.NewString(), channelEmail, time.Now().UTC()
	if err := s.store.Insert(ctx, n); err != nil {
		return err
	}
	return s.deliver(ctx, causation, correlation, n)
}

// notifySync is POST /notify (notifications.mode=sync): the confirmation of an order,
// sent while orders waits, before it commits the confirmation. Idempotent on the order
// id: orders retries until it gets an answer, and a repeat sends nothing more. The
// order.confirmed that follows finds the notification sent and mails nothing.
func (s *Service) notifySync(ctx context.Context, data contracts.OrderConfirmedData) (sent bool, err error) {
	n := Notification{ID: uuid.NewString(), UserID: data.UserID, OrderID: &data.OrderID, Kind: kindOrderConfirmed,
		Channel: channelEmail, At: time.Now().UTC()}
	err = pg.InTx(ctx, s.app.DB, func(ctx context.Context) error {
		if sent, err = s.store.InsertSync(ctx, n); err != nil || !sent {
			return err
		}
		return s.deliver(ctx, "", data.OrderID, n)
	})
	return sent, err
}

// deliver "sends" a recorded notification and emits notification.sent.
func (s *Service) deliver(ctx context.Context, causation, correlation string, n Notification) error {
	// Simulated delivery. Ids only: the address and the name are personal data and stay
	// out of the logs.
	orderID := ""
	if n.OrderID != nil {
		orderID = *n.OrderID
	}
	s.app.Log.InfoContext(ctx, "email sent (simulated)", "notification_id", n.ID, "user_id", n.UserID,
		"order_id", orderID, "kind", n.Kind)
	env, err := contracts.NewEnvelope(contracts.NotificationSent, "notifications", correlation, causation,
		contracts.NotificationSentData{NotificationID: n.ID, UserID: n.UserID, OrderID: orderID, Kind: n.Kind, Channel: n.Channel})
	if err != nil {
		return err
	}
	return s.app.Emit(ctx, env)
}
