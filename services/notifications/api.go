package main

import (
	"net/http"

	"microlab/services/contracts"
	"microlab/services/platform/httpx"
)

// api registers notifications' internal HTTP API (not exposed by the gateway; used by
// tests and the dashboard to show what was sent).
//
//	GET /notifications?orderId=...  or  ?userId=...  (both: the user's for that order)
//	  → 200 {items: [{id, userId, orderId, kind, channel, at}]}, oldest first, at most 100
//	  | 400 missing_filter when neither is given (the table is not for browsing)
//	POST /notify  {orderId, sagaMode, userId, totalCents} (order.confirmed's data)
//	  → 201 {sent: true} the confirmation was sent | 200 {sent: false} it had been already
//	  | 400/415 a malformed body. orders calls it with notifications.mode=sync.
func (s *Service) api(mux *http.ServeMux) {
	mux.Handle("POST /notify", httpx.Handle(s.app.Log, func(w http.ResponseWriter, r *http.Request) error {
		var in contracts.OrderConfirmedData
		if err := httpx.Decode(w, r, &in, httpx.DefaultMaxBody); err != nil {
			return err
		}
		if in.OrderID == "" || in.UserID == "" {
			return httpx.Errorf(http.StatusBadRequest, "missing_field", "orderId and userId are required")
		}
		sent, err := s.notifySync(r.Context(), in)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, map[bool]int{true: http.StatusCreated, false: http.StatusOK}[sent], map[string]bool{"sent": sent})
		return nil
	}))
	mux.Handle("GET /notifications", httpx.Handle(s.app.Log, func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		orderID, userID := q.Get("orderId"), q.Get("userId")
		if orderID == "" && userID == "" {
			return httpx.Errorf(http.StatusBadRequest, "missing_filter", "give orderId or userId")
		}
		items, err := s.store.List(r.Context(), orderID, userID)
		if err != nil {
			return err
		}
		if items == nil {
			items = []Notification{} // [] on the wire, never null
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
		return nil
	}))
}
