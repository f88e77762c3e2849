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

// Insert records a notification.
func (s *Store) Insert(ctx context.Context, n Notification) error {
	if _, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO notifications (id, user_id, order_id, kind, channel, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, n.ID, n.UserID, n.OrderID, n.Kind, n.Channel, n.At); err != nil {
		return fmt.Errorf("insert notification: %w", err)
	}
	return nil
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
