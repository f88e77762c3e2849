// Package registry is the lab's service registry: each running instance of a service
// registers its URL in the lab database's instances table and renews the row with a
// heartbeat (a TTL lease); a client such as the gateway lists the instances of a
// service whose lease is fresh. The app kit registers every service, so no service has
// code of its own for it.
//
// PostgreSQL, not Consul or Eureka: the lab runs PostgreSQL already, and a table with
// a heartbeat column is the whole idea of a registry in twenty lines a learner can
// read. What a real registry adds (gossip between registry nodes, health checks run by
// the registry itself, DNS answers) is in docs/patterns/service-discovery.md. The
// registry only says who claims to be alive; whether an instance can serve is the
// client's health check (the gateway's /readyz probes).
package registry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Heartbeat is how often an instance renews its row; StaleAfter is when a row that was
// not renewed no longer counts (three missed heartbeats: a slow database or one lost
// write does not drop a live instance).
const (
	Heartbeat  = 2 * time.Second
	StaleAfter = 6 * time.Second
)

// Instance is one registered instance of a service.
type Instance struct {
	Service   string
	ID        string // the instance id: catalog-2
	URL       string // where it serves HTTP: http://127.0.0.1:9102
	Version   string // the version it runs: v1, or v2 for a canary (empty: v1)
	Heartbeat time.Time
}

// Registry reads and writes the instances table of a lab database (migrated by
// control.OpenStore).
type Registry struct {
	pool *pgxpool.Pool
}

// Open connects to the lab database at url. The table must exist (control.OpenStore
// migrates it, and every service opens the store first).
func Open(ctx context.Context, url string) (*Registry, error) {
	pool, err := pg.Open(ctx, url, func(c *pgxpool.Config) { c.MaxConns = 2 }) // one write every Heartbeat, one read a second
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return &Registry{pool: pool}, nil
}

// Close closes the pool.
func (r *Registry) Close() { r.pool.Close() }

// Register upserts in's row with a fresh heartbeat (the database's clock, so the
// instances' clocks need not agree).
func (r *Registry) Register(ctx context.Context, in Instance) error {
	version := in.Version
	if version == "" {
		version = "v1"
	}
	_, err := r.pool.Exec(ctx, `INSERT INTO instances (service, instance, url, version, heartbeat_at) VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (service, instance) DO UPDATE SET url = EXCLUDED.url, version = EXCLUDED.version, heartbeat_at = now()`,
		in.Service, in.ID, in.URL, version)
	if err != nil {
		return fmt.Errorf("register %s: %w", in.ID, err)
	}
	return nil
}

// Deregister deletes the row of instance id of service: a graceful stop leaves the
// registry at once instead of StaleAfter later.
func (r *Registry) Deregister(ctx context.Context, service, id string) error {
	if _, err := r.pool.Exec(ctx, `DELETE FROM instances WHERE service = $1 AND instance = $2`, service, id); err != nil {
		return fmt.Errorf("deregister %s: %w", id, err)
	}
	return nil
}

// Live lists the instances of service whose heartbeat is younger than StaleAfter, by id.
func (r *Registry) Live(ctx context.Context, service string) ([]Instance, error) {
	rows, err := r.pool.Query(ctx, `SELECT service, instance, url, version, heartbeat_at FROM instances
		WHERE service = $1 AND heartbeat_at > now() - make_interval(secs => $2) ORDER BY instance`, service, StaleAfter.Seconds())
	if err != nil {
		return nil, fmt.Errorf("list %s instances: %w", service, err)
	}
	defer rows.Close()
	var out []Instance
	for rows.Next() {
		var in Instance
		if err := rows.Scan(&in.Service, &in.ID, &in.URL, &in.Version, &in.Heartbeat); err != nil {
			return nil, fmt.Errorf("list %s instances: %w", service, err)
		}
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s instances: %w", service, err)
	}
	return out, nil
}

// Keep registers in every Heartbeat until ctx ends, then deregisters it (bounded by a
// second: a stopping instance must not hang on the database). A failed heartbeat is
// logged and tried again at the next tick: the instance keeps serving, and its row goes
// stale only if the database stays away for StaleAfter.
func (r *Registry) Keep(ctx context.Context, in Instance, log *slog.Logger) error {
	t := time.NewTicker(Heartbeat)
	defer t.Stop()
	for {
		if err := r.Register(ctx, in); err != nil && ctx.Err() == nil {
			log.Warn("registry heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			return r.Deregister(dctx, in.Service, in.ID)
		case <-t.C:
		}
	}
}
