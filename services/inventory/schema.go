package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/services/platform/control"
	"microlab/services/platform/pg"
)

// The schema-change demo (setting inventory.schema). An inventory team renames a column
// of its own table — stock.on_hand becomes stock.quantity in v2 — and ships its own code
// with it: the statements below name whichever column the table has. Nobody else should
// notice: with a database per service, orders asks inventory over messages and never
// sees a column. With a shared database, orders reads inventory.stock with a SQL join,
// and its checkout breaks until the change is reverted: the coupling the lab is about.
//
// A real team would ship a migration; the demo needs to go back and forth on a click, so
// inventory applies the rename itself, live, in its own schema, when the setting changes.

// Names of stock's quantity column in each schema version.
var stockColumns = map[string]string{
	control.InventorySchemaV1: "on_hand",
	control.InventorySchemaV2: "quantity",
}

// stockColumn is the name stock's quantity column has in the database, as inventory's
// statements use it.
type stockColumn struct {
	mu   sync.Mutex
	name string // "" until read from the database
}

// column returns the column's name, reading it from the catalog the first time.
func (s *Store) column(ctx context.Context) (string, error) {
	s.col.mu.Lock()
	name := s.col.name
	s.col.mu.Unlock()
	if name != "" {
		return name, nil
	}
	name, err := s.readColumn(ctx)
	if err != nil {
		return "", err
	}
	s.col.mu.Lock()
	if s.col.name == "" {
		s.col.name = name
	}
	name = s.col.name
	s.col.mu.Unlock()
	return name, nil
}

// readColumn asks the catalog which of the known names stock's column has.
func (s *Store) readColumn(ctx context.Context) (string, error) {
	var name string
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'stock' AND column_name = ANY($1)`,
		[]string{stockColumns[control.InventorySchemaV1], stockColumns[control.InventorySchemaV2]}).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errors.New("stock table has neither on_hand nor quantity")
	}
	if err != nil {
		return "", fmt.Errorf("read stock's columns: %w", err)
	}
	return name, nil
}

// applySchema renames stock's column to what version wants, if it is not so already.
// The rename holds an exclusive lock on stock until it commits; the statements of this
// instance switch to the new name while that lock is held, so they wait for the rename
// and then find the column they name. Several instances may apply it at once: an
// advisory lock makes them take turns, and each re-reads the column under it.
func (s *Store) applySchema(ctx context.Context, version string) (changed bool, err error) {
	want, ok := stockColumns[version]
	if !ok {
		return false, fmt.Errorf("unknown inventory schema %q", version)
	}
	err = pg.InTx(ctx, s.pool, func(ctx context.Context) error {
		if err := pg.LockKey(ctx, s.pool, "inventory.schema"); err != nil {
			return err
		}
		have, err := s.readColumn(ctx)
		if err != nil {
			return err
		}
		if have != want {
			if _, err := pg.Q(ctx, s.pool).Exec(ctx, fmt.Sprintf(`ALTER TABLE stock RENAME COLUMN %s TO %s`,
				pgx.Identifier{have}.Sanitize(), pgx.Identifier{want}.Sanitize())); err != nil {
				return fmt.Errorf("rename stock.%s to %s: %w", have, want, err)
			}
			changed = true
		}
		s.col.mu.Lock()
		s.col.name = want
		s.col.mu.Unlock()
		return nil
	})
	if err != nil {
		s.col.mu.Lock()
		s.col.name = "" // read again at the next statement
		s.col.mu.Unlock()
	}
	return changed, err
}

// followSchema keeps the stock table at the schema version the lab setting names,
// checking a few times a second (settings are applied live; this is one more).
func (svc *Service) followSchema(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	applied := ""
	for {
		want := svc.app.Settings.Current().Get(control.InventorySchema)
		if want != applied {
			changed, err := svc.store.applySchema(ctx, want)
			switch {
			case err != nil && ctx.Err() == nil:
				svc.app.Log.ErrorContext(ctx, "inventory schema change failed", "version", want, "err", err)
			case err == nil:
				applied = want
				if changed {
					svc.app.Log.InfoContext(ctx, "inventory schema changed", "version", want, "column", stockColumns[want])
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
