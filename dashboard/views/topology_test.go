package views

import (
	"slices"
	"testing"
)

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

// orders consumes two queues: its saga's, and the order history read model's
// (orders-history.events, CQRS). The map draws the read model's queue as a queue of its
// own, with its depth, bound to shop.events for the events the read model is kept from,
// and consumed by orders; a message for it (or its retry) animates those edges.
func TestMapDrawsTheReadModelQueue(t *testing.T) {
	a := ShopArch()
	doc := render(t, "overview", Overview(OverviewModel{Arch: a,
		Health: Health{Queues: map[string]int{"orders.events": 1, "orders-history.events": 4}}}))
	one(t, doc, "node-orders-history.events")
	if got := text(one(t, doc, "depth-orders-history.events")); got != "4" {
		t.Errorf("orders-history.events depth %q, want 4", got)
	}
	if got := text(one(t, doc, "depth-orders.events")); got != "1" {
		t.Errorf("orders.events depth %q, want 1", got)
	}
	one(t, doc, "edge-shop.events>orders-history.events")
	one(t, doc, "edge-orders-history.events>orders")
	for _, rk := range []string{"order.placed", "order.confirmed", "order.cancelled"} {
		got := a.FlowEdges("orders", "shop.events", rk)
		if !slices.Contains(got, "shop.events>orders-history.events") || !slices.Contains(got, "orders-history.events>orders") {
			t.Errorf("FlowEdges(%s) = %v: the read model's queue is not on its way", rk, got)
		}
	}
	if got := a.FlowEdges("orders", "shop.events", "payment.authorized"); slices.Contains(got, "shop.events>orders-history.events") {
		t.Errorf("FlowEdges(payment.authorized) = %v: the read model is not bound to it", got)
	}
	if got := a.FlowEdges("orders", "", "orders-history.events"); !slices.Equal(got, []string{"orders-history.events>orders"}) {
		t.Errorf("FlowEdges of a retry to the read model = %v", got)
	}
	// Its box is wide enough for its name (a 12px bold name is about 7px a character).
	q, _ := a.Node("orders-history.events")
	if w := 2 * q.HalfWidth(); w < 7*len(q.Name)+30 {
		t.Errorf("orders-history.events' box is %dpx wide for a %d-character name", w, len(q.Name))
	}
}
