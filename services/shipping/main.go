// Command shipping schedules shipments for paid, reserved orders. It fails,
// deterministically, for destination country "XX" (a place no carrier serves), which is
// how a learner triggers the saga's deepest compensation: stock released and payment
// refunded after two steps had already succeeded.
package main

import (
	"context"
	"embed"
	"io"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Config is everything shipping reads from its environment.
type Config struct {
	app.Base
}

func main() { app.Main("shipping", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts := app.Options{Name: "shipping", DefaultPort: 8106, Migrations: migrations, Consumes: true}
	var cfg Config
	if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
		return err
	}
	a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return err
	}
	svc := &Service{app: a, store: &Store{pool: a.DB}}
	a.Consume(queue, svc.routes())
	svc.api(a.Mux())
	return a.Run(ctx)
}
