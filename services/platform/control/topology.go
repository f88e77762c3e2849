package control

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The database topology and inventory's schema-change demo (docs/architecture.md,
// "Shared database vs database-per-service").
const (
	DBTopology      = "db.topology"
	InventorySchema = "inventory.schema"
)

// Values of db.topology (the same as lab/stack's TopologyPerService, TopologyShared).
const (
	TopologyPerService = "per-service"
	TopologyShared     = "shared"
)

// Values of inventory.schema: v2 has renamed stock.on_hand to stock.quantity.
const (
	InventorySchemaV1 = "v1"
	InventorySchemaV2 = "v2"
)

// SharedDB reports whether the services run on one shared database.
func (s Settings) SharedDB() bool { return s.Get(DBTopology) == TopologyShared }

// TopologySwitchKey is the timeline's key for the steps of a db.topology switch.
const TopologySwitchKey = "db.topology switch"

// Note records a step of something the lab does that is not itself a change of a
// setting or a fault (a db.topology switch, run by lab up) on the timeline, where the
// dashboard shows it live, and announces it.
func (p *Plane) Note(ctx context.Context, key, step, source string) (Change, error) {
	var ch Change
	err := p.Store.writeTx(ctx, func(tx pgx.Tx) error {
		var err error
		ch, err = record(ctx, tx, key, "", step, source)
		return err
	})
	if err != nil {
		return Change{}, fmt.Errorf("record %s: %w", key, err)
	}
	return ch, p.done(ctx, []Change{ch})
}
