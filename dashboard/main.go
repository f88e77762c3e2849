// Command dashboard is the lab's browser UI and control plane, on 127.0.0.1:8080:
// server-rendered pages (templ) made live by one websocket; the lab settings API
// (/api/lab/*), which stores in database `lab` and announces on lab.control; DLQ
// inspection and replay; a storefront that goes through the gateway like any client;
// the guided exercises (package exercises' engine, /api/lab/exercises, which `lab
// exercise` asks too); the OTLP/HTTP receiver the services' second exporter sends
// spans to.
//
// It is not a shop service (no app.Start): it owns no shop data, consumes no shop
// queue, and it must keep working, and say what is missing, when parts of the lab
// (Prometheus, the gateway, RabbitMQ's management API) are down.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microlab/dashboard/views"
	"microlab/exercises"
	"microlab/observability"
	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/config"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
)

// Config is everything the dashboard reads from its environment.
type Config struct {
	HTTPAddr       string `env:"HTTP_ADDR" default:"127.0.0.1:8080"`
	AMQPURL        string `env:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/"`
	LabDatabaseURL string `env:"LAB_DATABASE_URL" default:"postgres://lab:lab@127.0.0.1:5432/lab"`
	// RabbitMQManagementURL is for the DLQ view and queue depths; the vhost is AMQP_URL's.
	RabbitMQManagementURL string `env:"RABBITMQ_MANAGEMENT_URL" default:"http://guest:guest@127.0.0.1:15672"`
	PrometheusURL         string `env:"PROMETHEUS_URL" default:"http://127.0.0.1:9090"`
	GatewayURL            string `env:"GATEWAY_URL" default:"http://127.0.0.1:8000"`
	// The two UIs the dashboard links to but does not serve have two addresses each: where
	// the learner's browser reaches them (the link bases) and where the dashboard itself
	// does (to probe them). They differ in compose: http://localhost:3000 for the browser,
	// http://grafana:3000 from the dashboard's container. A link is rendered only while
	// its probe finds the UI answering (links.go); otherwise the page says why not.
	//
	// JaegerURL is Jaeger's query service as the dashboard reaches it; its root is
	// probed for the UI (the same server serves API and UI).
	JaegerURL string `env:"JAEGER_URL" default:"http://127.0.0.1:16686"`
	// JaegerUIURL is the link base of Jaeger's UI (…/trace/<id>). Empty: this lab's
	// Jaeger has no UI (the native lab's is built without its assets): no trace links.
	JaegerUIURL string `env:"JAEGER_UI_URL"`
	// GrafanaURL is Grafana's link base (…/d/<uid>?viewPanel=<id>). Empty: there is no
	// Grafana in this lab (the native one): no panel links.
	GrafanaURL string `env:"GRAFANA_URL"`
	// GrafanaHealthURL is Grafana as the dashboard reaches it, asked for /api/health;
	// empty: GRAFANA_URL.
	GrafanaHealthURL string `env:"GRAFANA_HEALTH_URL"`
	// LinkProbeInterval is how often both UIs are probed again.
	LinkProbeInterval time.Duration `env:"LINK_PROBE_INTERVAL" default:"30s"`
	// PaymentsURL is payments' internal API, for the exercises' ledger checks.
	PaymentsURL string `env:"PAYMENTS_URL" default:"http://127.0.0.1:8104"`
	// CatalogURL is catalog's internal API, for the exercises' price actions.
	CatalogURL string `env:"CATALOG_URL" default:"http://127.0.0.1:8102"`
	// OrdersURL is orders' internal API, for the exercises' projection rebuild and the
	// Sagas page's event stream and rebuild button (orders.go).
	OrdersURL string `env:"ORDERS_URL" default:"http://127.0.0.1:8103"`
	// HealthInterval is how often the map's health (Prometheus, queue depths) is read.
	HealthInterval time.Duration `env:"HEALTH_INTERVAL" default:"5s"`
	// Hosts are host names the dashboard is served under besides localhost, 127.0.0.1,
	// [::1] and HTTP_ADDR's host (comma-separated, e.g. "dashboard,lab.internal"). A
	// request naming any other Host is refused: that closes DNS rebinding.
	Hosts string `env:"DASHBOARD_HOSTS"`
	// InstanceID names this process in logs and its AMQP connection; unset, it is
	// app.DefaultInstanceID's ("dashboard-<host name>" in a container).
	InstanceID      string        `env:"INSTANCE_ID"`
	LogLevel        string        `env:"LOG_LEVEL" default:"info"`
	StartTimeout    time.Duration `env:"START_TIMEOUT" default:"60s"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" default:"10s"`
	Environment     string        `env:"DEPLOYMENT_ENVIRONMENT" default:"native"`
	// Pprof serves Go's profiler at /debug/pprof/, as every service does with the same
	// variable (off by default). `lab up --pprof` and `lab bench` set it.
	Pprof bool `env:"PPROF"`

	// Store bounds: memory stays flat however long the lab runs, and whatever is sent.
	// Counts alone would not do it (a span or a message is as large as its sender
	// likes), so the trace and event stores have a byte budget too, and cut any one
	// value longer than their value limit, saying so ("…[truncated N bytes]").
	MaxTraces        int `env:"MAX_TRACES" default:"2000"`
	MaxSpansPerTrace int `env:"MAX_SPANS_PER_TRACE" default:"1000"`
	// 32 MiB holds the last few hundred checkouts (~110 KiB each); the page shows 50,
	// Jaeger keeps thousands. At 64 MiB (and 16 MiB of events) lab bench found the
	// dashboard at 177 MiB after its soak, against a 100 MB target per process.
	MaxTraceBytes int64 `env:"MAX_TRACE_BYTES" default:"33554432"`  // 32 MiB; one trace takes at most a 16th
	MaxSpanValue  int   `env:"MAX_SPAN_VALUE_BYTES" default:"4096"` // an attribute value, a span name
	MaxEvents     int   `env:"MAX_EVENTS" default:"5000"`
	MaxEventBytes int64 `env:"MAX_EVENT_BYTES" default:"8388608"`     // 8 MiB
	MaxEventValue int   `env:"MAX_EVENT_VALUE_BYTES" default:"16384"` // a payload, a header
	MaxSagas      int   `env:"MAX_SAGAS" default:"1000"`
	// ClientBuffer is each browser's send queue; a slow one drops (and counts) beyond it.
	ClientBuffer int `env:"WS_CLIENT_BUFFER" default:"256"`
}

func main() { app.Main("dashboard", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(getenv, &cfg); err != nil {
		return err
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = app.DefaultInstanceID(getenv, "dashboard")
	}
	// The dashboard's own telemetry: logs and /metrics. No trace export: its spans
	// (page loads, polls) would only bury the shop's checkouts in Jaeger.
	tel, err := observability.Setup(ctx, observability.Process{Service: "dashboard", Instance: cfg.InstanceID,
		LogLevel: cfg.LogLevel}, observability.Config{Environment: cfg.Environment}, stdout)
	if err != nil {
		return err
	}
	log := tel.Log
	log.Info("starting", "config", config.Describe(cfg))

	sctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	store, err := control.OpenStore(sctx, cfg.LabDatabaseURL)
	if err != nil {
		return err
	}
	defer store.Close()
	conn, err := bus.Dial(sctx, cfg.AMQPURL, cfg.InstanceID, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := bus.NewPublisher(conn, log)

	src, err := wire(ctx, cfg, log, tel.Registry)
	if err != nil {
		return err
	}

	s, err := newServer(ctx, cfg, log, src, store, pub, conn)
	if err != nil {
		return err
	}
	// The exercises run here, on the same parts, keeping their progress in database lab
	// (a pool of their own: the store's is sized for its few reads).
	exs, err := exercises.Load(exercises.Builtin())
	if err != nil {
		return fmt.Errorf("built-in exercises: %w", err)
	}
	pool, err := pg.Open(sctx, cfg.LabDatabaseURL, func(c *pgxpool.Config) { c.MaxConns = 4 })
	if err != nil {
		return fmt.Errorf("open lab database for exercises: %w", err)
	}
	defer pool.Close()
	if err := s.attachExercises(ctx, pool, exs); err != nil {
		return err
	}
	go s.pollHealth(ctx, cfg.HealthInterval)
	go s.watchLinks(ctx, cfg.LinkProbeInterval)
	// Changes made elsewhere (lab settings|fault|reset, exercises, a one-shot fault
	// firing in a service) reach the timeline too.
	go s.watchChanges(ctx, store, conn, changesResync)
	h := s.routes(func(h http.Handler) http.Handler { return tel.Handler(h, httpx.SaneURL) }, func(mux *http.ServeMux) {
		mux.Handle("GET /metrics", promhttp.HandlerFor(tel.Registry, promhttp.HandlerOpts{Registry: tel.Registry}))
		if cfg.Pprof {
			httpx.Profiler(mux)
		}
	})
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	err = httpx.ServeListener(ctx, ln, h, cfg.ShutdownTimeout, log)
	s.traffic.stop()
	sdctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	_ = tel.Shutdown(sdctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// newServer builds the server from its dependencies. amqp may be nil (no DLQ replay);
// pub may be nil (changes are stored, and reach the services at their next re-read).
// Settings and faults can be changed only when store is the real control.Store: every
// change goes through a control.Plane, the one code path of every face.
func newServer(ctx context.Context, cfg Config, log *slog.Logger, src Sources, store settingsStore, pub *bus.Publisher, amqp channels) (*server, error) {
	static, err := staticHandler()
	if err != nil {
		return nil, err
	}
	if _, err := grafanaLinks(panelDefs); err != nil {
		return nil, err
	}
	client := httpx.NewClient(5 * time.Second)
	s := &server{cfg: cfg, log: log, src: src.withDefaults(), settings: store, amqp: amqp,
		prom: &promClient{base: cfg.PrometheusURL, http: client}, gateway: &gatewayClient{base: cfg.GatewayURL, http: client},
		sessions: newSessions(256), arch: views.ShopArch(), panels: panelDefs, static: static,
		orders: newOrdersAPI(cfg.OrdersURL)}
	if s.rabbit, err = newRabbitAdmin(cfg.RabbitMQManagementURL, cfg.AMQPURL, client); err != nil {
		log.Warn("DLQ view off", "err", err)
		s.rabbit = nil
	}
	if cs, ok := store.(*control.Store); ok {
		s.plane = &control.Plane{Store: cs, Pub: pub, Running: s.running,
			OnChange: func(ch control.Change) { broadcast(s.src.Hub, "setting", s.publicChange(ch)) }}
	}
	grafanaHealth := cmp.Or(cfg.GrafanaHealthURL, cfg.GrafanaURL)
	s.jaegerUI = newUIProbe(views.UI{Name: "Jaeger's UI", Base: cfg.JaegerUIURL, Without: "lab up builds Jaeger without it"},
		strings.TrimRight(cfg.JaegerURL, "/")+"/", jaegerUIAnswers, client)
	s.grafana = newUIProbe(views.UI{Name: "Grafana", Base: cfg.GrafanaURL, Without: "lab up runs none"},
		strings.TrimRight(grafanaHealth, "/")+"/api/health", grafanaAnswers, client)
	if s.hosts, err = newHostFilter(cfg.HTTPAddr, cfg.Hosts); err != nil {
		return nil, err
	}
	s.traffic = &traffic{gw: s.gateway, log: log, base: ctx,
		onChange: func(st views.TrafficState) { broadcast(s.src.Hub, "traffic", st) }}
	return s, nil
}
