package shop_test

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/services/contracts"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
	"microlab/services/shop"
)

// The seed the monolith inserts (shop.SeedProducts) is the seed catalog's and
// inventory's migrations insert: both migrations are applied, for real, to databases
// of their own, and the rows read back must be the slice, row for row. A product added
// to one side only fails here, so a route moved by the strangler fig never meets a
// product (or a price, or a stock level) that the other side did not have.
func TestSeedProductsAreCatalogsAndInventorysSeed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type row struct {
		SKU, Name, Currency string
		PriceCents          int64
		Stock               int
	}
	var want []row
	for _, p := range shop.SeedProducts {
		want = append(want, row{p.SKU, p.Name, p.Currency, p.PriceCents, p.Stock})
	}
	slices.SortFunc(want, func(a, b row) int { return compare(a.SKU, b.SKU) })

	migrated := func(dir string) *pgx.Conn {
		t.Helper()
		url := testenv.DB(t, testenv.Name("t_seed_"))
		pool, err := pg.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if err := pg.Migrate(ctx, pool, os.DirFS(dir), "goose_db_version"); err != nil {
			t.Fatalf("migrate %s: %v", dir, err)
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	catalog := migrated("../catalog/migrations")
	inventory := migrated("../inventory/migrations")

	rows, err := catalog.Query(ctx, `SELECT sku, name, currency, price_cents FROM products ORDER BY sku`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.SKU, &x.Name, &x.Currency, &x.PriceCents)
	})
	if err != nil {
		t.Fatal(err)
	}
	stock := map[string]int{}
	rows, err = inventory.Query(ctx, `SELECT sku, on_hand FROM stock`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sku string
		var n int
		if err := rows.Scan(&sku, &n); err != nil {
			t.Fatal(err)
		}
		stock[sku] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stock) != len(got) {
		t.Fatalf("inventory seeds %d SKUs, catalog %d", len(stock), len(got))
	}
	for i := range got {
		n, ok := stock[got[i].SKU]
		if !ok {
			t.Fatalf("catalog seeds %s, inventory does not", got[i].SKU)
		}
		got[i].Stock = n
	}
	if !slices.Equal(got, want) {
		t.Fatalf("catalog+inventory seed:\n%+v\nshop.SeedProducts:\n%+v", got, want)
	}
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestCardDecision(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ card, last4, reason string }{
		{"4242 4242 4242 4242", "4242", ""},
		{"4000-0000-0000-0002", "0002", shop.ReasonCardDeclined},
		{"4242 4242 4242 4241", "4241", shop.ReasonInvalidCard},
		{"not a card", "", shop.ReasonInvalidCard},
	} {
		if last4, reason := shop.CardDecision(tc.card); last4 != tc.last4 || reason != tc.reason {
			t.Errorf("CardDecision(%q) = %q, %q; want %q, %q", tc.card, last4, reason, tc.last4, tc.reason)
		}
	}
}

func TestShippingDecision(t *testing.T) {
	t.Parallel()
	if c, f := shop.ShippingDecision("xx"); c != "XX" || f == "" {
		t.Fatalf("xx: %q %q, want XX and a failure", c, f)
	}
	if c, f := shop.ShippingDecision("de"); c != "DE" || f != "" {
		t.Fatalf("de: %q %q, want DE and no failure", c, f)
	}
}

// A reservation is all or nothing: the shortage is found before anything is taken, an
// unknown SKU is told apart from one out of stock, and lines are summed per SKU.
func TestStockRules(t *testing.T) {
	t.Parallel()
	lines, ok := shop.StockWanted([]contracts.Item{{SKU: "B", Qty: 1}, {SKU: "A", Qty: 2}, {SKU: "B", Qty: 3}})
	if !ok || !slices.Equal(lines, []shop.StockLine{{SKU: "A", Qty: 2}, {SKU: "B", Qty: 4}}) {
		t.Fatalf("StockWanted = %v %v", lines, ok)
	}
	if _, ok := shop.StockWanted([]contracts.Item{{SKU: "A", Qty: 0}}); ok {
		t.Fatal("a quantity of 0 is not an order line")
	}
	if sku, unknown, short := shop.Shortage(lines, map[string]int{"A": 2, "B": 3}); !short || unknown || sku != "B" {
		t.Fatalf("Shortage = %q %v %v; want B short", sku, unknown, short)
	}
	if sku, unknown, short := shop.Shortage(lines, map[string]int{"B": 9}); !short || !unknown || sku != "A" {
		t.Fatalf("Shortage = %q %v %v; want A unknown", sku, unknown, short)
	}
	if _, _, short := shop.Shortage(lines, map[string]int{"A": 2, "B": 4}); short {
		t.Fatal("exactly enough stock is enough")
	}
	items, total := shop.Price(lines, map[string]int64{"A": 100, "B": 250})
	if total != 1200 || len(items) != 2 || items[1].PriceCents != 250 {
		t.Fatalf("Price = %v %d", items, total)
	}
}
