package main

import (
	"context"
	"errors"
	"net/http"

	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
)

// maxPriceCents bounds a price (a million euros): a typo of a few digits is refused
// rather than stored.
const maxPriceCents = 100_000_000

// api registers catalog's internal HTTP API (the gateway exposes the two GETs as
// /api/v1/products; orders reads prices from it when an order is placed). The PUT is
// internal only: the lab (exercise 16) and operators change prices;
// the public gateway has no route to it.
//
//	GET /products              → 200 {items: [product...]}, sorted by sku
//	GET /products/{sku}        → 200 product | 404 not_found
//	PUT /products/{sku}/price  {priceCents} → 200 product | 400 invalid_price | 404 not_found
//
// Both GETs answer as this instance's release says (release.go): v2 marks each product
// with its version, and the bad v2 fails one read in four.
func api(a *app.App, store *Store, rel *release) {
	mux := a.Mux()
	mux.Handle("GET /products", httpx.Handle(a.Log, func(w http.ResponseWriter, r *http.Request) error {
		if err := rel.read(r); err != nil {
			return err
		}
		items, err := store.List(r.Context())
		if err != nil {
			return err
		}
		if items == nil {
			items = []Product{} // an empty catalog is [], never null
		}
		for i := range items {
			rel.mark(&items[i])
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
		return nil
	}))
	mux.Handle("GET /products/{sku}", httpx.Handle(a.Log, func(w http.ResponseWriter, r *http.Request) error {
		if err := rel.read(r); err != nil {
			return err
		}
		sku := r.PathValue("sku")
		p, err := store.Get(r.Context(), sku)
		if err == nil {
			rel.mark(&p)
		}
		return writeProduct(w, sku, p, err)
	}))
	mux.Handle("PUT /products/{sku}/price", httpx.Handle(a.Log, func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			PriceCents *int64 `json:"priceCents"`
		}
		if err := httpx.Decode(w, r, &in, httpx.DefaultMaxBody); err != nil {
			return err
		}
		if in.PriceCents == nil || *in.PriceCents < 0 || *in.PriceCents > maxPriceCents {
			return httpx.Errorf(http.StatusBadRequest, "invalid_price", "priceCents must be a whole number of cents from 0 to %d", maxPriceCents)
		}
		sku := r.PathValue("sku")
		p, err := setPrice(r.Context(), a, store, sku, *in.PriceCents)
		return writeProduct(w, sku, p, err)
	}))
}

// writeProduct answers with what a read or a change of sku's product returned: 200 and
// the product, 404 not_found if there is no such sku, or err as it is (httpx.Handle
// makes it a 500). The GET and the PUT answer alike, so a caller of either branches on
// the same shape.
func writeProduct(w http.ResponseWriter, sku string, p Product, err error) error {
	if errors.Is(err, errNotFound) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no product with sku %q", sku)
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, p)
	return nil
}

// setPrice commits the new price and its product.price_changed event in one transaction
// (the outbox row shares it), so the event goes out if and only if the price changed:
// a cache that drops its copy on the event is never told about a change that did not
// happen, nor left unaware of one that did. Setting the price a product already has
// changes nothing and announces nothing.
func setPrice(ctx context.Context, a *app.App, store *Store, sku string, cents int64) (Product, error) {
	var out Product
	err := pg.InTx(ctx, a.DB, func(ctx context.Context) error {
		before, after, err := store.SetPrice(ctx, sku, cents)
		if err != nil {
			return err
		}
		out = after
		if before.PriceCents == after.PriceCents {
			return nil
		}
		// The SKU is the correlation id: every change of one product's price is one
		// conversation in the wiretap.
		env, err := contracts.NewEnvelope(contracts.ProductPriceChanged, "catalog", sku, "",
			contracts.ProductPriceChangedData{SKU: sku, OldPriceCents: before.PriceCents, PriceCents: after.PriceCents, Currency: after.Currency})
		if err != nil {
			return err
		}
		return a.Emit(ctx, env)
	})
	if err != nil {
		return Product{}, err
	}
	a.Log.InfoContext(ctx, "price changed", "sku", sku, "price_cents", cents)
	return out, nil
}
