package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Store is catalog's SQL.
type Store struct {
	pool *pgxpool.Pool
}

// Product is one row of products, in the wire shape of the API.
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"priceCents"`
	Currency   string `json:"currency"`
}

var errNotFound = errors.New("not found")

// List returns every product, sorted by SKU (a stable order clients can rely on).
func (s *Store) List(ctx context.Context) ([]Product, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT sku, name, price_cents, currency FROM products ORDER BY sku`)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Product, error) {
		var p Product
		err := r.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return out, nil
}

// Get returns one product, or errNotFound.
func (s *Store) Get(ctx context.Context, sku string) (Product, error) {
	var p Product
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT sku, name, price_cents, currency FROM products WHERE sku = $1`, sku).
		Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, errNotFound
	}
	if err != nil {
		return Product{}, fmt.Errorf("get product %s: %w", sku, err)
	}
	return p, nil
}
