package main

import (
	"errors"
	"net/http"

	"microlab/services/platform/httpx"
)

// api registers shipping's internal HTTP API (not exposed by the gateway; used by tests
// and the dashboard to show what shipping believes).
func (s *Service) api(mux *http.ServeMux) {
	mux.Handle("GET /shipments/{orderId}", httpx.Handle(s.app.Log, func(w http.ResponseWriter, r *http.Request) error {
		sh, err := s.store.Get(r.Context(), r.PathValue("orderId"))
		if errors.Is(err, errNotFound) {
			return httpx.Errorf(http.StatusNotFound, "not_found", "no shipment for order %s", r.PathValue("orderId"))
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, sh)
		return nil
	}))
}
