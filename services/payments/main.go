// Command payments authorizes, captures and refunds checkout payments against simulated
// test cards (no money moves; see cardDecision for the rules). It keeps an append-only
// ledger per order and answers the saga in both modes: it reacts to order.placed,
// stock.rejected and shipment.failed in choreography, to payments.authorize and
// payments.refund commands in orchestration, and captures on order.confirmed in both.
package main

import (
	"context"
	"embed"
	"io"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

func main() { app.Main("payments", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts := app.Options{Name: "payments", DefaultPort: 8104, Migrations: migrations, Consumes: true}
	return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
		svc := &Service{app: a, store: &Store{pool: a.DB}}
		a.Consume(queue, svc.routes())
		svc.api(a.Mux())
	})
}
