// Command gateway is the shop's only public door: /api/v1. It authenticates callers
// (JWTs issued by users, verified with users' public key), validates every input at the
// edge, rate-limits each client, and forwards to the internal services with a timeout
// and a circuit breaker per upstream. It also aggregates the home page (a Backend For
// Frontend), degrading part by part instead of failing whole. And it is the strangler
// fig's facade (strangler.go): strangler.routes sends each route family to the
// microservices or to the monolith, and tokens of both issuers verify.
//
// It owns no database and consumes one event only, product.price_changed, on a queue of
// each instance's own (see Gateway.follow): its only state is in memory (breakers,
// rate-limit buckets, the cached key set, the product response cache, catalog's
// instances as last probed with gateway.discovery=registry, the canary's window of v2's
// answers), and losing it on a restart is harmless (a canary is judged afresh).
package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/registry"
)

// Config is everything the gateway reads from its environment.
type Config struct {
	app.Base
	UsersURL   string `env:"USERS_URL" default:"http://127.0.0.1:8101"`
	CatalogURL string `env:"CATALOG_URL" default:"http://127.0.0.1:8102"`
	OrdersURL  string `env:"ORDERS_URL" default:"http://127.0.0.1:8103"`
	// MonolithURL is the monolith (services/monolith), which serves the route families
	// strangler.routes gives it; also a second source of token keys (its JWKS).
	MonolithURL string `env:"MONOLITH_URL" default:"http://127.0.0.1:8108"`
	// UpstreamTimeout bounds every call to an upstream (each attempt of a retried GET).
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" default:"5s"`
	// UpstreamRetries: how often a failed idempotent call (GET, a POST with an
	// Idempotency-Key) is tried again, with exponential backoff and jitter.
	UpstreamRetries int `env:"UPSTREAM_RETRIES" default:"1"`
	// A breaker opens after BreakerFailures consecutive failures (5xx or no answer) and
	// stays open for BreakerOpenFor before letting one trial request through.
	BreakerFailures int           `env:"BREAKER_FAILURES" default:"5"`
	BreakerOpenFor  time.Duration `env:"BREAKER_OPEN_FOR" default:"10s"`
	// Per client (user id, else IP): a token bucket refilled at RateLimitRPS per second
	// holding at most RateLimitBurst. RATE_LIMIT_RPS=0 switches rate limiting off.
	RateLimitRPS   float64 `env:"RATE_LIMIT_RPS" default:"100"`
	RateLimitBurst int     `env:"RATE_LIMIT_BURST" default:"200"`
	// The lab's settings override the last five live (gateway.breaker.*,
	// gateway.rate_limit.*, http.timeout, http.retries); at "env" these values apply.
}

func (c Config) validate() error {
	var problems []string
	for name, raw := range map[string]string{"USERS_URL": c.UsersURL, "CATALOG_URL": c.CatalogURL, "ORDERS_URL": c.OrdersURL, "MONOLITH_URL": c.MonolithURL} {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("%s=%q: want an http(s) URL", name, raw))
		}
	}
	if c.UpstreamTimeout <= 0 {
		problems = append(problems, "UPSTREAM_TIMEOUT must be positive")
	}
	if c.UpstreamRetries < 0 || c.UpstreamRetries > 5 {
		problems = append(problems, "UPSTREAM_RETRIES must be from 0 to 5")
	}
	if c.BreakerFailures < 1 {
		problems = append(problems, "BREAKER_FAILURES must be at least 1")
	}
	if c.BreakerOpenFor <= 0 {
		problems = append(problems, "BREAKER_OPEN_FOR must be positive")
	}
	if c.RateLimitRPS < 0 || (c.RateLimitRPS > 0 && c.RateLimitBurst < 1) {
		problems = append(problems, "RATE_LIMIT_RPS must be >= 0 (0 = off) and RATE_LIMIT_BURST >= 1")
	}
	if len(problems) > 0 {
		return fmt.Errorf("config: %s", strings.Join(problems, "; "))
	}
	return nil
}

func main() { app.Main("gateway", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	a, err := start(ctx, getenv, stdout)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// start reads the config and builds the gateway on the app kit, ready to Run.
func start(ctx context.Context, getenv func(string) string, stdout io.Writer) (*app.App, error) {
	// No Migrations (no database) and no Consumes (no work queue, nothing to publish):
	// App.DB and App.Bus stay nil. The app kit follows lab.control on a connection of its
	// own, so the lab's changes apply at once; the response cache hears price changes on
	// another (opened in the background: without a broker the gateway still serves, and
	// the TTL alone bounds staleness).
	opts := app.Options{Name: "gateway", DefaultPort: 8000}
	var cfg Config
	if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return nil, err
	}
	g := New(cfg, a.Log, a.Tel)
	g.Follow(a.Settings.Current) // the lab's settings, live (the watcher applies each change as announced)
	a.Go("rate limiter eviction", g.limiter.Run)
	if cfg.AMQPURL != "" {
		conn := bus.Open(cfg.AMQPURL, cfg.InstanceID+"/cache", a.Log)
		a.Go("cache invalidation", func(ctx context.Context) error {
			defer conn.Close()
			return g.follow(ctx, conn, cfg.InstanceID, a.Tel)
		})
	}
	// The service registry, read only while gateway.discovery=registry (pool.refresh).
	reg, err := registry.Open(ctx, cfg.LabDatabaseURL)
	if err != nil {
		return nil, err
	}
	g.catalog.pool.list = func(ctx context.Context) ([]registry.Instance, error) { return reg.Live(ctx, "catalog") }
	a.Go("catalog discovery", func(ctx context.Context) error {
		defer reg.Close()
		return g.catalog.pool.Run(ctx)
	})
	// The canary's rollback, written through the control plane like any face's change
	// (canary.go): stored, on the timeline with its reason, announced to every instance.
	g.catalog.pool.rollback = func(ctx context.Context, why string) error {
		return rollbackWeights(ctx, a.Plane(), why)
	}
	a.Go("canary rollback", func(ctx context.Context) error { return g.catalog.pool.RunCanary(ctx, a.Log) })
	g.Mount(a.Mux())
	return a, nil
}
