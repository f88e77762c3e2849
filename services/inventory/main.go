// Command inventory keeps the shop's stock. It reserves the lines of a paid order
// (stock.reserved, carrying the checkout on to shipping) or rejects the order when a
// product is unknown or short (stock.rejected), and releases reservations when a later
// step fails (stock.released). It reacts to payment.authorized and shipment.failed in
// choreography, and to inventory.reserve and inventory.release commands in orchestration.
// LAB-UNICORN is never in stock: the deterministic out-of-stock trigger of the saga.
package main

import (
	"context"
	"embed"
	"io"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

func main() { app.Main("inventory", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts := app.Options{Name: "inventory", DefaultPort: 8105, Migrations: migrations, Consumes: true}
	return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
		svc := &Service{app: a, store: &Store{pool: a.DB}}
		a.Go("inventory schema", svc.followSchema) // the schema-change demo (schema.go)
		a.Consume(queue, svc.routes())
		svc.api(a.Mux())
	})
}
