package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"microlab/lab/stack"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// The lab database remembers where the data is (a switch interrupted by Ctrl-C must not
// start the next `lab up` on the other side) and the last step of the last switch (what
// the dashboard shows). The table belongs to the lab role, like the control plane's.
const stateDDL = `CREATE TABLE IF NOT EXISTS db_topology (
	id         int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
	current    text        NOT NULL,
	step       text        NOT NULL DEFAULT '',
	updated_at timestamptz NOT NULL DEFAULT now()
)`

func labConn(ctx context.Context, cfg stack.Config) (*pgx.Conn, error) {
	u, err := cfg.DatabaseURL(cfg.DBName(stack.LabDB))
	if err != nil {
		return nil, err
	}
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("connect to the lab database: %w", err)
	}
	if _, err := c.Exec(ctx, stateDDL); err != nil {
		c.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("db_topology table: %w", err)
	}
	return c, nil
}

// Where returns the topology the services' data is in (per-service for a lab never
// switched).
func Where(ctx context.Context, cfg stack.Config) (string, error) {
	c, err := labConn(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var cur string
	err = c.QueryRow(ctx, `SELECT current FROM db_topology`).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return stack.TopologyPerService, nil
	}
	if err != nil {
		return "", fmt.Errorf("read db_topology: %w", err)
	}
	return cur, nil
}

// Record stores where the data is and the step a switch is at.
func Record(ctx context.Context, cfg stack.Config, current, step string) error {
	c, err := labConn(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, `INSERT INTO db_topology (current, step) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET current = $1, step = $2, updated_at = now()`, current, step); err != nil {
		return fmt.Errorf("record db_topology: %w", err)
	}
	return nil
}

// Follow applies the db.topology setting until ctx ends: at start and at every change
// (announced on lab.control, or seen at the watcher's periodic re-read) it switches the
// services to the topology the setting names. A switch that fails leaves the services
// where they were and sets the setting back to that, through the control plane, with
// source "lab up", so the timeline says what happened and nobody believes a switch that
// did not happen.
func Follow(ctx context.Context, sw *Switcher, store *control.Store, conn *bus.Conn, pub *bus.Publisher, log *slog.Logger) error {
	plane := &control.Plane{Store: store, Pub: pub}
	if sw.Timeline == nil {
		sw.Timeline = func(ctx context.Context, step string) {
			if _, err := plane.Note(ctx, control.TopologySwitchKey, step, "lab up"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
				log.Warn("db.topology: timeline", "err", err)
			}
		}
	}
	return control.Follow(ctx, store, conn, log, func(cur control.Settings) {
		want := cur.Get(control.DBTopology)
		if want == sw.Current() {
			return
		}
		if err := sw.To(ctx, want); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("db.topology switch failed", "to", want, "err", err)
			if _, err := plane.Set(context.WithoutCancel(ctx), control.DBTopology, sw.Current(), "lab up"); err != nil {
				log.Error("db.topology: set back", "err", err)
			}
		}
	})
}
