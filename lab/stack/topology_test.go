package stack

import (
	"slices"
	"strings"
	"testing"
)

// Per service, a service connects to its own database; shared, to shop with its own
// schema first on the search path, as the same role, the admin URL's options kept.
func TestServiceDatabaseURL(t *testing.T) {
	c := Config{AdminDatabaseURL: "postgres://postgres:pw@db.example:5433/postgres?sslmode=disable", DBPrefix: "p_"}
	for _, tc := range []struct {
		topology, want string
	}{
		{"", "postgres://p_orders:p_orders@db.example:5433/p_orders?sslmode=disable"},
		{TopologyPerService, "postgres://p_orders:p_orders@db.example:5433/p_orders?sslmode=disable"},
		{TopologyShared, "postgres://p_orders:p_orders@db.example:5433/p_shop?search_path=orders&sslmode=disable"},
	} {
		got, err := c.WithTopology(tc.topology).ServiceDatabaseURL("orders")
		if err != nil || got != tc.want {
			t.Errorf("%q: %s (%v), want %s", tc.topology, got, err, tc.want)
		}
	}
	env, err := c.WithTopology(TopologyShared).Env(Service{Name: "inventory", DB: true}, "inventory-1")
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "DATABASE_URL=") }); i < 0 ||
		!strings.Contains(env[i], "/p_shop?search_path=inventory") {
		t.Errorf("shared env: %v", env)
	}
	var schemas []string
	for _, s := range c.SharedSchemas() {
		schemas = append(schemas, s.Name+":"+s.Role)
	}
	if want := []string{"users:p_users", "catalog:p_catalog", "orders:p_orders", "payments:p_payments",
		"inventory:p_inventory", "shipping:p_shipping", "notifications:p_notifications", "monolith:p_monolith"}; !slices.Equal(schemas, want) {
		t.Errorf("schemas %v, want %v", schemas, want)
	}
}
