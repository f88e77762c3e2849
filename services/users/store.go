package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/pg"
)

// Store is users' SQL. Calls join the transaction in ctx (pg.InTx).
type Store struct {
	pool *pgxpool.Pool
}

// User is a user as the API shows it (never with its password hash).
type User struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
}

var errNotFound = errors.New("not found")

// Insert creates a user. It reports false, without an error, if the email is taken:
// ON CONFLICT DO NOTHING leaves the transaction usable, unlike a unique violation.
func (s *Store) Insert(ctx context.Context, u User, passwordHash []byte) (bool, error) {
	tag, err := pg.Q(ctx, s.pool).Exec(ctx, `INSERT INTO users (id, email, name, password_hash)
		VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING`, u.ID, u.Email, u.Name, string(passwordHash))
	if err != nil {
		return false, fmt.Errorf("insert user: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// ByEmail returns a user and its password hash, or errNotFound. email must be normalised.
func (s *Store) ByEmail(ctx context.Context, email string) (User, []byte, error) {
	var (
		u    User
		hash string
	)
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT id::text, email, name, password_hash FROM users WHERE email = $1`, email).
		Scan(&u.ID, &u.Email, &u.Name, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, nil, errNotFound
	}
	if err != nil {
		return User{}, nil, fmt.Errorf("user by email: %w", err)
	}
	return u, []byte(hash), nil
}

// Get returns a user by id, or errNotFound. id must be a valid UUID.
func (s *Store) Get(ctx context.Context, id string) (User, error) {
	var u User
	err := pg.Q(ctx, s.pool).QueryRow(ctx, `SELECT id::text, email, name FROM users WHERE id = $1`, id).
		Scan(&u.ID, &u.Email, &u.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, errNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}
