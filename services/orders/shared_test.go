package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// The shared-database join: prices and stock from catalog's and inventory's schemas,
// unknown SKUs absent, and a column renamed under it reported as the coupling it is.
func TestSharedProducts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_osh_")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, q := range []string{
		`CREATE SCHEMA catalog`, `CREATE SCHEMA inventory`,
		`CREATE TABLE catalog.products (sku text PRIMARY KEY, name text, price_cents bigint, currency text)`,
		`CREATE TABLE inventory.stock (sku text PRIMARY KEY, on_hand int)`,
		`INSERT INTO catalog.products VALUES ('LAB-MUG', 'Mug', 1200, 'EUR'), ('LAB-NEW', 'New', 100, 'EUR')`,
		`INSERT INTO inventory.stock VALUES ('LAB-MUG', 7)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s := &Store{pool: pool}
	got, err := s.SharedProducts(ctx, []string{"LAB-MUG", "LAB-NEW", "LAB-NOPE"})
	if err != nil {
		t.Fatal(err)
	}
	if mug := got["LAB-MUG"]; mug.PriceCents != 1200 || mug.OnHand == nil || *mug.OnHand != 7 {
		t.Errorf("LAB-MUG: %+v", mug)
	}
	if n := got["LAB-NEW"]; n.PriceCents != 100 || n.OnHand != nil {
		t.Errorf("LAB-NEW (no stock row): %+v", n)
	}
	if _, ok := got["LAB-NOPE"]; ok || len(got) != 2 {
		t.Errorf("unknown SKU answered: %+v", got)
	}

	if _, err := pool.Exec(ctx, `ALTER TABLE inventory.stock RENAME COLUMN on_hand TO quantity`); err != nil {
		t.Fatal(err)
	}
	_, err = s.SharedProducts(ctx, []string{"LAB-MUG"})
	if !errors.Is(err, errSchemaCoupling) || !strings.Contains(err.Error(), "on_hand does not exist") {
		t.Fatalf("after inventory's rename: %v, want the schema coupling naming on_hand", err)
	}
}

// Between db.topology=shared and orders' restart onto the shared database, orders still
// runs on a database of its own, where catalog.products does not exist (42P01): that is
// "not shared yet" (price over HTTP), not a schema coupling (a 500 to every checkout).
func TestSharedProductsBeforeTheSwitch(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, testenv.DB(t, testenv.Name("t_osh_")))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := &Store{pool: pool}
	if _, err := s.SharedProducts(ctx, []string{"LAB-MUG"}); !errors.Is(err, errNotSharedYet) {
		t.Fatalf("on orders' own database: %v, want errNotSharedYet", err)
	}
}
