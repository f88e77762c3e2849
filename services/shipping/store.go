package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Store is shipping's SQL. Calls join the transaction in ctx (pg.InTx).
type Store struct {
	pool *pgxpool.Pool
}

// Shipment is one row of shipments.
type Shipment struct {
	OrderID    string `json:"orderId"`
	ShipmentID string `json:"shipmentId"`
	Status     string `json:"status"`
	Country    string `json:"country"`
	Reason     string `json:"reason,omitempty"`
}

var errNotFound = errors.New("not found")

// Get returns the shipment of an order, or errNotFound.
func (s *Store) Get(ctx context.Context, orderID string) (Shipment, error) {
	var sh Shipment
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT order_id, shipment_id, status, country, reason
		FROM shipments WHERE order_id = $1`, orderID).Scan(&sh.OrderID, &sh.ShipmentID, &sh.Status, &sh.Country, &sh.Reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return Shipment{}, errNotFound
	}
	if err != nil {
		return Shipment{}, fmt.Errorf("get shipment: %w", err)
	}
	return sh, nil
}

// Insert records a shipment decision. It reports false if the order already had one
// (a duplicate the inbox let through because it is switched off).
func (s *Store) Insert(ctx context.Context, sh Shipment) (bool, error) {
	tag, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO shipments (order_id, shipment_id, status, country, reason)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING`,
		sh.OrderID, sh.ShipmentID, sh.Status, sh.Country, sh.Reason)
	if err != nil {
		return false, fmt.Errorf("insert shipment: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Cancel marks an order's shipment cancelled, or leaves a cancelled tombstone if none
// was scheduled yet. A failed shipment stays failed (nothing was booked).
func (s *Store) Cancel(ctx context.Context, orderID, shipmentID string) error {
	_, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO shipments (order_id, shipment_id, status, country, reason)
		VALUES ($1, $2, 'cancelled', '', 'order cancelled')
		ON CONFLICT (order_id) DO UPDATE SET status = 'cancelled', reason = 'order cancelled'
		WHERE shipments.status = 'scheduled'`, orderID, shipmentID)
	if err != nil {
		return fmt.Errorf("cancel shipment: %w", err)
	}
	return nil
}
