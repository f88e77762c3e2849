package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Store is notifications' SQL. Calls join the transaction in ctx (pg.InTx).
type Store struct {
	pool *pgxpool.Pool
}

// Notification is one row of notifications. OrderID is nil for notifications about no
// order (welcome).
type Notification struct {
	ID      string    `json:"id"`
	UserID  string    `json:"userId"`
	OrderID *string   `json:"orderId"`
	Kind    string    `json:"kind"`
	Channel string    `json:"channel"`
	At      time.Time `json:"at"`
}

// listLimit bounds one answer (a load test can mail one user a lot).
const listLimit = 100

// Insert records a notification sent because of an event. Queued until commit
// (pg.Later), with its notification.sent: nothing reads it back in the transaction.
func (s *Store) Insert(ctx context.Context, n Notification) error {
	if err := pg.Later(ctx, s.pool, `INSERT INTO notifications (id, user_id, order_id, kind, channel, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, n.ID, n.UserID, n.OrderID, n.Kind, n.Channel, n.At); err != nil {
		return fmt.Errorf("insert notification: %w", err)
	}
	return nil
}

// InsertSync records a notification sent because orders called (POST /notify), once per
// order and kind: inserted is false, and nothing changes, when one was recorded before.
func (s *Store) InsertSync(ctx context.Context, n Notification) (inserted bool, err error) {
	tag, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO notifications (id, user_id, order_id, kind, channel, created_at, via)
		VALUES ($1, $2, $3, $4, $5, $6, 'http') ON CONFLICT (order_id, kind) WHERE via = 'http' DO NOTHING`,
		n.ID, n.UserID, n.OrderID, n.Kind, n.Channel, n.At)
	if err != nil {
		return false, fmt.Errorf("insert notification: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// SentSync reports whether orders' call already sent the notification of kind for
// orderID.
func (s *Store) SentSync(ctx context.Context, orderID, kind string) (bool, error) {
	var yes bool
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM notifications
		WHERE order_id = $1 AND kind = $2 AND via = 'http')`, orderID, kind).Scan(&yes)
	if err != nil {
		return false, fmt.Errorf("find notification: %w", err)
	}
	return yes, nil
}

// List returns notifications of an order and/or a user ("" = any), oldest first, at
// most listLimit of the newest.
func (s *Store) List(ctx context.Context, orderID, userID string) ([]Notification, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT id::text, user_id, order_id, kind, channel, created_at FROM (
			SELECT * FROM notifications
			WHERE ($1 = '' OR order_id = $1) AND ($2 = '' OR user_id = $2)
			ORDER BY created_at DESC, id DESC LIMIT $3
		) newest ORDER BY created_at, id`, orderID, userID, listLimit)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Notification])
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	return out, nil
}
