// Package platform is the kit every shop service is built from. Its subpackages give one
// place to each cross-cutting concern, so that instrumentation, the lab's toggles and the
// reliability mechanics are written once:
//
//   - config:  one Config struct per process, read from the environment, logged masked
//   - pg:      connection pool, embedded goose migrations, the transaction in the context
//   - bus:     AMQP connection that recovers, publisher confirms, consumers with middleware,
//     retry queues and dead-lettering
//   - outbox:  the transactional outbox and its relay
//   - inbox:   the idempotent consumer
//   - httpx:   servers, JSON errors, strict decoding, health endpoints, clients with timeouts
//   - control: lab settings read at start and applied live from lab.control
//   - app:     the start-up sequence every service shares
//   - testenv: per-test PostgreSQL databases and RabbitMQ vhosts for real integration tests
//
// platform imports nothing from the services except contracts (a test checks it).
package platform

import "embed"

// Migrations are the kit's own tables (outbox, inbox), applied to every service database
// before the service's migrations, versioned in table goose_platform.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the kit's migrations rooted at their directory.
func Migrations() embed.FS { return migrations }
