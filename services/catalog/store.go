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
	// CatalogVersion is set by catalog v2 only ("v2"): the canary's answers are told
	// apart by it (release.go). Never stored.
	CatalogVersion string `json:"catalogVersion,omitempty"`
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

// SetPrice changes a product's price and returns the product before and after, or
// errNotFound. FOR UPDATE holds the row until the caller's transaction ends (pg.InTx), so
// two concurrent changes are ordered and each event's old price is the one it replaced.
func (s *Store) SetPrice(ctx context.Context, sku string, cents int64) (before, after Product, err error) {
	q := pg.Q(ctx, s.pool)
	err = q.QueryRow(ctx, `SELECT sku, name, price_cents, currency FROM products WHERE sku = $1 FOR UPDATE`, sku).
		Scan(&before.SKU, &before.Name, &before.PriceCents, &before.Currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, Product{}, errNotFound
	}
	if err != nil {
		return Product{}, Product{}, fmt.Errorf("set price of %s: %w", sku, err)
	}
	if _, err := q.Exec(ctx, `UPDATE products SET price_cents = $2 WHERE sku = $1`, sku, cents); err != nil {
		return Product{}, Product{}, fmt.Errorf("set price of %s: %w", sku, err)
	}
	after = before
	after.PriceCents = cents
	return before, after, nil
}
