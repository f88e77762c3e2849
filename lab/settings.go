package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"microlab/lab/stack"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
)

const (
	settingsTimeout = 15 * time.Second
	// settingsSource is how changes made here show on the dashboard's timeline.
	settingsSource = "lab settings"
)

// settings lists the lab settings, or with "set key=value..." (or key=value... alone)
// changes them.
func settings(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	switch {
	case len(args) == 0:
		return listSettings(ctx, cfg, stdout)
	case args[0] == "set":
		return setSettings(ctx, cfg, args[1:], stdout, stderr)
	case strings.Contains(args[0], "="): // `lab settings saga.mode=orchestration`: what people type
		return setSettings(ctx, cfg, args, stdout, stderr)
	default:
		return usageErrorf("want `lab settings` or `lab settings set key=value...`, got %q", args)
	}
}

// openStore makes sure the lab database exists (the dashboard may never have run) and
// opens the settings store in it.
func openStore(ctx context.Context, cfg Config) (*control.Store, error) {
	sc := cfg.Stack()
	db := sc.DBName(stack.LabDB)
	if err := pg.Provision(ctx, sc.AdminDatabaseURL, db, db); err != nil {
		return nil, fmt.Errorf("%w (lab doctor checks PostgreSQL)", err)
	}
	u, err := sc.DatabaseURL(db)
	if err != nil {
		return nil, err
	}
	return control.OpenStore(ctx, u)
}

func listSettings(ctx context.Context, cfg Config, stdout io.Writer) error {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	entries, err := store.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tDEFAULT\tWHAT IT DOES")
	for _, e := range entries {
		what := e.Help
		if len(e.Allowed) > 0 {
			what += " (" + strings.Join(e.Allowed, " | ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Key, e.Value, e.Default, what)
	}
	return tw.Flush()
}

// setSettings validates every key=value before changing anything, then changes each
// through the control plane (stored, recorded on the timeline, announced on lab.control
// so running services apply it at once). The database is the truth: if the broker
// cannot be reached, services still converge at their next periodic re-read, and a
// warning says so.
func setSettings(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("lab settings set needs at least one key=value")
	}
	type pair struct{ key, value string }
	var pairs []pair
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usageErrorf("want key=value, got %q", a)
		}
		if _, err := control.Validate(k, v); err != nil {
			return usageErrorf("%v", err)
		}
		pairs = append(pairs, pair{k, v})
	}
	return withPlane(ctx, cfg, stderr, func(p *control.Plane) error {
		var notAnnounced error
		for _, pr := range pairs {
			ch, err := p.Set(ctx, pr.key, pr.value, settingsSource)
			if errors.Is(err, control.ErrNotAnnounced) {
				notAnnounced, err = err, nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: %s → %s (revision %d)\n", ch.Key, ch.Old, ch.New, ch.Revision)
		}
		return notAnnounced
	})
}
