package main

import (
	"errors"
	"net/http"

	"github.com/google/uuid"

	"microlab/services/platform/httpx"
)

// api registers users' internal HTTP API (the gateway exposes the first two publicly):
//
//	POST /users          {email, name, password} → 201 {id, email, name} | 400 | 409 email_taken
//	POST /login          {email, password} → 200 {token, expiresAt} | 401 invalid_credentials
//	GET  /users/{id}     → 200 {id, email, name} | 404 not_found
//	GET  /internal/jwks  → 200 {keys: [Ed25519 public key]} (what verifiers need)
func (s *Service) api(mux *http.ServeMux) {
	log := s.app.Log
	mux.Handle("POST /users", httpx.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		var in Registration
		if err := httpx.Decode(w, r, &in, 0); err != nil {
			return err
		}
		u, err := s.Register(r.Context(), in)
		if err != nil {
			return toHTTP(err)
		}
		httpx.WriteJSON(w, http.StatusCreated, u)
		return nil
	}))
	mux.Handle("POST /login", httpx.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Email    string `json:"email"`
			Password string `json:"password"`
		}
		if err := httpx.Decode(w, r, &in, 0); err != nil {
			return err
		}
		switch {
		case in.Email == "":
			return toHTTP(&fieldError{Field: "email", Problem: "is required"})
		case in.Password == "":
			return toHTTP(&fieldError{Field: "password", Problem: "is required"})
		}
		sess, err := s.Login(r.Context(), in.Email, in.Password)
		if err != nil {
			return toHTTP(err)
		}
		w.Header().Set("Cache-Control", "no-store") // a token must not sit in a cache
		httpx.WriteJSON(w, http.StatusOK, sess)
		return nil
	}))
	mux.Handle("GET /users/{id}", httpx.Handle(log, func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		// Anything that is not a UUID cannot be a user id: answer 404 without asking the
		// database (which would reject it as a malformed uuid, a 500).
		if _, err := uuid.Parse(id); err != nil {
			return httpx.Errorf(http.StatusNotFound, "not_found", "no user %q", id)
		}
		u, err := s.store.Get(r.Context(), id)
		if errors.Is(err, errNotFound) {
			return httpx.Errorf(http.StatusNotFound, "not_found", "no user %q", id)
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, u)
		return nil
	}))
	mux.Handle("GET /internal/jwks", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Public keys only; a short cache lifetime is harmless (verifiers refetch on an
		// unknown kid anyway).
		w.Header().Set("Cache-Control", "public, max-age=300")
		httpx.WriteJSON(w, http.StatusOK, s.signer.JWKS())
	}))
}

// toHTTP translates users' domain errors into API errors, once, at the edge.
func toHTTP(err error) error {
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		return httpx.Errorf(http.StatusBadRequest, "invalid_field", "%s %s", fe.Field, fe.Problem)
	case errors.Is(err, errEmailTaken):
		return httpx.Errorf(http.StatusConflict, "email_taken", "an account with this email already exists")
	case errors.Is(err, errInvalidCredentials):
		return httpx.Errorf(http.StatusUnauthorized, "invalid_credentials", "email or password is wrong")
	}
	return err
}
