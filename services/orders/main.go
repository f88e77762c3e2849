// Command orders takes orders and sees each one through the checkout saga (DESIGN §5).
//
// Placing an order checks it, prices it from catalog, and in ONE transaction stores it
// and emits order.placed through the outbox. From there the saga runs in the mode the lab
// was in when the order was placed:
//   - choreography: nobody holds the whole flow. Payments, inventory and shipping react
//     to each other's events; orders listens to all of them, logs each as a step of the
//     order and confirms or cancels it when the outcome is known.
//   - orchestration: the orchestrator in this service (a persisted state machine, see
//     package saga) sends each participant a command, waits for the reply, compensates
//     failures and timeouts, and survives restarts because its state is a database row.
//
// Either way the order ends with order.confirmed or order.cancelled, which notifications
// and payments (capture) react to.
package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"microlab/services/contracts"
	"microlab/services/contracts/catalogpb"
	"microlab/services/platform/app"
	"microlab/services/platform/httpx"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Config is everything orders reads from its environment.
type Config struct {
	app.Base
	CatalogURL     string        `env:"CATALOG_URL" default:"http://127.0.0.1:8102"`
	CatalogTimeout time.Duration `env:"CATALOG_TIMEOUT" default:"2s"`
	// CatalogRetries: how often a failed GET to catalog is tried again.
	CatalogRetries int `env:"CATALOG_RETRIES" default:"0"`
	// CatalogGRPCAddr is catalog's gRPC server (its GRPC_ADDR), used at
	// catalog.transport=grpc.
	CatalogGRPCAddr  string `env:"CATALOG_GRPC_ADDR" default:"127.0.0.1:8202"`
	NotificationsURL string `env:"NOTIFICATIONS_URL" default:"http://127.0.0.1:8107"`
	// NotificationsTimeout bounds the call to notifications (notifications.mode=sync).
	NotificationsTimeout time.Duration `env:"NOTIFICATIONS_TIMEOUT" default:"2s"`
	// The lab's http.timeout and http.retries override the timeouts and retries above,
	// live; at "env" these values apply.
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// liveClient is a client for calling another service whose timeout (per attempt) and
// retries (idempotent calls only, with backoff and jitter) are the lab's http.timeout and
// http.retries at the moment of each call, else timeout and retries. The client itself
// has no timeout: httpx.Retry bounds every attempt.
func liveClient(a *app.App, timeout time.Duration, retries int) *http.Client {
	c := a.HTTPClient(0)
	c.Transport = &httpx.Retry{Next: c.Transport,
		Timeout: liveTimeout(a, timeout),
		Retries: func() int {
			if n, ok := a.Settings.Current().HTTPRetries(); ok {
				return n
			}
			return retries
		}}
	return c
}

// liveTimeout is the lab's http.timeout at the moment of each call, else timeout.
func liveTimeout(a *app.App, timeout time.Duration) func() time.Duration {
	return func() time.Duration {
		if d, ok := a.Settings.Current().HTTPTimeout(); ok {
			return d
		}
		return timeout
	}
}

// catalogGRPC is the gRPC connection to catalog: plaintext like the services' HTTP (the
// lab's network is private), with otelgrpc's client stats handler (a client span per
// call, its context sent in the call's metadata) and the RED metrics. grpc.NewClient
// connects lazily, on the first call, and then keeps one HTTP/2 connection that every
// call shares (reconnecting by itself if catalog restarts).
func catalogGRPC(a *app.App, addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(a.Tel.GRPCClientHandler()), grpc.WithUnaryInterceptor(a.Tel.GRPCClientMetrics()))
	if err != nil {
		return nil, fmt.Errorf("catalog grpc client %s: %w", addr, err)
	}
	return conn, nil
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	mig, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	opts := app.Options{Name: "orders", DefaultPort: 8103, Migrations: mig, Consumes: true, Conflict: versionConflict}
	var cfg Config
	if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
		return err
	}
	a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return err
	}
	conn, err := catalogGRPC(a, cfg.CatalogGRPCAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	svc := &Service{
		app:   a,
		store: &Store{pool: a.DB},
		catalog: &Catalog{base: strings.TrimRight(cfg.CatalogURL, "/"),
			client:  liveClient(a, cfg.CatalogTimeout, cfg.CatalogRetries),
			grpc:    catalogpb.NewCatalogClient(conn),
			useGRPC: func() bool { return a.Settings.Current().CatalogGRPC() },
			timeout: liveTimeout(a, cfg.CatalogTimeout)},
		notifier: &Notifier{base: strings.TrimRight(cfg.NotificationsURL, "/"),
			client: liveClient(a, cfg.NotificationsTimeout, 0)},
		history:   newHistory(a.DB, a.Tel.Registry),
		rebuilder: &Rebuilder{store: &Store{pool: a.DB}, jobs: make(chan rebuildJob, 1), log: a.Log, tel: a.Tel},
	}
	a.Tel.Metrics.InitSaga([]string{contracts.ModeChoreography, contracts.ModeOrchestration},
		[]string{statusConfirmed, statusCancelled}, compensationReasons)
	a.Consume(queue, svc.routes())
	// The order history read model (read.model=cqrs) keeps itself from events on a queue
	// of its own, whatever the setting: it is current whenever the gateway switches to it.
	a.Consume(historyQueue, svc.history.routes())
	// The scanner runs in every instance; FOR UPDATE SKIP LOCKED shares the work.
	a.Go("saga timeouts", svc.watchTimeouts)
	a.Go("choreography deadline", svc.watchOverdue)
	// Projection rebuilds run here, one at a time, stopped with the service.
	a.Go("projection rebuild", svc.rebuilder.run)
	svc.instrumentOverdue()
	svc.api(a.Mux())
	return a.Run(ctx)
}
