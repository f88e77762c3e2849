package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"microlab/lab/stack"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
)

const (
	settingsTimeout = 15 * time.Second
	// settingsSource is how changes made here show on the dashboard's timeline.
	settingsSource = "lab settings"
)

// settings lists the lab settings, or with "set key=value..." changes them.
func settings(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	switch {
	case len(args) == 0:
		return listSettings(ctx, cfg, stdout)
	case args[0] == "set":
		return setSettings(ctx, cfg, args[1:], stdout)
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

// setSettings validates every key=value before changing anything, stores the changes,
// then announces each on lab.control so running services apply it at once. The
// database is the truth: if the announcement fails, services still converge at their
// next periodic re-read, and the error says so.
func setSettings(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
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
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	var changes []control.Change
	for _, p := range pairs {
		ch, err := store.Set(ctx, p.key, p.value, settingsSource)
		if err != nil {
			return err
		}
		changes = append(changes, ch)
		fmt.Fprintf(stdout, "%s: %s → %s (revision %d)\n", ch.Key, ch.Old, ch.New, ch.Revision)
	}
	if err := announce(ctx, cfg.AMQPURL, changes); err != nil {
		return fmt.Errorf("stored, but not announced (running services pick it up at their next re-read): %w", err)
	}
	return nil
}

func announce(ctx context.Context, amqpURL string, changes []control.Change) error {
	quiet := slog.New(slog.DiscardHandler) // bus logs reconnect attempts; the error says enough
	conn, err := bus.Dial(ctx, amqpURL, "lab-cli", quiet)
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := bus.NewPublisher(conn, quiet)
	for _, ch := range changes {
		if err := control.Announce(ctx, pub, ch); err != nil {
			return err
		}
	}
	return nil
}
