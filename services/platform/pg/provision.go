package pg

import (
	"context"
	"fmt"
	"net/url"
	"regexp"

	"github.com/jackc/pgx/v5"
)

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Provision creates (idempotently) a role and a database it owns, and revokes CONNECT
// from PUBLIC so no other service's role can open it: database-per-service enforced by
// PostgreSQL, not by convention. adminURL must be a superuser connection.
func Provision(ctx context.Context, adminURL, name, password string) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("provision: invalid database name %q", name)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("provision %s: connect admin: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("provision %s: %w", name, err)
	}
	if !exists {
		// Roles are cluster-wide; two provisioners racing is harmless (duplicate is ignored).
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD %s`, ident, quoteLiteral(password))); err != nil && !IsUniqueViolation(err) && !isDuplicate(err) {
			return fmt.Errorf("provision %s: create role: %w", name, err)
		}
	}
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("provision %s: %w", name, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, ident, ident)); err != nil && !isDuplicate(err) {
			return fmt.Errorf("provision %s: create database: %w", name, err)
		}
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC`, ident)); err != nil {
		return fmt.Errorf("provision %s: revoke: %w", name, err)
	}
	return nil
}

// Drop removes a database and its role (tests clean up with it).
func Drop(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("drop %s: connect admin: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, ident)); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP ROLE IF EXISTS %s`, ident)); err != nil {
		return fmt.Errorf("drop role %s: %w", name, err)
	}
	return nil
}

// URLFor returns adminURL rewritten to connect as user/password to database db.
func URLFor(adminURL, user, password, db string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("parse admin url: %w", err)
	}
	u.User = url.UserPassword(user, password)
	u.Path = "/" + db
	return u.String(), nil
}

func quoteLiteral(s string) string {
	out := []rune{'\''}
	for _, r := range s {
		if r == '\'' {
			out = append(out, '\'')
		}
		out = append(out, r)
	}
	return string(append(out, '\''))
}

func isDuplicate(err error) bool {
	return err != nil && (regexp.MustCompile(`already exists`).MatchString(err.Error()))
}
