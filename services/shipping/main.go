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

func main() { app.Main("shipping", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts := app.Options{Name: "shipping", DefaultPort: 8106, Migrations: migrations, Consumes: true}
	return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
		svc := &Service{app: a, store: &Store{pool: a.DB}}
		a.Consume(queue, svc.routes())
		svc.api(a.Mux())
	})
}
