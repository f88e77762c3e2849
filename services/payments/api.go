package main

import (
	"net/http"

	"microlab/services/platform/httpx"
)

// api registers payments' internal HTTP API (not exposed by the gateway; used by tests
// and the dashboard to show what payments believes).
//
//	GET /payments/{orderId} → 200 {orderId, authorizedCents, capturedCents, refundedCents,
//	                         authorizations, captures, refunds, declines,
//	                         entries: [{kind, amountCents, reason, at}]}
//
// An order payments never heard of answers 200 with zeros: "no ledger entries" is a
// fact about the order, not a missing resource.
func (s *Service) api(mux *http.ServeMux) {
	mux.Handle("GET /payments/{orderId}", httpx.Handle(s.app.Log, func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("orderId")
		ledger, err := s.store.Ledger(r.Context(), id)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, summarize(id, ledger))
		return nil
	}))
}
