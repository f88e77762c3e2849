// Package topology switches the lab between a database per service and one shared
// database (the db.topology setting): stop the services, migrate the target with their
// own migrations, carry every row over, start them on the target. `lab up` runs it when
// the setting changes (Follow); the end-to-end tests run it with their own supervisor;
// compose can run it with a callback that restarts containers.
package topology

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/lab/stack"
	"microlab/services/platform"
	"microlab/services/platform/pg"
)

// gooseTables are the migration records: the target keeps its own (it was migrated
// before the copy), so they are not copied.
var gooseTables = []string{"goose_db_version", "goose_platform"}

// Services does to the shop's processes what a switch needs: stop every instance of
// the services named (gracefully: their outboxes drain on SIGTERM), and start them with
// cfg's environment (its Topology decides their DATABASE_URL), waiting until they are
// ready. Where someone else stops and starts them (`lab topology`, for compose), Stop
// only checks that they are stopped, and Stopping says so.
type Services interface {
	// Stopping is the headline of the switch's stop step: what Stop is about to do to
	// names, for the terminal and the dashboard's timeline.
	Stopping(names []string) string
	Stop(ctx context.Context, names []string) error
	Start(ctx context.Context, cfg stack.Config, names []string) error
}

// StoppingGracefully is Stopping for Services that stop the processes themselves
// (Supervised, lab/scaling's Scaler).
func StoppingGracefully(names []string) string {
	return fmt.Sprintf("stopping %d services (their outboxes drain first)", len(names))
}

// Switcher moves the shop's data from one topology to the other. One switch at a time.
type Switcher struct {
	Cfg stack.Config // Topology: where the data lives now (updated by each switch)
	// Migrations returns a service's own migrations (its migrations/*.sql).
	Migrations func(service string) (fs.FS, error)
	Services   Services
	// Progress, if not nil, hears every step ("stopping the services", "copied orders:
	// 8 tables, 340 rows", ...), for the terminal.
	Progress func(step string)
	// Timeline, if not nil, hears the headline steps (started, services stopped, data
	// copied, done or failed), for the dashboard's timeline (Follow: control.Plane.Note).
	Timeline func(ctx context.Context, step string)

	mu sync.Mutex
}

// Current is the topology the services run on.
func (s *Switcher) Current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return topo(s.Cfg)
}

func topo(c stack.Config) string {
	if c.Shared() {
		return stack.TopologyShared
	}
	return stack.TopologyPerService
}

// say reports a step, and records it in the lab database with where the data is now.
func (s *Switcher) say(ctx context.Context, format string, args ...any) {
	s.report(ctx, false, fmt.Sprintf(format, args...))
}

// headline is say for the steps that also go on the dashboard's timeline.
func (s *Switcher) headline(ctx context.Context, format string, args ...any) {
	s.report(ctx, true, fmt.Sprintf(format, args...))
}

func (s *Switcher) report(ctx context.Context, headline bool, step string) {
	err := Record(context.WithoutCancel(ctx), s.Cfg, topo(s.Cfg), step)
	if headline && s.Timeline != nil {
		s.Timeline(context.WithoutCancel(ctx), step)
	}
	if s.Progress != nil {
		s.Progress(step)
		if err != nil {
			s.Progress(err.Error())
		}
	}
}

// dataServices are the services with a database, in start order.
func dataServices() []string {
	var out []string
	for _, sv := range stack.Services {
		if sv.DB {
			out = append(out, sv.Name)
		}
	}
	return out
}

// To switches to topology to (a no-op if the services run on it already). Data is
// carried over, not re-seeded: orders, payments, reservations, users and settings all
// survive, so switching back and forth loses nothing. If anything fails before the
// services are started on the target, they are started again on the source, whose data
// nothing has touched, and the error says what failed.
func (s *Switcher) To(ctx context.Context, to string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if to != stack.TopologyShared && to != stack.TopologyPerService {
		return fmt.Errorf("topology %q: want %s or %s", to, stack.TopologyPerService, stack.TopologyShared)
	}
	from := topo(s.Cfg)
	if from == to {
		return nil
	}
	src, dst := s.Cfg, s.Cfg.WithTopology(to)
	names := dataServices()
	s.headline(ctx, "db.topology %s → %s: provisioning database %s", from, to, s.Cfg.DBName(stack.SharedDB))
	if err := ProvisionShared(ctx, s.Cfg); err != nil {
		return err
	}
	s.headline(ctx, "%s", s.Services.Stopping(names))
	if err := s.Services.Stop(ctx, names); err != nil {
		return errors.Join(fmt.Errorf("stop services: %w", err), s.restart(ctx, src, names))
	}
	if err := s.move(ctx, src, dst, names); err != nil {
		s.headline(ctx, "switch failed, services go back on %s: %v", from, err)
		return errors.Join(err, s.restart(ctx, src, names))
	}
	s.Cfg = dst
	s.headline(ctx, "data copied; starting the services on %s", describe(dst))
	if err := s.Services.Start(ctx, dst, names); err != nil {
		s.headline(ctx, "switch failed: services do not start on %s: %v", to, err)
		return fmt.Errorf("start services on %s: %w", to, err)
	}
	s.headline(ctx, "db.topology is %s: every service runs on %s", to, describe(dst))
	return nil
}

func describe(c stack.Config) string {
	if c.Shared() {
		return "database " + c.DBName(stack.SharedDB) + " (a schema each)"
	}
	return "its own database"
}

func (s *Switcher) restart(ctx context.Context, cfg stack.Config, names []string) error {
	if err := s.Services.Start(context.WithoutCancel(ctx), cfg, names); err != nil {
		return fmt.Errorf("restart services on %s: %w", topo(cfg), err)
	}
	return nil
}

// move migrates every service's target and copies its data there.
func (s *Switcher) move(ctx context.Context, src, dst stack.Config, names []string) error {
	for _, name := range names {
		s.say(ctx, "migrating %s on %s", name, describe(dst))
		if err := s.migrate(ctx, dst, name); err != nil {
			return err
		}
	}
	if dst.Shared() { // grants on the tables the migrations just created
		if err := ProvisionShared(ctx, dst); err != nil {
			return err
		}
	}
	for _, name := range names {
		res, err := copyService(ctx, src, dst, name)
		if err != nil {
			return err
		}
		s.say(ctx, "copied %s: %d tables, %d rows, %d sequences", name, res.Tables, res.Rows, res.Sequences)
	}
	return nil
}

// migrate applies the kit's and the service's migrations to its target, connected as the
// service's own role, exactly as the service does at start, so what they create is its.
func (s *Switcher) migrate(ctx context.Context, cfg stack.Config, name string) error {
	own, err := s.Migrations(name)
	if err != nil {
		return fmt.Errorf("migrations of %s: %w", name, err)
	}
	url, err := cfg.ServiceDatabaseURL(name)
	if err != nil {
		return err
	}
	pool, err := pg.Open(ctx, url, func(c *pgxpool.Config) { c.MaxConns = 2 })
	if err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	defer pool.Close()
	kit, err := fs.Sub(platform.Migrations(), "migrations")
	if err != nil {
		return err
	}
	if err := pg.Migrate(ctx, pool, kit, "goose_platform"); err != nil {
		return fmt.Errorf("migrate %s: platform tables: %w", name, err)
	}
	if err := pg.Migrate(ctx, pool, own, "goose_db_version"); err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	return nil
}

// where is the database and schema a service's tables are in under cfg.
func where(cfg stack.Config, name string) (db, schema string) {
	if cfg.Shared() {
		return cfg.DBName(stack.SharedDB), name
	}
	return cfg.DBName(name), "public"
}

// copyService copies one service's tables from its source to its target, as the admin.
func copyService(ctx context.Context, src, dst stack.Config, name string) (pg.CopyResult, error) {
	sdb, sschema := where(src, name)
	ddb, dschema := where(dst, name)
	sc, err := adminConn(ctx, src, sdb)
	if err != nil {
		return pg.CopyResult{}, err
	}
	defer sc.Close(context.WithoutCancel(ctx))
	dc, err := adminConn(ctx, dst, ddb)
	if err != nil {
		return pg.CopyResult{}, err
	}
	defer dc.Close(context.WithoutCancel(ctx))
	res, err := pg.CopySchema(ctx, sc, dc, sschema, dschema, gooseTables...)
	if err != nil {
		return res, fmt.Errorf("copy %s: %w", name, err)
	}
	return res, nil
}

func adminConn(ctx context.Context, cfg stack.Config, db string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig(cfg.AdminDatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse admin database url: %w", err)
	}
	u, err := pg.URLFor(cfg.AdminDatabaseURL, pc.User, pc.Password, db)
	if err != nil {
		return nil, err
	}
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", db, err)
	}
	return c, nil
}

// ProvisionShared creates (idempotently) the shared database, a schema per service owned
// by its role, and orders' reads of catalog and inventory. The roles must exist
// (stack.Provision).
func ProvisionShared(ctx context.Context, cfg stack.Config) error {
	return pg.ProvisionShared(ctx, cfg.AdminDatabaseURL, cfg.DBName(stack.SharedDB), cfg.SharedSchemas(), cfg.SharedReads())
}

// DirMigrations reads each service's migrations from the source tree at root (the
// module's root): the same files its binary embeds.
func DirMigrations(root string) func(string) (fs.FS, error) {
	return func(name string) (fs.FS, error) {
		sv, ok := stack.Find(name)
		if !ok || !sv.DB {
			return nil, fmt.Errorf("no service %q with a database", name)
		}
		dir := filepath.Join(root, sv.Package(), "migrations")
		if _, err := os.Stat(dir); err != nil {
			return nil, err
		}
		return os.DirFS(dir), nil
	}
}
