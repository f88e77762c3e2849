// Command catalog serves the shop's products: names and prices, in integer cents. It is
// read-only for now (seeded by its migration) and emits nothing, so it never connects to
// RabbitMQ. Stock is not here: inventory owns it, and the two agree only on SKUs.
package main

import (
	"context"
	"embed"
	"io"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

func main() { app.Main("catalog", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	// Consumes is false: catalog neither consumes nor emits events (yet), so it has no
	// bus connection and no outbox; app.Start skips both.
	opts := app.Options{Name: "catalog", DefaultPort: 8102, Migrations: migrations}
	return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) { api(a, &Store{pool: a.DB}) })
}
