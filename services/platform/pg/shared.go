package pg

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Schema is one service's corner of a shared database: a schema of its own, owned by its
// own role, so its tables (the platform kit's outbox, inbox and goose tables included)
// never collide with another service's.
type Schema struct {
	Name string // the schema (the service's name: search_path=<Name>)
	Role string // the service's role, which owns the schema and everything in it
}

// Read lets Role read every table of Schema: in a shared database, how one service
// reaches into another's tables (the coupling database-per-service forbids).
type Read struct {
	Role, Schema string
}

// ProvisionShared creates (idempotently) database db, owned by the admin, which only the
// schemas' roles may connect to; a schema per service owned by that service's role; and
// the cross-service reads. The roles must exist (Provision creates them). Safe to call
// again after migrations have created tables: it grants on what exists now and, through
// default privileges, on what the owners create later.
func ProvisionShared(ctx context.Context, adminURL, db string, schemas []Schema, reads []Read) error {
	if !identRE.MatchString(db) {
		return fmt.Errorf("provision: invalid database name %q", db)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("provision %s: connect admin: %w", db, err)
	}
	ident := pgx.Identifier{db}.Sanitize()
	var exists bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists)
	if err == nil && !exists {
		if _, err = conn.Exec(ctx, `CREATE DATABASE `+ident); isDuplicate(err) {
			err = nil
		}
	}
	if err == nil {
		_, err = conn.Exec(ctx, fmt.Sprintf(`REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC`, ident))
	}
	for _, s := range schemas {
		if err != nil {
			break
		}
		if !identRE.MatchString(s.Name) || !identRE.MatchString(s.Role) {
			err = fmt.Errorf("invalid schema %q or role %q", s.Name, s.Role)
			break
		}
		_, err = conn.Exec(ctx, fmt.Sprintf(`GRANT CONNECT ON DATABASE %s TO %s`, ident, pgx.Identifier{s.Role}.Sanitize()))
	}
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("provision %s: %w", db, err)
	}

	// Schemas and grants live inside the database: a second connection, to it.
	u, err := withDatabase(adminURL, db)
	if err != nil {
		return err
	}
	conn, err = pgx.Connect(ctx, u)
	if err != nil {
		return fmt.Errorf("provision %s: connect: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var stmts []string
	for _, s := range schemas {
		schema, role := pgx.Identifier{s.Name}.Sanitize(), pgx.Identifier{s.Role}.Sanitize()
		stmts = append(stmts,
			fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s AUTHORIZATION %s`, schema, role),
			fmt.Sprintf(`ALTER SCHEMA %s OWNER TO %s`, schema, role))
	}
	owner := map[string]string{}
	for _, s := range schemas {
		owner[s.Name] = s.Role
	}
	for _, r := range reads {
		o, ok := owner[r.Schema]
		if !ok || !identRE.MatchString(r.Role) {
			return fmt.Errorf("provision %s: read of unknown schema %q by %q", db, r.Schema, r.Role)
		}
		schema, role := pgx.Identifier{r.Schema}.Sanitize(), pgx.Identifier{r.Role}.Sanitize()
		stmts = append(stmts,
			fmt.Sprintf(`GRANT USAGE ON SCHEMA %s TO %s`, schema, role),
			fmt.Sprintf(`GRANT SELECT ON ALL TABLES IN SCHEMA %s TO %s`, schema, role),
			fmt.Sprintf(`ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA %s GRANT SELECT ON TABLES TO %s`,
				pgx.Identifier{o}.Sanitize(), schema, role))
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil && !isDuplicate(err) {
			return fmt.Errorf("provision %s: %s: %w", db, q, err)
		}
	}
	return nil
}

// DropShared removes a database made by ProvisionShared (tests clean up with it); the
// roles are the services', dropped with their own databases.
func DropShared(ctx context.Context, adminURL, db string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("drop %s: connect admin: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, pgx.Identifier{db}.Sanitize())); err != nil {
		return fmt.Errorf("drop database %s: %w", db, err)
	}
	return nil
}

// withDatabase returns url pointing at database db, the same user.
func withDatabase(url, db string) (string, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("parse admin url: %w", err)
	}
	return URLFor(url, cfg.User, cfg.Password, db)
}
