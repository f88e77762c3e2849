// Command monolith is the whole shop in one process with one database: users, catalog,
// inventory, orders, payments and shipping as packages of code calling each other, not
// as services exchanging messages. It serves the same internal HTTP API the gateway
// calls on users, catalog and orders (same paths, same JSON), so the gateway's
// strangler.routes setting can send each capability here or to the microservices, one
// at a time, and the public API does not change (docs/patterns/monolith-and-strangler-fig.md).
//
// What a learner compares in the traces: a checkout here is ONE request span with SQL
// spans under it and a child span per step (authorize payment, reserve stock, schedule
// shipment), all in one transaction: no broker hop, no outbox, no saga. A failure rolls
// the transaction back instead of running compensations, and the order is final (confirmed
// or cancelled) when POST /orders answers.
//
// It follows lab.control like every service (the app kit does), but consumes and emits
// no events: nothing outside it needs to hear what happens inside.
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
	"microlab/services/shop"
)

//go:embed migrations/*.sql
var migrations embed.FS

// devJWTSeed is the monolith's documented development seed ("microlab-monolith-dev-seed-pub!!"
// in hex). It is NOT users' seed on purpose: the monolith signs with a key of its
// own, and the gateway verifies both because it reads both key sets (union by kid), which
// is how two issuers coexist during a migration. Public, like users' (see users/main.go):
// used only on a loopback HTTP_ADDR; anywhere else set JWT_SEED.
const devJWTSeed = "6d6963726f6c61622d6d6f6e6f6c6974682d6465762d736565642d7075622121"

// Config is everything the monolith reads from its environment.
type Config struct {
	app.Base
	JWTSeed    string        `env:"JWT_SEED" secret:"true"`
	JWTTTL     time.Duration `env:"JWT_TTL" default:"1h"`
	BcryptCost int           `env:"BCRYPT_COST" default:"10"`
}

func main() { app.Main("monolith", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	// No Consumes: the monolith has no queue and emits nothing (its steps are function
	// calls); the app kit still follows lab.control for the lab's settings.
	opts := app.Options{Name: "monolith", DefaultPort: 8108, Migrations: migrations}
	var cfg Config
	if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
		return err
	}
	if cfg.JWTSeed == "" {
		if !loopback(cfg.HTTPAddr) {
			return fmt.Errorf("config: JWT_SEED is not set and HTTP_ADDR=%s listens beyond this machine: "+
				"the public development seed would let anyone mint tokens; set JWT_SEED (`openssl rand -hex 32`)", cfg.HTTPAddr)
		}
		cfg.JWTSeed = devJWTSeed
	}
	signer, err := shop.NewSigner(cfg.JWTSeed, cfg.JWTTTL)
	if err != nil {
		return err
	}
	if cfg.BcryptCost < bcrypt.MinCost || cfg.BcryptCost > bcrypt.MaxCost {
		return fmt.Errorf("config: BCRYPT_COST=%d: must be between %d and %d", cfg.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("no user has this password"), cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("dummy hash: %w", err)
	}
	a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
	if err != nil {
		return err
	}
	m := &Monolith{app: a, store: &Store{pool: a.DB}, signer: signer, cost: cfg.BcryptCost, dummyHash: dummy}
	// Seeded before serving, so "ready" means the demo accounts log in and the products
	// are on sale, exactly as users and catalog are when they are ready.
	if err := m.Seed(ctx); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	m.api(a.Mux())
	return a.Run(ctx)
}

// loopback says whether addr is a loopback address or localhost (see users'
// devSeedAllowed: the same rule for the same reason).
func loopback(addr string) bool {
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
