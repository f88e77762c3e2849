package main

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"microlab/dashboard/ingest"
	"microlab/dashboard/views"
	"microlab/services/platform/httpx"
)

// The read APIs mirror the pages, for scripts, exercises' checks and browser tests.

func limit(r *http.Request, def, most int) int {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n <= 0 {
		return def
	}
	return min(n, most)
}

func (s *server) getHealth(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, s.currentHealth())
	return nil
}

func (s *server) getTraces(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	minMs, _ := strconv.Atoi(q.Get("minMs"))
	ts := s.src.Traces.Summaries(limit(r, listTraces, 1000), ingest.Filter{Service: q.Get("service"),
		ErrorsOnly: q.Get("errors") != "", MinDuration: time.Duration(max(minMs, 0)) * time.Millisecond, Query: q.Get("q")})
	if ts == nil {
		ts = []ingest.TraceSummary{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": ts})
	return nil
}

func (s *server) getTrace(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !validTraceID(id) {
		return httpx.Errorf(http.StatusBadRequest, "invalid_trace_id", "a trace id is 32 hex digits")
	}
	spans, ok := s.src.Traces.Trace(id)
	if !ok {
		return httpx.Errorf(http.StatusNotFound, "not_found", "trace %s not seen (or already forgotten)", id)
	}
	out := map[string]any{"traceId": id, "spans": spans}
	// "jaeger" is the trace in Jaeger's UI while that answers; otherwise "jaegerNote"
	// says why there is no such link (the same sentence as the trace page).
	ui := s.jaegerUI.state()
	if href := ui.Link(views.JaegerTracePath(id)); href != "" {
		out["jaeger"] = href
	} else {
		out["jaegerNote"] = ui.Why(views.JaegerPurpose)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getEvents(w http.ResponseWriter, r *http.Request) error {
	evs := s.src.Events.Recent(limit(r, listEvents, 5000), strings.TrimSpace(r.URL.Query().Get("correlation")))
	if evs == nil {
		evs = []ingest.Event{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": evs})
	return nil
}

func (s *server) getEvent(w http.ResponseWriter, r *http.Request) error {
	e, ok := s.src.Events.Get(r.PathValue("id"))
	if !ok {
		return httpx.Errorf(http.StatusNotFound, "not_found", "event %q not seen (or already forgotten)", r.PathValue("id"))
	}
	httpx.WriteJSON(w, http.StatusOK, e)
	return nil
}

func (s *server) getSagas(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	out := s.src.Sagas.List(limit(r, listSagas, 1000), q.Get("outcome"), q.Get("mode"))
	if out == nil {
		out = []ingest.Saga{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

func (s *server) getSaga(w http.ResponseWriter, r *http.Request) error {
	sg, ok := s.src.Sagas.Get(r.PathValue("order"))
	if !ok {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no saga seen for order %q", r.PathValue("order"))
	}
	httpx.WriteJSON(w, http.StatusOK, sg)
	return nil
}

// settingJSON is a setting as GET /api/lab/settings lists it.
type settingJSON struct {
	Key     string   `json:"key"`
	Value   string   `json:"value"`
	Default string   `json:"default"`
	Help    string   `json:"help"`
	Allowed []string `json:"allowed,omitempty"`
}

// getSettings: GET /api/lab/settings → {"settings": [{key, value, default, help, allowed}]}.
func (s *server) getSettings(w http.ResponseWriter, r *http.Request) error {
	entries, err := s.settings.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]settingJSON, 0, len(entries))
	for _, e := range entries {
		out = append(out, settingJSON{Key: e.Key, Value: e.Value, Default: e.Default, Help: e.Help, Allowed: e.Allowed})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"settings": out})
	return nil
}
