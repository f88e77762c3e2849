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
	// Consumer is, for a queue, the service whose instances consume it: not always the
	// queue's first word (orders-history.events is consumed by orders).
	Consumer string
}

// HalfWidth is half a queue box's width: wide enough for its name and depth.
func (n Node) HalfWidth() int { return max(72, (7*len(n.Name)+36)/2) }

// Edge is one line of the map. Its id, "<from>><to>", is what "flow" messages count.
type Edge struct {
	From, To string
	Kind     string // http, publish, bind, consume, sql
}

// ID is the edge's id.
func (e Edge) ID() string { return e.From + ">" + e.To }

// Arch is the shop's topology as the map draws it.
type Arch struct {
	// Topology is the db.topology the databases are drawn for: per-service or shared.
	Topology string
	Nodes    []Node
	Edges    []Edge
	// Bindings: exchange → routing key → the queues bound to it. A copy of what each
	// service declares (services are package main and cannot be imported): a new
	// binding there needs a line here for its messages to animate.
	Bindings map[string]map[string][]string
	// EdgeLabels are words drawn on a line, by edge id (WithPatterns: "orders>catalog"
	// says HTTP or gRPC).
	EdgeLabels map[string]string
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
		if q, ok := a.Node(routingKey); ok && q.Kind == "queue" {
			return []string{routingKey + ">" + q.Consumer}
		}
		return nil
	}
	if _, ok := a.Node(source); ok {
		out = append(out, source+">"+exchange)
	}
	for _, name := range a.Bindings[exchange][routingKey] {
		q, _ := a.Node(name)
		out = append(out, exchange+">"+name, name+">"+q.Consumer)
	}
	return out
}

// ShopArch is the shop: eight services, two exchanges, six work queues and the
// gateway's cache-invalidation queue, seven databases.
//
// orders has two queues. orders.events drives its sagas; orders-history.events feeds
// the order history read model (CQRS, read.model=cqrs: services/orders/history.go), a
// consumer of its own with its own retries and DLQ (orders-history.dlq). The map draws
// it as a queue box of its own, bound to shop.events and consumed by orders, rather
// than as a second number on orders' box: that way a learner sees order.placed fan out
// to payments AND to the read model, sees that the read model is kept from events only
// (no line from orders' tables to it), and sees its backlog grow on its own when the
// projection is slow, while the saga's queue stays empty.
func ShopArch() Arch {
	a := Arch{Topology: "per-service", Bindings: map[string]map[string][]string{
		"shop.events": {
			"order.placed":       {"payments.events", "orders-history.events"},
			"payment.authorized": {"inventory.events", "orders.events"},
			"payment.declined":   {"orders.events"},
			"payment.refunded":   {"orders.events"},
			"stock.reserved":     {"shipping.events", "orders.events"},
			"stock.rejected":     {"payments.events", "orders.events"},
			"stock.released":     {"orders.events"},
			"shipment.scheduled": {"orders.events"},
			"shipment.failed":    {"inventory.events", "payments.events", "orders.events"},
			"order.confirmed":    {"notifications.events", "payments.events", "orders-history.events"},
			"order.cancelled":    {"notifications.events", "shipping.events", "orders-history.events"},
			"user.registered":    {"notifications.events"},
			// Not a work queue: the gateway's own exclusive queue, one per instance (in
			// the lab, one instance: gateway-1), that keeps its response cache fresh.
			"product.price_changed": {GatewayCacheQueue},
		},
		"shop.commands": {
			"payments.authorize": {"payments.events"},
			"payments.refund":    {"payments.events"},
			"inventory.reserve":  {"inventory.events"},
			"inventory.release":  {"inventory.events"},
			"shipping.schedule":  {"shipping.events"},
		},
	}}
	svc := func(name string, x, y int) { a.Nodes = append(a.Nodes, Node{Name: name, Kind: "service", X: x, Y: y}) }
	svc("gateway", 80, 330)
	svc("users", 260, 110)
	svc("catalog", 260, 560)
	svc("orders", 300, 330)
	svc("payments", 900, 110)
	svc("inventory", 1010, 330)
	svc("shipping", 900, 560)
	svc("notifications", 620, 610)
	a.Nodes = append(a.Nodes, Node{Name: "shop.events", Kind: "exchange", X: 620, Y: 230},
		Node{Name: "shop.commands", Kind: "exchange", X: 620, Y: 420})
	queue := func(name, consumer string, x, y int) {
		a.Nodes = append(a.Nodes, Node{Name: name, Kind: "queue", X: x, Y: y, Consumer: consumer})
	}
	queue("orders.events", "orders", 455, 330)
	queue("orders-history.events", "orders", 450, 450)
	queue("payments.events", "payments", 770, 170)
	queue("inventory.events", "inventory", 850, 330)
	queue("shipping.events", "shipping", 770, 490)
	queue("notifications.events", "notifications", 620, 535)
	queue(GatewayCacheQueue, "gateway", 150, 450)
	db := func(service string, x, y int) {
		a.Nodes = append(a.Nodes, Node{Name: "db-" + service, Kind: "db", X: x, Y: y})
	}
	db("users", 260, 40)
	db("catalog", 260, 630)
	db("orders", 300, 405)
	db("payments", 900, 40)
	db("inventory", 1010, 405)
	db("shipping", 900, 630)
	db("notifications", 770, 610)
	for _, to := range []string{"users", "catalog", "orders"} {
		a.Edges = append(a.Edges, Edge{"gateway", to, "http"})
	}
	// orders asks catalog for prices at checkout (catalog.transport: HTTP or gRPC).
	a.Edges = append(a.Edges, Edge{"orders", "catalog", "http"})
	for _, from := range []string{"users", "catalog", "orders", "payments", "inventory", "shipping", "notifications"} {
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
			a.Edges = append(a.Edges, Edge{n.Name, n.Consumer, "consume"})
		case "db":
			a.Edges = append(a.Edges, Edge{n.Name[len("db-"):], n.Name, "sql"})
		}
	}
	return a
}

// GatewayCacheQueue is the queue lab up's gateway (instance gateway-1) hears
// product.price_changed on: gateway.cache.<instance>, exclusive to that instance
// (services/gateway/cache.go says why it is not a competing-consumer queue).
const GatewayCacheQueue = "gateway.cache.gateway-1"

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
	out := Arch{Topology: "shared", Bindings: a.Bindings, EdgeLabels: a.EdgeLabels}
	for _, n := range a.Nodes {
		if n.Kind != "db" {
			out.Nodes = append(out.Nodes, n)
		}
	}
	out.Nodes = append(out.Nodes, Node{Name: SharedDBNode, Kind: "db", X: 620, Y: 330})
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
	Rate float64 `json:"rate"` // requests/s over 1m
	// MsgRate is messages handled/s over 1m, all its queues; Consumes says whether the
	// service consumes any (it has the series), so a message-driven service at work does
	// not look idle next to its ~0 HTTP rate.
	MsgRate  float64 `json:"msgRate"`
	Consumes bool    `json:"consumes"`
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
	msgs := ""
	if h.Consumes {
		msgs = fmt.Sprintf(" · %.1f msg/s", h.MsgRate)
	}
	return fmt.Sprintf("%.1f req/s%s · %.1f%% · p95 %.0fms", h.Rate, msgs, h.ErrorPct, h.P95Ms)
}

// Health is the "health" message's data.
type Health struct {
	Services map[string]ServiceHealth `json:"services"`
	Queues   map[string]int           `json:"queues"` // ready messages per queue
	// Instances are, per service, the instances connected to the broker right now, by
	// name (payments-1, payments-2): an instance names its connections after itself
	// ("payments-2/consume", "payments-2/publish"). Prometheus cannot tell instances
	// apart (it knows addresses); the broker can. A service with no instance connected is
	// absent, and everything is when the management API did not answer (nil).
	Instances map[string][]string `json:"instances,omitempty"`
	// Patterns are the numbers the map's pattern strip shows (cache hit ratio, healthy
	// instances behind the registry).
	Patterns PatternLive `json:"patterns"`
	Error    string      `json:"error,omitempty"`
}

// OverviewModel is the overview page.
type OverviewModel struct {
	Arch   Arch
	Health Health
	// Faults in force, by service (an instance's under its service).
	Faults map[string][]FaultRow
	// Patterns are the optional patterns the settings have on (Arch.WithPatterns).
	Patterns []ActivePattern
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
