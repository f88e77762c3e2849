// Command notifications tells customers what happened: a welcome on user.registered, and
// a message when an order is confirmed or cancelled (in either saga mode). Sending is
// simulated: nothing leaves the machine; the service records the notification, logs
// "email sent (simulated)" and announces notification.sent.
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

// Config is everything notifications reads from its environment.
type Config struct {
	app.Base
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "notifications:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	mig, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	opts := app.Options{Name: "notifications", DefaultPort: 8107, Migrations: mig, Consumes: true}
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
