// Command catalog serves the shop's products: names and prices, in integer cents, seeded
// by its migration. A price can be changed on its internal API (never through the public
// gateway), and each change announces product.price_changed through the outbox, so
// catalog connects to RabbitMQ (the relay needs a publisher) though it consumes no queue.
// Stock is not here: inventory owns it, and the two agree only on SKUs.
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
	// Consumes: catalog registers no queue, but emitting product.price_changed needs the
	// bus and the outbox (as users does for user.registered).
	opts := app.Options{Name: "catalog", DefaultPort: 8102, Migrations: migrations, Consumes: true}
	return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) { api(a, &Store{pool: a.DB}) })
}
