// Command payments authorizes, captures and refunds checkout payments against simulated
// test cards (no money moves; see cardDecision for the rules). It keeps an append-only
// ledger per order and answers the saga in both modes: it reacts to order.placed,
// stock.rejected and shipment.failed in choreography, to payments.authorize and
// payments.refund commands in orchestration, and captures on order.confirmed in both.
package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Config is everything payments reads from its environment.
type Config struct {
	app.Base
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "payments:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	mig, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	opts := app.Options{Name: "payments", DefaultPort: 8104, Migrations: mig, Consumes: true}
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
