// Command users registers shoppers, checks their passwords and issues the JWTs every
// other part of the shop trusts. It signs with Ed25519 (EdDSA) and publishes only its
// public key (GET /internal/jwks): the gateway can verify tokens but never mint them.
//
// Registration announces user.registered through the outbox, so users connects to
// RabbitMQ (the outbox relay needs a publisher) even though it consumes no queue.
package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/crypto/bcrypt"

	"microlab/services/platform/app"
)

//go:embed migrations/*.sql
var migrations embed.FS

// devJWTSeed is the documented development seed ("microlab-dev-jwt-seed-not-secret" in
// hex). It is public — it is in this file — so anyone can mint tokens a lab using it
// accepts. Fine on a laptop, where only this machine reaches users: it is used only when
// HTTP_ADDR is a loopback address (see devSeedAllowed). Anywhere else set JWT_SEED
// (`openssl rand -hex 32`), or JWT_SEED_FILE to a file holding it.
const devJWTSeed = "6d6963726f6c61622d6465762d6a77742d736565642d6e6f742d736563726574"

// Config is everything users reads from its environment.
type Config struct {
	app.Base
	// JWTSeed is the 32-byte Ed25519 seed (64 hex characters) the signing key is derived
	// from. Every instance must share it, or tokens from one are rejected for another.
	JWTSeed string        `env:"JWT_SEED" secret:"true"`
	JWTTTL  time.Duration `env:"JWT_TTL" default:"1h"`
	// BcryptCost is the work factor of password hashes (tests lower it: the race detector
	// makes bcrypt very slow).
	BcryptCost int `env:"BCRYPT_COST" default:"10"`
}

func main() { app.Main("users", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	opts := app.Options{Name: "users", DefaultPort: 8101, Migrations: migrations, Consumes: true}
	var cfg Config
	if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
		return err
	}
	devSeed := cfg.JWTSeed == ""
	if devSeed {
		if !devSeedAllowed(cfg.HTTPAddr) {
			return fmt.Errorf("config: JWT_SEED is not set and HTTP_ADDR=%s listens beyond this machine: "+
				"the public development seed would let anyone mint tokens; set JWT_SEED (make one with `openssl rand -hex 32`) "+
				"or JWT_SEED_FILE", cfg.HTTPAddr)
		}
		cfg.JWTSeed = devJWTSeed
	}
	// Check everything that can be wrong with the config before connecting to anything:
	// a malformed seed is a start-up error, never a service that issues no tokens.
	signer, err := NewSigner(cfg.JWTSeed, cfg.JWTTTL)
	if err != nil {
		return err
	}
	if cfg.BcryptCost < bcrypt.MinCost || cfg.BcryptCost > bcrypt.MaxCost {
		return fmt.Errorf("config: BCRYPT_COST=%d: must be between %d and %d", cfg.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	// The hash that logins for unknown emails are compared against (see Service.Login),
	// made once, at the configured cost, so both paths take the same time.
	dummy, err := bcrypt.GenerateFromPassword([]byte("no user has this password"), cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("dummy hash: %w", err)
	}
	a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return err
	}
	if devSeed {
		a.Log.WarnContext(ctx, "JWT_SEED is not set: signing with the public development seed; anyone can mint tokens this lab accepts")
	}
	svc := &Service{app: a, store: &Store{pool: a.DB}, signer: signer, cost: cfg.BcryptCost, dummyHash: dummy}
	// Seeded before serving, so "ready" means the demo accounts can log in. The process
	// exits on this error (the app's connections close with it).
	if err := svc.SeedDemo(ctx); err != nil {
		return fmt.Errorf("seed demo accounts: %w", err)
	}
	svc.api(a.Mux())
	return a.Run(ctx)
}

// devSeedAllowed says whether users may sign with the public development seed when it
// listens on addr: only on a loopback address (127.0.0.0/8, ::1) or localhost, which no
// other machine reaches. An empty host or 0.0.0.0 (every interface), a container's IP and
// any other host name are reachable from elsewhere — in compose, from every container
// and whatever the ports are published to. A name is not resolved: "localhost" is the
// one name taken on trust.
func devSeedAllowed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
