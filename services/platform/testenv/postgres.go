package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/testenv/private"
)

// Postgres is a private PostgreSQL cluster for a test that must stop and restart the
// database (chaos tests): stopping the machine's shared server would break every other
// test running in parallel. Its data directory survives Stop/Start, like a real restart.
// See package private.
type Postgres struct {
	t testing.TB
	p *private.Postgres
}

// PrivatePostgres initialises a new cluster (trust auth, loopback only, fsync off: the
// test is about availability, not durability across power loss) and starts it; it is
// stopped and removed when the test ends.
func PrivatePostgres(t testing.TB) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pp, err := private.NewPostgres(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "no pg_ctl") {
			Missing(t, "pg_ctl and initdb", "apt-get install postgresql", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pp.Remove() })
	p := &Postgres{t: t, p: pp}
	p.Start()
	t.Cleanup(func() { p.Stop() })
	return p
}

// AdminURL is the superuser URL of the cluster.
func (p *Postgres) AdminURL() string { return p.p.AdminURL() }

// Start starts the server and waits until it accepts connections.
func (p *Postgres) Start() {
	p.t.Helper()
	if err := p.p.Start(context.Background()); err != nil {
		p.t.Fatal(err)
	}
}

// Stop stops the server the way a restart does ("fast": every session is terminated,
// open transactions roll back). Stopping a stopped server does nothing.
func (p *Postgres) Stop() {
	p.t.Helper()
	if err := p.p.Stop(context.Background()); err != nil {
		p.t.Fatal(err)
	}
}
