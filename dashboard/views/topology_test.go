package views

import "testing"

// The map redraws the databases for db.topology: seven, one per service, or one shared
// database every service with tables draws a line to.
func TestMapDrawsTheDatabaseTopology(t *testing.T) {
	per := render(t, "overview", Overview(OverviewModel{Arch: ShopArch().WithTopology("per-service")}))
	for _, s := range []string{"users", "catalog", "orders", "payments", "inventory", "shipping", "notifications"} {
		one(t, per, "node-db-"+s)
		one(t, per, "edge-"+s+">db-"+s)
	}
	shared := ShopArch().WithTopology("shared")
	doc := render(t, "overview", Overview(OverviewModel{Arch: shared}))
	one(t, doc, "node-"+SharedDBNode)
	dbs := 0
	for _, n := range shared.Nodes {
		if n.Kind == "db" {
			dbs++
		}
	}
	if dbs != 1 {
		t.Errorf("shared map has %d databases, want 1", dbs)
	}
	for _, s := range []string{"users", "catalog", "orders", "payments", "inventory", "shipping", "notifications"} {
		one(t, doc, "edge-"+s+">"+SharedDBNode)
	}
	if n := len(all(doc, "node-db-orders")); n != 0 {
		t.Errorf("the shared map still draws orders' own database (%d)", n)
	}
}
