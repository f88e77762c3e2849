package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/a-h/templ"

	"microlab/dashboard/ingest"
	"microlab/dashboard/views"
	"microlab/exercises"
	"microlab/lab/loadgen"
	"microlab/services/platform/config"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// server holds the dashboard's dependencies; its methods are the HTTP handlers.
type server struct {
	cfg      Config
	log      *slog.Logger
	src      Sources
	settings settingsStore
	plane    *control.Plane // nil: the switches are read-only (no lab database)
	hosts    hostFilter
	prom     *promClient
	rabbit   *rabbitAdmin // nil when RABBITMQ_MANAGEMENT_URL is unusable
	amqp     channels     // nil: DLQ replay unavailable
	gateway  *gatewayClient
	orders   *loadgen.Client // orders' internal API: the event stream, the rebuild (orders.go)
	sessions *sessions
	traffic  *traffic
	arch     views.Arch
	panels   []panelDef
	jaegerUI *uiProbe                     // Jaeger's UI, linked to only while it answers
	grafana  *uiProbe                     // Grafana, likewise
	health   atomic.Pointer[views.Health] // the latest health snapshot (see pollHealth)
	exs      atomic.Pointer[labExercises] // nil until attachExercises: no exercises
	static   http.Handler
}

// How many items a page shows at first (the live stream adds to them).
const (
	listTraces  = 100
	listEvents  = 200
	listSagas   = 50
	listChanges = 50
)

// routes returns the dashboard's handler. extra is the Prometheus endpoint and anything
// else main wants inside the instrumentation; WS and OTLP are mounted outside it.
func (s *server) routes(instrument func(http.Handler) http.Handler, extra func(*http.ServeMux)) http.Handler {
	mux := http.NewServeMux()
	page := func(f func(w http.ResponseWriter, r *http.Request) error) http.Handler { return httpx.Handle(s.log, f) }
	mux.Handle("GET /{$}", page(s.overviewPage))
	mux.Handle("GET /overview/map", page(s.overviewMap))
	mux.Handle("GET /traces", page(s.tracesPage))
	mux.Handle("GET /traces/{id}", page(s.tracePage))
	mux.Handle("GET /events", page(s.eventsPage))
	mux.Handle("GET /sagas", page(s.sagasPage))
	mux.Handle("GET /sagas/{id}/events", page(s.sagaEvents))
	mux.Handle("GET /charts", page(s.metricsPage))
	mux.Handle("GET /charts/panels", page(s.metricsPanels))
	mux.Handle("GET /switchboard", page(s.switchboardPage))
	mux.Handle("GET /shop", page(s.shopPage))
	mux.Handle("GET /exercises", page(s.exercisesPage))
	mux.Handle("GET /exercises/{id}", page(s.exercisePage))
	mux.Handle("GET /docs/{path...}", page(s.docPage))
	mux.Handle("GET /static/{name}", s.static)

	api := func(f httpx.HandlerFunc) http.Handler { return httpx.Handle(s.log, f) }
	mux.Handle("GET /api/health", api(s.getHealth))
	mux.Handle("GET /api/traces", api(s.getTraces))
	mux.Handle("GET /api/traces/{id}", api(s.getTrace))
	mux.Handle("GET /api/events", api(s.getEvents))
	mux.Handle("GET /api/events/{id}", api(s.getEvent))
	mux.Handle("GET /api/sagas", api(s.getSagas))
	mux.Handle("GET /api/sagas/{order}", api(s.getSaga))
	mux.Handle("GET /api/dlq", api(s.getDLQ))
	mux.Handle("POST /api/dlq/{queue}/replay", api(s.replayDLQ))
	mux.Handle("POST /api/dlq/{queue}/discard", api(s.discardDLQ))
	mux.Handle("GET /api/lab/settings", api(s.getSettings))
	mux.Handle("POST /api/lab/settings", api(s.postSetting))
	mux.Handle("GET /api/lab/settings/changes", api(s.getChanges))
	mux.Handle("GET /api/lab/faults", api(s.getFaults))
	mux.Handle("POST /api/lab/faults", api(s.postFault))
	mux.Handle("DELETE /api/lab/faults", api(s.deleteFaults))
	mux.Handle("POST /api/lab/reset", api(s.postReset))
	mux.Handle("POST /api/lab/projections/{projection}/rebuild", api(s.startRebuild))
	mux.Handle("GET /api/lab/projections/{projection}/rebuild/{job}", api(s.rebuildStatus))
	mux.Handle("GET /api/lab/traffic", api(s.getTraffic))
	mux.Handle("POST /api/lab/traffic", api(s.startTraffic))
	mux.Handle("POST /api/lab/traffic/stop", api(s.stopTraffic))
	mux.Handle("GET /api/lab/exercises", api(s.getExercises))
	mux.Handle("GET /api/lab/exercises/{id}", api(s.getExercise))
	mux.Handle("POST /api/lab/exercises/{id}/start", api(s.startExercise))
	mux.Handle("POST /api/lab/exercises/{id}/steps/{step}/hint", api(s.hintExercise))
	mux.Handle("POST /api/lab/exercises/{id}/steps/{step}/answer", api(s.answerExercise))
	mux.Handle("POST /api/lab/exercises/{id}/solve", api(s.solveExercise))
	mux.Handle("POST /api/lab/exercises/{id}/reset", api(s.resetExercise))
	mux.Handle("POST /api/lab/exercises/{id}/reveal", api(s.revealExercise))
	mux.Handle("GET /api/shop/products", api(s.shopProducts))
	mux.Handle("POST /api/shop/login", api(s.shopLogin))
	mux.Handle("POST /api/shop/orders", api(s.shopOrder))
	mux.Handle("GET /api/shop/orders/{id}", api(s.shopGetOrder))
	httpx.Health(mux, s.ready)
	if extra != nil {
		extra(mux)
	}
	h := requireSameOrigin(mux)
	if instrument != nil {
		h = instrument(h)
	}
	outer := http.NewServeMux()
	outer.Handle("/", h)
	if s.src.WS != nil {
		outer.Handle("GET /ws", s.src.WS)
	}
	if s.src.OTLP != nil {
		outer.Handle("POST /v1/traces", s.src.OTLP)
	}
	return securityHeaders(s.hosts.wrap(outer))
}

func (s *server) ready(ctx context.Context) error {
	if _, err := s.settings.List(ctx); err != nil {
		return errors.New("lab database: " + err.Error())
	}
	return nil
}

// render writes a page: c inside the layout. It renders to a buffer first so that a
// failure is a clean 500, not half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, p views.Page, c templ.Component) error {
	var buf bytes.Buffer
	if err := views.Layout(p).Render(templ.WithChildren(r.Context(), c), &buf); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := buf.WriteTo(w)
	return err
}

func (s *server) overviewPage(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, views.Page{Title: "Overview", Active: "overview"}, views.Overview(s.overviewModel(r.Context())))
}

// overviewMap is the map alone, which the page fetches again to redraw it when
// db.topology changes (overview.js).
func (s *server) overviewMap(w http.ResponseWriter, r *http.Request) error {
	var buf bytes.Buffer
	m := s.overviewModel(r.Context())
	if err := views.ArchMap(m).Render(r.Context(), &buf); err != nil {
		return err
	}
	if err := views.PatternStrip(m.Patterns).Render(r.Context(), &buf); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := buf.WriteTo(w)
	return err
}

// overviewModel is the map as it stands: the databases drawn for db.topology (one
// database, or one per service), the optional patterns the settings have on (the strip,
// with the health poll's numbers), the latest health, the faults in force.
func (s *server) overviewModel(ctx context.Context) views.OverviewModel {
	m := views.OverviewModel{Arch: s.arch, Health: s.currentHealth(), Faults: map[string][]views.FaultRow{}}
	settings := map[string]string{}
	if es, err := s.settings.List(ctx); err == nil {
		for _, e := range es {
			settings[e.Key] = e.Value
			if e.Key == control.DBTopology {
				m.Arch = s.arch.WithTopology(e.Value)
			}
		}
	}
	m.Arch, m.Patterns = m.Arch.WithPatterns(settings, m.Health.Patterns, docExists)
	if fs, err := s.settings.Faults(ctx); err == nil {
		for _, f := range s.publicFaults(ctx, fs) {
			if !f.Hidden { // a diagnosis's fault: the map does not say where it is
				m.Faults[f.Service] = append(m.Faults[f.Service], f)
			}
		}
	}
	return m
}

func (s *server) currentHealth() views.Health {
	if h := s.health.Load(); h != nil {
		return *h
	}
	return views.Health{}
}

func (s *server) tracesPage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	minMs, _ := strconv.Atoi(q.Get("minMs"))
	m := views.TracesModel{Services: s.arch.Services(), Service: q.Get("service"), ErrorsOnly: q.Get("errors") != "",
		MinMs: max(minMs, 0)}
	m.Traces = s.src.Traces.Summaries(listTraces, ingest.Filter{Service: m.Service, ErrorsOnly: m.ErrorsOnly,
		MinDuration: time.Duration(m.MinMs) * time.Millisecond})
	return s.render(w, r, views.Page{Title: "Traces", Active: "traces"}, views.Traces(m))
}

func (s *server) tracePage(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !validTraceID(id) {
		return httpx.Errorf(http.StatusBadRequest, "invalid_trace_id", "a trace id is 32 hex digits")
	}
	spans, ok := s.src.Traces.Trace(id)
	// A trace not (yet) received is a state of the page, not an error: the shop links
	// to a trace the moment its order is placed, before the spans arrive, and the page
	// waits for them (traces.js).
	m := views.TraceModel{Waterfall: views.NewWaterfall(id, spans), Missing: !ok || len(spans) == 0, Jaeger: s.jaegerUI.state()}
	return s.render(w, r, views.Page{Title: "Trace " + id, Active: "traces"}, views.Trace(m))
}

func validTraceID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func (s *server) eventsPage(w http.ResponseWriter, r *http.Request) error {
	corr := strings.TrimSpace(r.URL.Query().Get("correlation"))
	m := views.EventsModel{Events: s.src.Events.Recent(listEvents, corr), Correlation: corr, DLQ: s.dlqModel(r.Context())}
	return s.render(w, r, views.Page{Title: "Events", Active: "events"}, views.Events(m))
}

func (s *server) sagasPage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	m := views.SagasModel{Outcome: q.Get("outcome"), Mode: q.Get("mode"), Rebuild: views.RebuildModel{Projection: exercises.Projections[0]}}
	order := q.Get("order")
	if order != "" {
		version, err := versionParam(r)
		if err != nil {
			return err
		}
		st := s.streamModel(r.Context(), order, version)
		m.Stream = &st
	}
	sagas := s.src.Sagas.List(listSagas, m.Outcome, m.Mode)
	if order != "" {
		if sg, ok := s.src.Sagas.Get(order); ok {
			sagas = []ingest.Saga{sg}
		}
	}
	for _, sg := range sagas {
		m.Sagas = append(m.Sagas, views.NewSagaTimeline(sg))
	}
	return s.render(w, r, views.Page{Title: "Sagas", Active: "sagas"}, views.Sagas(m, order))
}

func (s *server) metricsPage(w http.ResponseWriter, r *http.Request) error {
	return s.render(w, r, views.Page{Title: "Metrics", Active: "metrics"}, views.Metrics(s.metricsModel(r.Context())))
}

// metricsPanels is the panels alone, which the page fetches again to refresh.
func (s *server) metricsPanels(w http.ResponseWriter, r *http.Request) error {
	var buf bytes.Buffer
	if err := views.MetricsPanels(s.metricsModel(r.Context())).Render(r.Context(), &buf); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := buf.WriteTo(w)
	return err
}

func (s *server) switchboardPage(w http.ResponseWriter, r *http.Request) error {
	m := views.SwitchboardModel{Traffic: s.traffic.state(), FaultServices: control.FaultServices, FaultKinds: control.FaultKinds}
	entries, err := s.settings.List(r.Context())
	if err != nil {
		s.log.WarnContext(r.Context(), "settings unreadable", "err", err)
		m.Error = "The lab settings could not be read from " + config.MaskURL(s.cfg.LabDatabaseURL) + ": " + err.Error()
	}
	for _, e := range entries {
		row := views.SettingRow{Key: e.Key, Value: e.Value, Default: e.Default, Help: e.Help, Allowed: e.Allowed}
		if s.composeMode() {
			if note := composeNote(e.Key, e.Value); note != "" {
				row.Help += " " + note + "."
			}
		}
		m.Settings = append(m.Settings, row)
	}
	if fs, err := s.settings.Faults(r.Context()); err == nil {
		m.Faults = s.publicFaults(r.Context(), fs)
	}
	changes, err := s.settings.Changes(r.Context(), listChanges)
	if err == nil {
		for _, c := range changes {
			m.Changes = append(m.Changes, s.publicChange(c))
		}
	}
	return s.render(w, r, views.Page{Title: "Switchboard", Active: "switchboard"}, views.Switchboard(m))
}

func (s *server) shopPage(w http.ResponseWriter, r *http.Request) error {
	m := views.ShopModel{Gateway: config.MaskURL(s.cfg.GatewayURL), Traffic: s.traffic.state()}
	for _, u := range demoUsers {
		m.Users = append(m.Users, views.DemoUser{Email: u.email})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	products, err := s.gateway.products(ctx)
	if err != nil {
		m.Error = "The catalog could not be read through the gateway: " + err.Error()
		m.Products = fallbackProducts
	} else {
		m.Products = products
	}
	return s.render(w, r, views.Page{Title: "Shop", Active: "shop"}, views.Shop(m))
}
