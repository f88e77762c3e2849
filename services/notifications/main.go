// Command notifications tells customers what happened: a welcome on user.registered, and
// a message when an order is confirmed or cancelled (in either saga mode). Sending is
// simulated: nothing leaves the machine; the service records the notification, logs
// "email sent (simulated)" and announces notification.sent.
package main

import (
	"context"
	"embed"
	"io"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

func main() { app.Main("notifications", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts := app.Options{Name: "notifications", DefaultPort: 8107, Migrations: migrations, Consumes: true}
	return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
		svc := &Service{app: a, store: &Store{pool: a.DB}}
		a.Consume(queue, svc.routes())
		svc.api(a.Mux())
	})
}
