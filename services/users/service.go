package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/pg"
	"microlab/services/shop"
)

// Service holds the rules of users: who may register, how passwords are checked.
type Service struct {
	app       *app.App
	store     *Store
	signer    *Signer
	cost      int    // bcrypt work factor
	dummyHash []byte // compared against for unknown emails (see Login)
}

// Domain outcomes, translated to HTTP once in api.go.
var (
	errEmailTaken         = errors.New("email already registered")
	errInvalidCredentials = errors.New("invalid email or password")
)

// fieldError is a validation failure of one input field (shop's: the monolith
// validates registrations by the same rules).
type fieldError = shop.FieldError

// Registration is the input of Register.
type Registration struct {
	Email    string `json:"email"`
	Name     string `json:"name"`
	Password string `json:"password"`
}

// normalizeEmail is the one spelling of an address the service stores and looks up.
func normalizeEmail(s string) string { return shop.NormalizeEmail(s) }

// validate checks a registration and returns it normalised (shop.Account.Validate).
func (r Registration) validate() (Registration, error) {
	a, err := shop.Account{Email: r.Email, Name: r.Name, Password: r.Password}.Validate()
	return Registration{Email: a.Email, Name: a.Name, Password: a.Password}, err
}

// Register creates a user and announces user.registered. The insert and the outbox row
// commit together: no user without its event, no event for a user that was rolled back.
// The password is hashed first, outside the transaction (bcrypt is slow on purpose; a
// transaction should not wait for it).
func (s *Service) Register(ctx context.Context, in Registration) (User, error) {
	return s.register(ctx, in, uuid.NewString())
}

// register is Register with the new user's id given (a demo account's fixed one).
func (s *Service) register(ctx context.Context, in Registration, id string) (User, error) {
	in, err := in.validate()
	if err != nil {
		return User{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(in.Password), s.cost)
	if err != nil {
		return User{}, fmt.Errorf("hash password: %w", err)
	}
	u := User{ID: id, Email: in.Email, Name: in.Name}
	err = pg.InTx(ctx, s.app.DB, func(ctx context.Context) error {
		fresh, err := s.store.Insert(ctx, u, hash)
		if err != nil {
			return err
		}
		if !fresh {
			return errEmailTaken
		}
		// The user id is the correlation id: everything that follows from this
		// registration (a welcome notification) is grouped under it.
		env, err := contracts.NewEnvelope(contracts.UserRegistered, "users", u.ID, "",
			contracts.UserRegisteredData{UserID: u.ID, Email: u.Email, Name: u.Name})
		if err != nil {
			return err
		}
		return s.app.Emit(ctx, env)
	})
	if err != nil {
		return User{}, fmt.Errorf("register: %w", err)
	}
	s.app.Log.InfoContext(ctx, "user registered", "user_id", u.ID)
	return u, nil
}

// Session is what a successful login returns. The token is never logged.
type Session struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Login checks a password and issues a token. Unknown email and wrong password give the
// same error AND take the same time: for an unknown email the password is still compared,
// against a dummy hash of the same cost, so response times do not reveal which
// addresses are registered (a timing oracle).
func (s *Service) Login(ctx context.Context, email, password string) (Session, error) {
	u, hash, err := s.store.ByEmail(ctx, normalizeEmail(email))
	switch {
	case errors.Is(err, errNotFound):
		_ = bcrypt.CompareHashAndPassword(s.dummyHash, []byte(password))
		return Session{}, errInvalidCredentials
	case err != nil:
		return Session{}, err
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return Session{}, errInvalidCredentials
	}
	token, exp, err := s.signer.Sign(u, time.Now())
	if err != nil {
		return Session{}, err
	}
	return Session{Token: token, ExpiresAt: exp.UTC()}, nil
}

// SeedDemo creates the demo accounts that do not exist yet, through Register, so they
// are announced (user.registered) like any other user and downstream services know them.
//
// Seeded from Go rather than by a migration with a precomputed hash: the hash then has
// the configured cost, the demo password sits in readable code instead of an opaque
// string, and the event goes through the same path as every registration. It is
// idempotent: existing accounts are skipped before hashing (restarts stay fast), and two
// instances seeding at once are settled by the insert's ON CONFLICT DO NOTHING.
func (s *Service) SeedDemo(ctx context.Context) error {
	for _, acc := range shop.DemoAccounts { // the monolith seeds the same (services/shop)
		d := Registration{Email: acc.Email, Name: acc.Name, Password: acc.Password}
		_, _, err := s.store.ByEmail(ctx, d.Email)
		if err == nil {
			continue
		}
		if !errors.Is(err, errNotFound) {
			return err
		}
		if _, err := s.register(ctx, d, acc.ID); err != nil && !errors.Is(err, errEmailTaken) {
			return err
		}
	}
	return nil
}
