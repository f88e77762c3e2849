package views

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Node is one box of the architecture map.
type Node struct {
	Name string // data-testid="node-<Name>"
	Kind string // service, exchange, queue, db
	X, Y int    // centre, in the SVG's coordinates (viewBox 0 0 1100 660)
}

// Edge is one line of the map. Its id, "<from>><to>", is what "flow" messages count.
type Edge struct {
	From, To string
	Kind     string // http, publish, bind, consume, sql
}

// ID is the edge's id.
func (e Edge) ID() string { return e.From + ">" + e.To }

// Arch is the shop's topology as the map draws it.
type Arch struct {
	Nodes []Node
	Edges []Edge
	// Bindings: exchange → routing key → the queues bound to it. A copy of what each
	// service declares (services are package main and cannot be imported): a new
	// binding there needs a line here for its messages to animate.
	Bindings map[string]map[string][]string
}

// Node returns a node by name.
func (a Arch) Node(name string) (Node, bool) {
	i := slices.IndexFunc(a.Nodes, func(n Node) bool { return n.Name == name })
	if i < 0 {
		return Node{}, false
	}
	return a.Nodes[i], true
}

// Services are the service nodes' names.
func (a Arch) Services() []string {
	var out []string
	for _, n := range a.Nodes {
		if n.Kind == "service" {
			out = append(out, n.Name)
		}
	}
	return out
}

// FlowEdges returns the edges one message travels: its publisher to the exchange, the
// exchange to every queue bound to its routing key, each queue to its consumer. A
// message republished to a queue directly (a retry, a replay: default exchange, routing
// key = queue name) goes to that queue only.
func (a Arch) FlowEdges(source, exchange, routingKey string) []string {
	var out []string
	if exchange == "" {
		if _, ok := a.Node(routingKey); ok {
			return []string{routingKey + ">" + consumerOf(routingKey)}
		}
		return nil
	}
	if _, ok := a.Node(source); ok {
		out = append(out, source+">"+exchange)
	}
	for _, q := range a.Bindings[exchange][routingKey] {
		out = append(out, exchange+">"+q, q+">"+consumerOf(q))
	}
	return out
}

func consumerOf(queue string) string {
	for i := range len(queue) {
		if queue[i] == '.' {
			return queue[:i]
		}
	}
	return queue
}

// ShopArch is the shop: eight services, two exchanges, five work queues, seven
// databases.
func ShopArch() Arch {
	a := Arch{Bindings: map[string]map[string][]string{
		"shop.events": {
			"order.placed":       {"payments.events"},
			"payment.authorized": {"inventory.events", "orders.events"},
			"payment.declined":   {"orders.events"},
			"payment.refunded":   {"orders.events"},
			"stock.reserved":     {"shipping.events", "orders.events"},
			"stock.rejected":     {"payments.events", "orders.events"},
			"stock.released":     {"orders.events"},
			"shipment.scheduled": {"orders.events"},
			"shipment.failed":    {"inventory.events", "payments.events", "orders.events"},
			"order.confirmed":    {"notifications.events", "payments.events"},
			"order.cancelled":    {"notifications.events", "shipping.events"},
			"user.registered":    {"notifications.events"},
		},
		"shop.commands": {
			"payments.authorize": {"payments.events"},
			"payments.refund":    {"payments.events"},
			"inventory.reserve":  {"inventory.events"},
			"inventory.release":  {"inventory.events"},
			"shipping.schedule":  {"shipping.events"},
		},
	}}
	svc := func(name string, x, y int) { a.Nodes = append(a.Nodes, Node{name, "service", x, y}) }
	svc("gateway", 80, 330)
	svc("users", 260, 110)
	svc("catalog", 260, 560)
	svc("orders", 300, 330)
	svc("payments", 900, 110)
	svc("inventory", 1010, 330)
	svc("shipping", 900, 560)
	svc("notifications", 620, 610)
	a.Nodes = append(a.Nodes, Node{"shop.events", "exchange", 620, 230}, Node{"shop.commands", "exchange", 620, 420})
	for _, q := range []Node{{"orders.events", "queue", 455, 330}, {"payments.events", "queue", 770, 170},
		{"inventory.events", "queue", 850, 330}, {"shipping.events", "queue", 770, 490},
		{"notifications.events", "queue", 620, 535}} {
		a.Nodes = append(a.Nodes, q)
	}
	for _, d := range []Node{{"db-users", "db", 260, 40}, {"db-catalog", "db", 260, 630}, {"db-orders", "db", 300, 405},
		{"db-payments", "db", 900, 40}, {"db-inventory", "db", 1010, 405}, {"db-shipping", "db", 900, 630},
		{"db-notifications", "db", 770, 610}} {
		a.Nodes = append(a.Nodes, d)
	}
	for _, to := range []string{"users", "catalog", "orders"} {
		a.Edges = append(a.Edges, Edge{"gateway", to, "http"})
	}
	for _, from := range []string{"users", "orders", "payments", "inventory", "shipping", "notifications"} {
		a.Edges = append(a.Edges, Edge{from, "shop.events", "publish"})
	}
	a.Edges = append(a.Edges, Edge{"orders", "shop.commands", "publish"})
	seen := map[string]bool{}
	for _, x := range []string{"shop.events", "shop.commands"} {
		for _, rk := range slices.Sorted(maps.Keys(a.Bindings[x])) {
			for _, q := range a.Bindings[x][rk] {
				if e := (Edge{x, q, "bind"}); !seen[e.ID()] {
					seen[e.ID()] = true
					a.Edges = append(a.Edges, e)
				}
			}
		}
	}
	for _, n := range a.Nodes {
		switch n.Kind {
		case "queue":
			a.Edges = append(a.Edges, Edge{n.Name, consumerOf(n.Name), "consume"})
		case "db":
			a.Edges = append(a.Edges, Edge{n.Name[len("db-"):], n.Name, "sql"})
		}
	}
	return a
}

// SharedDBNode is the one database of the shared topology (db.topology=shared).
const SharedDBNode = "db-shop"

// WithTopology is the map for a db.topology value: per-service as ShopArch draws it, or
// shared, where the seven databases become one, shop, in the middle of the map, with a
// line from every service that has tables in it (orders' reads of catalog's and
// inventory's tables go down that same line: that is the point).
func (a Arch) WithTopology(topology string) Arch {
	if topology != "shared" {
		return a
	}
	out := Arch{Bindings: a.Bindings}
	for _, n := range a.Nodes {
		if n.Kind != "db" {
			out.Nodes = append(out.Nodes, n)
		}
	}
	out.Nodes = append(out.Nodes, Node{SharedDBNode, "db", 620, 330})
	for _, e := range a.Edges {
		if e.Kind == "sql" {
			e.To = SharedDBNode
		}
		out.Edges = append(out.Edges, e)
	}
	return out
}

// ServiceHealth is one service's state on the map, from a "health" message (rendered
// server-side at first, then updated live).
type ServiceHealth struct {
	Rate     float64 `json:"rate"`     // requests/s over 1m
	ErrorPct float64 `json:"errorPct"` // 5xx share, percent
	P95Ms    float64 `json:"p95Ms"`
	Up       bool    `json:"up"`
	State    string  `json:"state"` // ok, warn, bad, unknown
	// Instances Prometheus scrapes, and how many of them answered the last scrape: a
	// service runs if any does (the control plane refuses a fault on one that does not).
	Instances int `json:"instances"`
	Answering int `json:"answering"`
}

// Label is the line shown under a service's name.
func (h ServiceHealth) Label() string {
	if h.State == "" || h.State == "unknown" {
		return "no data"
	}
	return fmt.Sprintf("%.1f/s · %.1f%% · p95 %.0fms", h.Rate, h.ErrorPct, h.P95Ms)
}

// Health is the "health" message's data.
type Health struct {
	Services map[string]ServiceHealth `json:"services"`
	Queues   map[string]int           `json:"queues"` // ready messages per queue
	Error    string                   `json:"error,omitempty"`
}

// OverviewModel is the overview page.
type OverviewModel struct {
	Arch   Arch
	Health Health
	// Faults in force, by service (an instance's under its service).
	Faults map[string][]FaultRow
}

// FaultBadge is what the map shows under a service with faults in force: the faults,
// with their targets when one is an instance ("latency=300ms, payments-2: down").
func FaultBadge(fs []FaultRow) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		if f.Instance != "" {
			parts = append(parts, f.Instance+": "+f.Text)
		} else {
			parts = append(parts, f.Text)
		}
	}
	return strings.Join(parts, ", ")
}
