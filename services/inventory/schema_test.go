package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// inventory.schema=v2 renames stock.on_hand to quantity in inventory's own database, and
// inventory's code follows: reads, reservations and releases work on either version, and
// v1 renames it back.
func TestSchemaChangeDemo(t *testing.T) {
	t.Parallel()
	h := start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := control.OpenStore(ctx, h.env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i, v := range []string{control.InventorySchemaV2, control.InventorySchemaV1} {
		// Not announced: the instance's periodic re-read picks the change up.
		if _, err := store.Set(ctx, control.InventorySchema, v, "test"); err != nil {
			t.Fatal(err)
		}
		if !h.logs.AwaitLine(time.Minute, "inventory schema changed", `"version":"`+v+`"`, `"column":"`+stockColumns[v]+`"`) {
			t.Fatalf("inventory never applied schema %s", v)
		}
		before := h.levels("LAB-MUG")["LAB-MUG"]
		order := testenv.Name("schema")
		c := checkout(order, contracts.ModeOrchestration, contracts.Item{SKU: "LAB-MUG", Qty: 3})
		typ, data := reserveMsg(contracts.ModeOrchestration, c)
		h.publish(typ, order, data)
		h.await(contracts.StockReserved, order, 1)
		if got := h.levels("LAB-MUG")["LAB-MUG"]; got != before-3 {
			t.Fatalf("schema %s: stock %d after reserving 3 of %d", v, got, before)
		}
		h.publish(contracts.CmdInventoryRelease, order, contracts.InventoryReleaseData{Saga: c.Saga, Reason: contracts.ReasonTimeout})
		h.await(contracts.StockReleased, order, 1)
		if got := h.levels("LAB-MUG")["LAB-MUG"]; got != before {
			t.Fatalf("schema %s (step %d): stock %d after the release, want %d", v, i, got, before)
		}
		var lv Level
		if code := h.get("/stock/LAB-MUG", &lv); code != http.StatusOK {
			t.Fatalf("schema %s: GET /stock: %d", v, code)
		}
	}
}
