package main

import (
	"errors"
	"net/http"

	"microlab/services/platform/app"
	"microlab/services/platform/httpx"
)

// api registers catalog's internal HTTP API (the gateway exposes it as /api/v1/products;
// orders reads prices from it when an order is placed).
//
//	GET /products        → 200 {items: [product...]}, sorted by sku
//	GET /products/{sku}  → 200 product | 404 not_found
func api(a *app.App, store *Store) {
	mux := a.Mux()
	mux.Handle("GET /products", httpx.Handle(a.Log, func(w http.ResponseWriter, r *http.Request) error {
		items, err := store.List(r.Context())
		if err != nil {
			return err
		}
		if items == nil {
			items = []Product{} // an empty catalog is [], never null
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
		return nil
	}))
	mux.Handle("GET /products/{sku}", httpx.Handle(a.Log, func(w http.ResponseWriter, r *http.Request) error {
		p, err := store.Get(r.Context(), r.PathValue("sku"))
		if errors.Is(err, errNotFound) {
			return httpx.Errorf(http.StatusNotFound, "not_found", "no product with sku %q", r.PathValue("sku"))
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, p)
		return nil
	}))
}
