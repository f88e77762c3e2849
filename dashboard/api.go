package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"microlab/dashboard/ingest"
	"microlab/dashboard/views"
	"microlab/services/platform/control"
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
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"traceId": id, "spans": spans,
		"jaeger": views.JaegerTraceURL(s.cfg.JaegerURL, id)})
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

// settingSource is how the dashboard's changes show on the timeline.
const settingSource = "dashboard"

// postSetting: POST /api/lab/settings {key, value} → validate (400 with control's
// message), store, announce on lab.control, broadcast "setting" → 200 the change.
func (s *server) postSetting(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	if err := httpx.Decode(w, r, &in, 4<<10); err != nil {
		return err
	}
	// Validate here as well as in Set: a bad value is the client's mistake (400), a
	// failing Set is ours.
	if _, err := control.Validate(in.Key, in.Value); err != nil {
		return httpx.Errorf(http.StatusBadRequest, "invalid_setting", "%s", err.Error())
	}
	ch, err := s.settings.Set(r.Context(), in.Key, in.Value, settingSource)
	if err != nil {
		return err
	}
	// The database is the truth: services re-read it periodically, so a failed
	// announcement delays the change, it does not lose it.
	announced := true
	if s.announce != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		if err := s.announce(actx, ch); err != nil {
			announced = false
			s.log.WarnContext(r.Context(), "setting stored but not announced; services pick it up at their next re-read", "key", ch.Key, "err", err)
		}
	}
	row := changeRow(ch)
	broadcast(s.src.Hub, "setting", row)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"change": row, "announced": announced})
	return nil
}

func (s *server) getChanges(w http.ResponseWriter, r *http.Request) error {
	chs, err := s.settings.Changes(r.Context(), limit(r, listChanges, 1000))
	if err != nil {
		return err
	}
	out := make([]views.ChangeRow, 0, len(chs))
	for _, c := range chs {
		out = append(out, changeRow(c))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

func changeRow(c control.Change) views.ChangeRow {
	return views.ChangeRow{Revision: c.Revision, Key: c.Key, Old: c.Old, New: c.New, Source: c.Source, At: c.At}
}
