package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/services/platform/testenv"
)

// The private cluster restarts with its data, and is unreachable while stopped.
func TestPrivatePostgresRestarts(t *testing.T) {
	t.Parallel()
	p := testenv.PrivatePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 2 {
		c, err := pgx.Connect(ctx, p.AdminURL())
		if err != nil {
			t.Fatal(i, err)
		}
		if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS x (id int)"); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
		p.Stop()
		if _, err := pgx.Connect(ctx, p.AdminURL()); err == nil {
			t.Fatal("connected to a stopped server")
		}
		p.Start()
	}
}
