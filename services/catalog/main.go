// Command catalog serves the shop's products: names and prices, in integer cents, seeded
// by its migration. A price can be changed on its internal API (never through the public
// gateway), and each change announces product.price_changed through the outbox, so
// catalog connects to RabbitMQ (the relay needs a publisher) though it consumes no queue.
// Stock is not here: inventory owns it, and the two agree only on SKUs.
//
// It answers the same product lookup two ways: its HTTP/JSON API (api.go) and gRPC
// (grpc.go, on GRPC_ADDR); orders picks one per call by the lab's catalog.transport.
package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"net"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Config is everything catalog reads from its environment.
type Config struct {
	app.Base
	// GRPCAddr is where the gRPC server listens: natively catalog's HTTP port + 100
	// (8202), clear of every other service's ports and of their scaled instances'
	// (+1000 each; lab/stack).
	GRPCAddr string `env:"GRPC_ADDR" default:"127.0.0.1:8202"`
}

func main() { app.Main("catalog", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	// Consumes: catalog registers no queue, but emitting product.price_changed needs the
	// bus and the outbox (as users does for user.registered).
	opts := app.Options{Name: "catalog", DefaultPort: 8102, Migrations: migrations, Consumes: true}
	var cfg Config
	if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
		return err
	}
	a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return err
	}
	store := &Store{pool: a.DB}
	api(a, store, &release{version: cfg.Version, cur: a.Settings.Current})
	// Listen before serving anything: a taken port fails the start, like HTTP_ADDR's.
	ln, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listen %s: %w", cfg.GRPCAddr, err)
	}
	a.Log.Info("grpc listening", "addr", ln.Addr().String())
	srv := newGRPCServer(a.Tel, store)
	a.Go("grpc server", func(ctx context.Context) error { return serveGRPC(ctx, srv, ln) })
	return a.Run(ctx)
}
