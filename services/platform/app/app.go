// Package app is the start-up and shutdown sequence every shop service shares, so each
// service's main.go only says what is particular to it.
//
// Start: log the config (masked) → open and migrate the database → read the lab settings
// (before consuming or serving anything) → connect to RabbitMQ. Run: relay the outbox,
// follow lab.control, consume, serve HTTP; on SIGTERM stop intake, let in-flight work
// finish and ack, relay what it emitted, close.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microlab/observability"

	"microlab/services/contracts"
	"microlab/services/platform"
	"microlab/services/platform/bus"
	"microlab/services/platform/config"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
	"microlab/services/platform/inbox"
	"microlab/services/platform/outbox"
	"microlab/services/platform/pg"
	"microlab/services/platform/registry"
)

// Base is the configuration every service shares. Services embed it in their Config.
type Base struct {
	HTTPAddr        string        `env:"HTTP_ADDR"`
	DatabaseURL     string        `env:"DATABASE_URL"`
	AMQPURL         string        `env:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/"`
	LabDatabaseURL  string        `env:"LAB_DATABASE_URL" default:"postgres://lab:lab@127.0.0.1:5432/lab"`
	InstanceID      string        `env:"INSTANCE_ID"`
	LogLevel        string        `env:"LOG_LEVEL" default:"info"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" default:"10s"`
	StartTimeout    time.Duration `env:"START_TIMEOUT" default:"60s"`
	Prefetch        int           `env:"AMQP_PREFETCH" default:"20"`
	Workers         int           `env:"AMQP_WORKERS" default:"4"`
	// Pprof serves Go's profiler at /debug/pprof/ on the service's own address (off by
	// default: the gateway's address is the shop's public door). `lab up --pprof` sets it.
	Pprof bool `env:"PPROF"`
	// Version is the version of the service this instance runs (control.Versions): v1,
	// or v2 for catalog's canary (lab up sets VERSION=v2 on catalog-v2-1). It is the
	// service.version of every span, the version label of microlab_build_info, and what
	// the instance registers in the service registry, where the gateway splits traffic
	// by it (deploy.catalog.weights).
	Version string `env:"VERSION" default:"v1"`

	Telemetry observability.Config
}

// Options say what a service needs.
type Options struct {
	Name        string
	DefaultPort int    // 127.0.0.1:<port> unless HTTP_ADDR says otherwise
	Migrations  fs.FS  // the service's own migrations (at the root, or under migrations/); nil: no database
	Consumes    bool   // connects to RabbitMQ to consume and emit events (without: only to follow lab.control)
	Version     string // build version, logged (empty: Base.Version)
	// Conflict, if set, reports the service's own optimistic-concurrency conflicts:
	// another transaction won a race for the same row (orders' event stream version).
	// The message is retried at once like a deadlock, never dead-lettered: the retry
	// reads what the winner wrote and succeeds. nil: none.
	Conflict func(error) bool
}

// App is a started service.
type App struct {
	Name     string
	Base     Base
	Log      *slog.Logger
	Tel      *observability.Telemetry
	DB       *pgxpool.Pool  // nil without Migrations
	Bus      *bus.Conn      // consumes: the queues, lab.control; nil unless Consumes
	PubConn  *bus.Conn      // publishes, through Pub; nil unless Consumes
	Pub      *bus.Publisher // outbox relay, retries, dead-letters; nil unless Consumes
	Outbox   *outbox.Outbox // nil without DB or bus
	Settings *control.Watcher

	store     *control.Store
	registry  *registry.Registry // this instance's lease in the lab's service registry
	announced *bus.Conn          // lab.control alone, for a service that consumes nothing (the gateway); nil otherwise
	conflict  func(error) bool   // Options.Conflict
	mux       *http.ServeMux
	consumers []consumer
	loops     []loop
	ready     atomic.Bool
	readyMu   sync.Mutex // orders "became ready" against "shutting down"

	// Lab faults (faults.go).
	plane      *control.Plane // claims one-shot faults
	faultNudge chan struct{}  // a settings change: look at the faults again
	crashed    chan error     // a crash fault fired
	dupLeft    atomic.Int64   // messages still to publish twice (duplicate_delivery)
	dupFault   atomic.Pointer[control.Fault]
	inFlight   InFlight // requests and messages being handled: what a crash interrupts
}

type consumer struct {
	q     bus.Queue
	h     bus.Handler
	types []string
}

type loop struct {
	name string
	f    func(context.Context) error
}

// LoadConfig reads cfg (a pointer to a struct embedding Base) and fills Base's defaults
// that depend on the service (its address and database).
func LoadConfig(getenv config.Getenv, opts Options, cfg any, base func() *Base) error {
	if err := config.Load(getenv, cfg); err != nil {
		return err
	}
	b := base()
	if b.HTTPAddr == "" {
		b.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", opts.DefaultPort)
	}
	if b.DatabaseURL == "" && opts.Migrations != nil {
		b.DatabaseURL = fmt.Sprintf("postgres://%[1]s:%[1]s@127.0.0.1:5432/%[1]s", opts.Name)
	}
	if b.InstanceID == "" {
		b.InstanceID = DefaultInstanceID(getenv, opts.Name)
	}
	if !slices.Contains(control.Versions, b.Version) {
		return fmt.Errorf("config: VERSION=%q: want one of %s", b.Version, strings.Join(control.Versions, ", "))
	}
	return nil
}

// DefaultInstanceID names this process when INSTANCE_ID is unset (`lab up` always sets
// it: "payments-2"). The name is the service.instance.id of its spans, the instance of
// its logs and AMQP connections, the target of a per-instance fault (which must begin
// "<service>-"), so it is unique per process and one a learner can find again:
//
//   - the first process of its container (PID 1, as the Dockerfile's ENTRYPOINT runs
//     it): "<service>-<host name>". Docker names a container's host after the
//     container's id, so each `docker compose --scale payments=2` replica differs and
//     the name is the one `docker ps` shows; a Kubernetes pod's host name is the pod's
//     name, already "payments-7d9f…", and is taken as it is.
//   - another process in a container (under an init, in a dev container):
//     "<service>-<host name>-<pid>", since the host name is shared there.
//   - elsewhere: "<service>-<pid>", the process `ps` shows.
func DefaultInstanceID(getenv config.Getenv, service string) string {
	host, _ := os.Hostname()
	return instanceID(service, host, os.Getpid(), inContainer(getenv))
}

func instanceID(service, host string, pid int, contained bool) string {
	switch {
	case host == "" || (pid != 1 && !contained):
		return fmt.Sprintf("%s-%d", service, pid)
	case pid != 1:
		return fmt.Sprintf("%s-%s-%d", service, host, pid)
	case strings.HasPrefix(host, service+"-"):
		return host
	default:
		return service + "-" + host
	}
}

// inContainer says whether this process runs in a container, by the markers Docker
// (/.dockerenv), Podman (/run/.containerenv) and Kubernetes (KUBERNETES_SERVICE_HOST)
// leave.
func inContainer(getenv config.Getenv) bool {
	if getenv("KUBERNETES_SERVICE_HOST") != "" {
		return true
	}
	for _, marker := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(marker); err == nil {
			return true
		}
	}
	return false
}

// Start builds the service's dependencies in order. cfg is the full config (logged
// once, masked); base points at its embedded Base.
func Start(ctx context.Context, opts Options, base Base, cfg any, stdout io.Writer) (*App, error) {
	version := opts.Version
	if version == "" {
		version = base.Version
	}
	tel, err := observability.Setup(ctx, observability.Process{Service: opts.Name, Version: version,
		Instance: base.InstanceID, LogLevel: base.LogLevel}, base.Telemetry, stdout)
	if err != nil {
		return nil, err
	}
	log := tel.Log
	log.Info("starting", "version", version, "config", config.Describe(cfg))
	a := &App{Name: opts.Name, Base: base, Log: log, Tel: tel, mux: http.NewServeMux(), conflict: opts.Conflict,
		faultNudge: make(chan struct{}, 1), crashed: make(chan error, 1)}
	sctx, cancel := context.WithTimeout(ctx, base.StartTimeout)
	defer cancel()
	if err := a.start(sctx, opts); err != nil {
		a.close()
		return nil, err
	}
	httpx.Health(a.mux, a.readiness)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(tel.Registry, promhttp.HandlerOpts{Registry: tel.Registry}))
	if a.Base.Pprof {
		httpx.Profiler(a.mux)
	}
	a.instrument()
	return a, nil
}

// transient: the errors a consumer retries without dead-lettering, the database's
// (pg.IsTransient) and the service's own conflicts (Options.Conflict).
func (a *App) transient(err error) bool {
	return pg.IsTransient(err) || (a.conflict != nil && a.conflict(err))
}

// instrument registers the metrics read at scrape time: the settings in force and,
// with an outbox, its backlog.
func (a *App) instrument() {
	a.Tel.Info("lab_setting_info", "1 for each lab setting in force in this process.", []string{"key", "value"},
		func() [][]string {
			var out [][]string
			for k, v := range a.Settings.Current().Values {
				out = append(out, []string{k, v})
			}
			return out
		})
	a.Tel.Info("lab_fault_active", "1 for each kind of lab fault in force on this instance.", []string{"service", "kind"},
		a.faultKinds)
	if a.Outbox != nil {
		a.Tel.GaugeFunc(2*time.Second, func(ctx context.Context) (map[string]float64, error) {
			n, age, err := a.Outbox.Backlog(ctx)
			return map[string]float64{"outbox_backlog_messages": float64(n),
				"outbox_oldest_unsent_age_seconds": age.Seconds()}, err
		}, map[string]string{
			"outbox_backlog_messages":          "Outbox rows not yet published.",
			"outbox_oldest_unsent_age_seconds": "Age of the oldest unpublished outbox row (0: none).",
		})
	}
}

// HTTPClient returns a client for calling other services: bounded by timeout, with a
// client span per call whose context travels in the traceparent header.
func (a *App) HTTPClient(timeout time.Duration) *http.Client {
	c := httpx.NewClient(timeout)
	c.Transport = a.Tel.Transport(c.Transport)
	return c
}

func (a *App) start(ctx context.Context, opts Options) error {
	var err error
	if opts.Migrations != nil {
		// SQL spans (otelpgx, one per statement: see pg.Tracer) join the trace of the
		// request or message being handled; queries outside one (pollers) make no spans.
		tracer := pg.NewTracer(a.Tel.TracerProvider())
		if a.DB, err = pg.Open(ctx, a.Base.DatabaseURL, func(c *pgxpool.Config) { c.ConnConfig.Tracer = tracer }); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		kit, err := fs.Sub(platform.Migrations(), "migrations")
		if err != nil {
			return err
		}
		if err := pg.Migrate(ctx, a.DB, kit, "goose_platform"); err != nil {
			return fmt.Errorf("platform tables: %w", err)
		}
		own := opts.Migrations
		if fi, err := fs.Stat(own, "migrations"); err == nil && fi.IsDir() {
			if own, err = fs.Sub(own, "migrations"); err != nil {
				return err
			}
		}
		if err := pg.Migrate(ctx, a.DB, own, "goose_db_version"); err != nil {
			return fmt.Errorf("%s tables: %w", opts.Name, err)
		}
	}
	// Settings before anything consumes or serves: an instance must never act on
	// defaults that the lab has changed.
	if a.store, err = control.OpenStore(ctx, a.Base.LabDatabaseURL); err != nil {
		return err
	}
	nudge := func(_, _ control.Settings) {
		select {
		case a.faultNudge <- struct{}{}:
		default:
		}
	}
	if a.Settings, err = control.NewWatcher(ctx, a.store, a.Log, nudge); err != nil {
		return err
	}
	a.plane = &control.Plane{Store: a.store} // Pub below, once there is one
	if a.registry, err = registry.Open(ctx, a.Base.LabDatabaseURL); err != nil {
		return err
	}
	a.Log.Info("lab settings read", "settings", a.Settings.Current().Values, "revision", a.Settings.Current().Revision)
	if opts.Consumes {
		// Two connections: RabbitMQ blocks a connection that publishes during a memory or
		// disk alarm (stops reading it, acks included), and consumers must keep acking
		// then, or a backlog — the usual cause of a memory alarm — could never drain.
		// The management UI shows them as <instance>/consume and <instance>/publish.
		if a.Bus, err = bus.Dial(ctx, a.Base.AMQPURL, a.Base.InstanceID+"/consume", a.Log); err != nil {
			return err
		}
		a.Bus.Instrument(a.Tel, "consume")
		if a.PubConn, err = bus.Dial(ctx, a.Base.AMQPURL, a.Base.InstanceID+"/publish", a.Log); err != nil {
			return err
		}
		a.PubConn.Instrument(a.Tel, "publish")
		a.Pub = bus.NewPublisher(a.PubConn, a.Log).Instrument(a.Tel)
		a.Pub.Duplicate = a.duplicateNext
		a.plane.Pub = a.Pub
		if a.DB != nil {
			a.Outbox = outbox.New(a.DB, a.Pub, func() bool { return a.Settings.Current().Outbox() }, a.Log)
		}
	} else if a.Base.AMQPURL != "" {
		// A service that consumes nothing (the gateway) still follows lab.control, so it
		// applies a change as soon as it is announced, like every other instance, not at
		// its next periodic re-read. It has no other use for the broker, so the connection
		// is opened in the background: without a broker the service starts all the same
		// and applies changes at the re-read (control.Watcher.Resync).
		a.announced = bus.Open(a.Base.AMQPURL, a.Base.InstanceID+"/control", a.Log)
		// The same connection announces what this service changes through Plane (the
		// gateway's canary rollback), so every instance applies it at once.
		a.plane.Pub = bus.NewPublisher(a.announced, a.Log)
	}
	return nil
}

// Mux is where the service registers its HTTP routes (/healthz and /readyz are there).
func (a *App) Mux() *http.ServeMux { return a.mux }

// Emit records an event or command for publication (see outbox.Outbox.Emit).
func (a *App) Emit(ctx context.Context, env contracts.Envelope) error {
	if a.Outbox == nil {
		return errors.New("emit: service has no outbox")
	}
	return a.Outbox.Emit(ctx, env)
}

// Consume registers a queue and its handlers (see Pipeline).
func (a *App) Consume(q bus.Queue, routes bus.Routes) {
	inboxOn := func() bool { return a.Settings.Current().Inbox() }
	h := Pipeline(routes, a.DB, q.Service, inboxOn, a.Log, a.Tel, a.pipelineFaults())
	types := make([]string, 0, len(routes))
	for t := range routes {
		types = append(types, t)
	}
	a.consumers = append(a.consumers, consumer{q: q, h: h, types: types})
}

// Pipeline is what every message of a service goes through:
// recover → log → lab faults (latency, error_rate) → inbox (transaction + dedupe) →
// crash_after_commit → the handler of its type.
// A panic in a handler ends its transaction (pg.InTx rolls back on every path) before
// Recover turns it into an error; the message is then retried like any failure.
// Latency and error_rate act outside the transaction (a delay holds no connection);
// crash_after_commit must act inside it, to exit right after its commit.
func Pipeline(routes bus.Routes, db *pgxpool.Pool, consumer string, inboxOn func() bool, log *slog.Logger, tel *observability.Telemetry, faults Faults) bus.Handler {
	return bus.Chain(bus.Dispatch(routes),
		bus.Recover(),
		bus.Log(log),
		FaultMiddleware(faults),
		inbox.Middleware(db, consumer, inboxOn, log, tel),
		CrashAfterCommitMiddleware(faults),
	)
}

// Go registers a background loop that runs while the service takes work (e.g. the saga
// timeout scanner). It stops with intake, before the outbox's last relay.
func (a *App) Go(name string, f func(ctx context.Context) error) {
	a.loops = append(a.loops, loop{name: name, f: f})
}

func (a *App) readiness(ctx context.Context) error {
	if !a.ready.Load() {
		return errors.New("not started or shutting down")
	}
	if a.down() {
		return errors.New("down (lab fault)")
	}
	if a.DB != nil {
		if err := a.DB.Ping(ctx); err != nil {
			return fmt.Errorf("database: %w", err)
		}
	}
	return nil
}

// Run serves and consumes until ctx ends (SIGTERM), then shuts down gracefully.
func (a *App) Run(ctx context.Context) error {
	defer a.close()
	// Background work (outbox relay, settings) outlives intake so that events emitted by
	// the last in-flight handlers still get relayed.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	var bgWG, fgWG sync.WaitGroup
	run := func(wg *sync.WaitGroup, ctx context.Context, name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				a.Log.Error("background task stopped", "task", name, "err", err)
			}
		}()
	}
	if a.Outbox != nil {
		run(&bgWG, bg, "outbox relay", a.Outbox.Run)
		run(&bgWG, bg, "outbox prune", func(ctx context.Context) error {
			t := time.NewTicker(time.Minute)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					if err := a.Outbox.Prune(ctx, 10*time.Minute); err != nil {
						a.Log.Warn("outbox prune failed", "err", err)
					}
				}
			}
		})
	}
	announcements := a.Bus
	if announcements == nil {
		announcements = a.announced
	}
	run(&bgWG, bg, "settings", func(ctx context.Context) error { return a.Settings.Run(ctx, announcements) })

	fg, stopFg := context.WithCancel(ctx)
	defer stopFg()
	var subscribed sync.WaitGroup
	for _, c := range a.consumers {
		subscribed.Add(1)
		var once sync.Once
		opts := bus.ConsumeOptions{Prefetch: a.Base.Prefetch, Workers: a.Base.Workers,
			OnSubscribed: func() { once.Do(subscribed.Done) }, Telemetry: a.Tel, Types: c.types,
			Transient: a.transient, Paused: a.down, Retries: func() []time.Duration { return a.Settings.Current().RetryDelays() }}
		run(&fgWG, fg, "consume "+c.q.Name(), func(ctx context.Context) error {
			return bus.Consume(ctx, a.Bus, a.Pub, c.q, opts, c.h, a.Log)
		})
	}
	for _, l := range a.loops {
		run(&fgWG, fg, l.name, l.f)
	}
	run(&fgWG, fg, "lab faults", a.watchFaults)
	// Registered while serving: the lease ends (the row is deleted) as soon as shutdown
	// begins, so a client using the registry stops sending here before the server stops.
	run(&fgWG, fg, "service registry", func(ctx context.Context) error {
		return a.registry.Keep(ctx, registry.Instance{Service: a.Name, ID: a.Base.InstanceID, URL: advertised(a.Base.HTTPAddr), Version: a.Base.Version}, a.Log)
	})
	errc := make(chan error, 1)
	go func() {
		errc <- httpx.Serve(fg, a.Base.HTTPAddr, a.Tel.Handler(a.faultHTTP(a.mux), httpx.SaneURL), a.Base.ShutdownTimeout, a.Log)
	}()
	// Ready only once every queue exists and is consumed (see bus.ConsumeOptions).
	go func() {
		subscribed.Wait()
		a.readyMu.Lock()
		defer a.readyMu.Unlock()
		if fg.Err() == nil {
			a.ready.Store(true)
			a.Log.Info("ready")
		}
	}()

	var err, crash error
	select {
	case <-ctx.Done():
		a.Log.Info("shutting down", "grace", a.Base.ShutdownTimeout.String())
	case err = <-errc:
		errc = nil
	case crash = <-a.crashed:
		// A crash drops the consuming connection first, as a dying process would: what
		// it had taken and not acked goes back to the queue at once (no drain, no acks).
		a.Log.Warn("crashing (lab fault): dropping the consumer connection")
		if a.Bus != nil {
			_ = a.Bus.Close()
		}
	}
	a.readyMu.Lock()
	stopFg()
	a.ready.Store(false)
	a.readyMu.Unlock()
	fgWG.Wait()
	if errc != nil {
		err = <-errc
	}
	stopBg()
	bgWG.Wait()
	if crash != nil {
		return crash
	}
	if err != nil && !strings.Contains(err.Error(), "Server closed") {
		return err
	}
	a.Log.Info("stopped")
	return nil
}

func (a *App) close() {
	if a.Tel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := a.Tel.Shutdown(ctx); err != nil {
			a.Log.Warn("telemetry: spans not exported at shutdown", "err", err)
		}
		cancel()
	}
	if a.PubConn != nil {
		_ = a.PubConn.Close()
	}
	if a.Bus != nil {
		_ = a.Bus.Close()
	}
	if a.announced != nil {
		_ = a.announced.Close()
	}
	if a.store != nil {
		a.store.Close()
	}
	if a.registry != nil {
		a.registry.Close()
	}
	if a.DB != nil {
		a.DB.Close()
	}
}

// Main is a service's whole main function: run until SIGINT/SIGTERM, then exit 1 with
// one line on stderr if run failed. It is the only place a service exits.
func Main(name string, run func(ctx context.Context, getenv func(string) string, stdout io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		stop()
		os.Exit(1)
	}
}

// RunBase is the whole run function of a service configured by Base alone: load the
// config, start, let setup register queues and routes, and run until ctx ends.
func RunBase(ctx context.Context, opts Options, getenv func(string) string, stdout io.Writer, setup func(*App)) error {
	var cfg struct{ Base }
	if err := LoadConfig(getenv, opts, &cfg, func() *Base { return &cfg.Base }); err != nil {
		return err
	}
	a, err := Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return err
	}
	setup(a)
	return a.Run(ctx)
}

// Plane is the control plane as this service may change it: settings it writes itself
// (the gateway's canary rollback sets deploy.catalog.weights) are validated, stored,
// put on the timeline and announced like any other face's.
func (a *App) Plane() *control.Plane { return a.plane }

// advertised is the URL this instance registers: its HTTP address, with the host's name
// in place of a wildcard host (in a container, 0.0.0.0:8102 is reached by its hostname).
func advertised(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
