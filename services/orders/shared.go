package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"microlab/services/contracts"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
)

// Shared database mode (db.topology=shared): every service has a schema in one database,
// and orders takes the shortcut the seed warns about. Instead of asking catalog for a
// price (HTTP) and leaving stock to inventory (events), it reads both straight from their
// tables with one SQL join. It is faster and simpler — until a team changes its own
// table: the schema is now a contract nobody signed. Rename inventory's stock.on_hand
// (inventory.schema=v2) and every checkout fails here, while in per-service mode nothing
// notices. The stock read is informational (an attribute on the span): the saga still
// reserves stock, so the four checkout outcomes are the same in both topologies.

// errSchemaCoupling: the join failed because another service's tables are not what
// orders' SQL expects (a renamed column, a missing table or schema, a revoked grant).
var errSchemaCoupling = errors.New("catalog/inventory schema changed under orders")

// errNotSharedYet: db.topology says shared, but this instance still runs on orders' own
// database (the switch restarts it in a moment): it prices over HTTP until then.
var errNotSharedYet = errors.New("orders is not on the shared database yet")

// sharedProduct is a product as orders sees it through the join.
type sharedProduct struct {
	Product
	OnHand *int // nil: inventory has no stock row for it
}

// SharedProducts reads the products with skus, and their stock, from catalog's and
// inventory's schemas. A SKU catalog does not know is absent from the map.
func (s *Store) SharedProducts(ctx context.Context, skus []string) (map[string]sharedProduct, error) {
	rows, err := pg.Q(ctx, s.pool).Query(ctx, `SELECT p.sku, p.price_cents, p.currency, s.on_hand
		FROM catalog.products p LEFT JOIN inventory.stock s ON s.sku = p.sku
		WHERE p.sku = ANY($1)`, skus)
	if err == nil {
		out := map[string]sharedProduct{}
		var p sharedProduct
		_, err = pgx.ForEachRow(rows, []any{&p.SKU, &p.PriceCents, &p.Currency, &p.OnHand}, func() error {
			out[p.SKU] = p
			return nil
		})
		if err == nil {
			return out, nil
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// A schema-qualified table whose schema is missing is 42P01 (relation does not
		// exist), not 3F000: both, on orders' own database, mean the switch is under way.
		if (pe.Code == "3F000" || pe.Code == "42P01") && !s.onSharedDatabase(ctx) {
			return nil, errNotSharedYet
		}
		switch pe.Code {
		case "42703", "42P01", "3F000", "42501": // undefined column, table, schema; no privilege
			return nil, fmt.Errorf("%w: %s", errSchemaCoupling, pe.Message)
		}
	}
	return nil, fmt.Errorf("read catalog and inventory tables: %w", err)
}

// onSharedDatabase reports whether orders' tables are in a schema of a shared database
// rather than in the public schema of a database of its own.
func (s *Store) onSharedDatabase(ctx context.Context) bool {
	var schema string
	err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema)
	return err == nil && schema != "public"
}

// priceShared is price in shared mode: one join instead of a call per SKU.
func (s *Service) priceShared(ctx context.Context, lines []Line) ([]contracts.Item, int64, error) {
	skus := make([]string, 0, len(lines))
	for _, l := range lines {
		skus = append(skus, l.SKU)
	}
	products, err := s.store.SharedProducts(ctx, skus)
	if errors.Is(err, errSchemaCoupling) {
		span := trace.SpanFromContext(ctx)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		s.app.Log.ErrorContext(ctx, "shared database: orders' join on catalog and inventory tables failed", "err", err)
		// A 5xx: not the client's fault, and nothing it can fix. The message says whose.
		return nil, 0, httpx.Errorf(http.StatusInternalServerError, "schema_coupling",
			"%v (db.topology=shared: orders reads catalog.products and inventory.stock directly, so their schema is orders' contract too)", err)
	}
	if err != nil {
		return nil, 0, err
	}
	items := make([]contracts.Item, len(lines))
	var total int64
	for i, l := range lines {
		p, ok := products[l.SKU]
		if !ok {
			return nil, 0, &UnknownSKUError{SKU: l.SKU}
		}
		if p.Currency != currency {
			return nil, 0, fmt.Errorf("%w: %s is priced in %q, orders sells in %s", errCatalogUnavailable, l.SKU, p.Currency, currency)
		}
		if p.OnHand != nil {
			trace.SpanFromContext(ctx).SetAttributes(attribute.Int("shop.stock."+l.SKU, *p.OnHand))
		}
		items[i] = contracts.Item{SKU: l.SKU, Qty: l.Qty, PriceCents: p.PriceCents}
		total += p.PriceCents * int64(l.Qty)
	}
	return items, total, nil
}
