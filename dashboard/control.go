package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"microlab/dashboard/views"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// The control API: /api/lab/settings, /api/lab/faults, /api/lab/reset. Every change
// goes through s.plane (control.Plane), the one code path `lab settings|fault|reset`
// and the exercises use too: validated (a refusal is 400 with control's one-line
// message, nothing stored or announced), stored with who made it, recorded on the
// timeline, announced on lab.control, and broadcast to every open dashboard.

// settingSource is how the dashboard's changes show on the timeline ("browser").
const settingSource = "dashboard"

// changesResync is how often the dashboard re-reads the timeline for changes made
// elsewhere when no announcement arrived (the announcements make it immediate).
const changesResync = 2 * time.Second

func (s *server) controlPlane() (*control.Plane, error) {
	if s.plane == nil {
		return nil, httpx.Errorf(http.StatusServiceUnavailable, "control_unavailable", "the lab database is not connected: switches are read-only")
	}
	return s.plane, nil
}

// refusal turns control's refusal of bad input into a 400 with its message; anything
// else is our failure (500).
func refusal(code string, err error) error {
	if control.IsInvalid(err) {
		return httpx.Errorf(http.StatusBadRequest, code, "%s", err.Error())
	}
	return err
}

// announced reads the Plane's answer for a stored change: ErrNotAnnounced is a warning
// (the services re-read the database within seconds), not a failure.
func (s *server) announced(ctx context.Context, err error) (bool, error) {
	if err == nil {
		return true, nil
	}
	if errors.Is(err, control.ErrNotAnnounced) {
		s.log.WarnContext(ctx, "change stored but not announced; services pick it up at their next re-read", "err", err)
		return false, nil
	}
	return false, err
}

// postSetting: POST /api/lab/settings {key, value} → 200 {change, announced}; 400
// invalid_setting with control's message.
func (s *server) postSetting(w http.ResponseWriter, r *http.Request) error {
	plane, err := s.controlPlane()
	if err != nil {
		return err
	}
	var in struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	if err := httpx.Decode(w, r, &in, 4<<10); err != nil {
		return err
	}
	ch, err := plane.Set(r.Context(), in.Key, in.Value, settingSource)
	if control.IsInvalid(err) || (err != nil && !errors.Is(err, control.ErrNotAnnounced)) {
		return refusal("invalid_setting", err)
	}
	ok, err := s.announced(r.Context(), err)
	if err != nil {
		return err
	}
	out := map[string]any{"change": changeRow(ch), "announced": ok}
	if s.composeMode() {
		if note := composeNote(in.Key, in.Value); note != "" {
			out["note"] = note
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// getFaults: GET /api/lab/faults → {"faults": [...]}, the faults in force, oldest first.
func (s *server) getFaults(w http.ResponseWriter, r *http.Request) error {
	fs, err := s.settings.Faults(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"faults": s.publicFaults(r.Context(), fs)})
	return nil
}

// postFault: POST /api/lab/faults (a control.FaultSpec) → 201 {fault, change,
// announced}; 400 invalid_fault with control's message.
func (s *server) postFault(w http.ResponseWriter, r *http.Request) error {
	plane, err := s.controlPlane()
	if err != nil {
		return err
	}
	var spec control.FaultSpec
	if err := httpx.Decode(w, r, &spec, 4<<10); err != nil {
		return err
	}
	f, ch, err := plane.AddFault(r.Context(), spec, settingSource)
	if control.IsInvalid(err) || (err != nil && !errors.Is(err, control.ErrNotAnnounced)) {
		return refusal("invalid_fault", err)
	}
	ok, err := s.announced(r.Context(), err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"fault": faultRow(f, time.Now()), "change": changeRow(ch), "announced": ok})
	return nil
}

// deleteFaults: DELETE /api/lab/faults[?target=payments|payments-2] → 200 {changes,
// announced}: every fault, a service's (its instances' too) or one instance's.
func (s *server) deleteFaults(w http.ResponseWriter, r *http.Request) error {
	plane, err := s.controlPlane()
	if err != nil {
		return err
	}
	target := strings.TrimSpace(r.URL.Query().Get("target"))
	if err := control.ValidateTarget(target); err != nil {
		return httpx.Errorf(http.StatusBadRequest, "invalid_fault", "%s", err.Error())
	}
	chs, err := plane.ClearFaults(r.Context(), target, settingSource)
	return s.writeChanges(w, r, chs, err)
}

// postReset: POST /api/lab/reset → 200 {changes, announced}: every setting back to its
// default, every fault cleared.
func (s *server) postReset(w http.ResponseWriter, r *http.Request) error {
	plane, err := s.controlPlane()
	if err != nil {
		return err
	}
	chs, err := plane.Reset(r.Context(), settingSource)
	return s.writeChanges(w, r, chs, err)
}

func (s *server) writeChanges(w http.ResponseWriter, r *http.Request, chs []control.Change, err error) error {
	if err != nil && !errors.Is(err, control.ErrNotAnnounced) {
		return refusal("invalid_fault", err)
	}
	ok, err := s.announced(r.Context(), err)
	if err != nil {
		return err
	}
	rows := make([]views.ChangeRow, 0, len(chs))
	for _, c := range chs {
		rows = append(rows, changeRow(c))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"changes": rows, "announced": ok})
	return nil
}

func (s *server) getChanges(w http.ResponseWriter, r *http.Request) error {
	chs, err := s.settings.Changes(r.Context(), limit(r, listChanges, 1000))
	if err != nil {
		return err
	}
	out := make([]views.ChangeRow, 0, len(chs))
	for _, c := range chs {
		out = append(out, s.publicChange(c))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

func changeRow(c control.Change) views.ChangeRow {
	return views.ChangeRow{Revision: c.Revision, Key: c.Key, Old: c.Old, New: c.New, Source: c.Source,
		Who: views.Who(c.Source), At: c.At}
}

func faultRow(f control.Fault, now time.Time) views.FaultRow {
	return views.FaultRow{ID: f.ID, Service: f.Service, Instance: f.Instance, Kind: f.Kind, Value: f.Value, On: f.On,
		Created: f.Created, Expires: f.Expires, Source: f.Source, SecondsLeft: max(0, f.Expires.Sub(now).Seconds()),
		Target: f.Target(), Text: f.String(), Who: views.Who(f.Source)}
}

func faultRows(fs []control.Fault, now time.Time) []views.FaultRow {
	out := make([]views.FaultRow, 0, len(fs))
	for _, f := range fs {
		if f.Active(now) {
			out = append(out, faultRow(f, now))
		}
	}
	return out
}

// running is the Plane's Running hook: the dashboard's own view of what runs, the one
// the map shows (its health snapshot, see readHealth).
//
// A service runs if Prometheus scrapes any of its instances successfully. Where that
// view knows nothing (Prometheus unreachable, or not scraping the service) the fault is
// let through rather than refused on a guess.
//
// An instance (payments-2) runs if it is connected to the broker: Prometheus knows
// instances only by address, but an instance names its broker connections after itself
// ("payments-2/consume"), and the management API lists them, live (a process that exits
// drops its connections at once). So a fault on payments-9 is refused while the broker
// lists payments-1 and payments-2 and no payments-9. Where the broker names no instance
// of the service (the management API unreachable, or a service whose instances do not
// connect to it), the instance is judged as its service is.
func (s *server) running(service, instance string) bool {
	h := s.health.Load()
	if h == nil {
		return true
	}
	if ids := h.Instances[service]; instance != "" && len(ids) > 0 {
		return slices.Contains(ids, instance)
	}
	if h.Error != "" {
		return true
	}
	sh, ok := h.Services[service]
	if !ok || sh.Instances == 0 {
		return true
	}
	return sh.Answering > 0
}

// watchChanges pushes every change made elsewhere (the CLI, exercises, a one-shot fault
// firing in a service: all in the store's timeline) to the browsers as "setting"
// messages. It re-reads on every lab.control announcement (conn; nil: none) and every
// resync. Changes the dashboard made itself were broadcast already; the browser drops
// the repeat by revision.
func (s *server) watchChanges(ctx context.Context, store *control.Store, conn *bus.Conn, resync time.Duration) {
	w, err := control.NewWatcher(ctx, store, s.log, func(old, _ control.Settings) {
		chs, err := store.Changes(ctx, 500)
		if err != nil {
			s.log.WarnContext(ctx, "timeline unreadable", "err", err)
			return
		}
		for i := len(chs) - 1; i >= 0; i-- {
			if chs[i].Revision > old.Revision {
				broadcast(s.src.Hub, "setting", s.publicChange(chs[i]))
			}
		}
	})
	if err != nil {
		return // ctx ended
	}
	w.Resync = resync
	_ = w.Run(ctx, conn)
}
