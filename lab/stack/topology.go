package stack

import (
	"fmt"
	"net/url"

	"microlab/services/platform/pg"
)

// The values of the db.topology setting (control.DBTopology), where the services' data
// lives.
const (
	TopologyPerService = "per-service" // a database per service, which only its role may open
	TopologyShared     = "shared"      // one database, a schema per service (search_path)
)

// SharedDB is the shared topology's database.
const SharedDB = "shop"

// Shared reports whether the services run on the shared database.
func (c Config) Shared() bool { return c.Topology == TopologyShared }

// WithTopology returns c with the given topology.
func (c Config) WithTopology(t string) Config { c.Topology = t; return c }

// ServiceDatabaseURL is the URL a service connects with, as its own role: its own
// database, or in the shared topology database shop with search_path=<service>, so its
// unqualified tables (the kit's outbox, inbox and goose tables too) are in a schema of
// its own. The schema is the bare service name, so orders' SQL can name catalog.products.
func (c Config) ServiceDatabaseURL(service string) (string, error) {
	if !c.Shared() {
		return c.DatabaseURL(c.DBName(service))
	}
	role := c.DBName(service)
	pw, err := c.password(role)
	if err != nil {
		return "", err
	}
	u, err := pg.URLFor(c.AdminDatabaseURL, role, pw, c.DBName(SharedDB))
	if err != nil {
		return "", err
	}
	p, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("parse database url: %w", err)
	}
	q := p.Query()
	q.Set("search_path", service)
	p.RawQuery = q.Encode()
	return p.String(), nil
}

// SharedSchemas lists the shared database's schemas, one per service with a database,
// each owned by that service's role.
func (c Config) SharedSchemas() []pg.Schema {
	var out []pg.Schema
	for _, s := range Services {
		if s.DB {
			out = append(out, pg.Schema{Name: s.Name, Role: c.DBName(s.Name)})
		}
	}
	return out
}

// SharedReads are the coupling of the shared topology: orders reads prices and stock
// from catalog's and inventory's tables instead of asking them.
func (c Config) SharedReads() []pg.Read {
	return []pg.Read{{Role: c.DBName("orders"), Schema: "catalog"}, {Role: c.DBName("orders"), Schema: "inventory"}}
}
