package main

import (
	"errors"
	"net/http"

	"microlab/services/platform/httpx"
)

// api registers inventory's internal HTTP API (not exposed by the gateway; used by tests
// and the dashboard to show what inventory believes).
//
//	GET /stock/{sku}             → 200 {sku, onHand} | 404 not_found
//	GET /reservations/{orderId}  → 200 {orderId, reserved, released, lines: [{sku, qty, status}]}
//
// An order inventory never heard of answers 200 with zeros: "nothing reserved" is a fact
// about the order, not a missing resource.
func (s *Service) api(mux *http.ServeMux) {
	mux.Handle("GET /stock/{sku}", httpx.Handle(s.app.Log, func(w http.ResponseWriter, r *http.Request) error {
		lv, err := s.store.Level(r.Context(), r.PathValue("sku"))
		if errors.Is(err, errNotFound) {
			return httpx.Errorf(http.StatusNotFound, "not_found", "no stock for sku %q", r.PathValue("sku"))
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, lv)
		return nil
	}))
	mux.Handle("GET /reservations/{orderId}", httpx.Handle(s.app.Log, func(w http.ResponseWriter, r *http.Request) error {
		res, err := s.store.Reservations(r.Context(), r.PathValue("orderId"))
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, res)
		return nil
	}))
}
