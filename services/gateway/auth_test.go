package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a key set that the test can rotate, counting fetches.
type jwksServer struct {
	mu      sync.Mutex
	pub     ed25519.PublicKey
	fetches atomic.Int32
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	pub := s.pub
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":%q,"kid":%q,"alg":"EdDSA","use":"sig"},
		{"kty":"RSA","kid":"ignored","n":"AQAB","e":"AQAB"}]}`, base64.RawURLEncoding.EncodeToString(pub), kidOf(pub))
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func TestJWKSRefetch(t *testing.T) {
	t.Parallel()
	first := newKey(t)
	srv := &jwksServer{pub: first.Public().(ed25519.PublicKey)}
	users := httptest.NewServer(srv)
	t.Cleanup(users.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := newAuthenticator(newUpstream("users", users.URL, newHTTPClient(time.Second), 5, time.Second, log))
	a.keys.minRefresh = 300 * time.Millisecond
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)

	// Lazily fetched on first use, then cached.
	for range 3 {
		if p, err := a.verify(ctx, signToken(t, first.Seed(), claimsFor("u1", exp))); err != nil || p.UserID != "u1" {
			t.Fatalf("verify: %v %+v", err, p)
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// Unknown kids (made-up or a key not published yet) cause at most one refetch per
	// interval, however many tokens carry them.
	second := newKey(t)
	for range 20 {
		if _, err := a.verify(ctx, signToken(t, second.Seed(), claimsFor("u2", exp))); !errors.Is(err, errUnknownKid) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches within the refresh interval, want 1", n)
	}
	// users rotates its key: once the interval has passed, the new kid triggers a
	// refetch and tokens signed with the new key verify.
	srv.mu.Lock()
	srv.pub = second.Public().(ed25519.PublicKey)
	srv.mu.Unlock()
	time.Sleep(350 * time.Millisecond)
	if p, err := a.verify(ctx, signToken(t, second.Seed(), claimsFor("u2", exp))); err != nil || p.UserID != "u2" {
		t.Fatalf("after rotation: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// A token without a subject is refused even when correctly signed.
	if _, err := a.verify(ctx, signToken(t, second.Seed(), claimsFor("", exp))); err == nil {
		t.Fatal("token without sub accepted")
	}
	// Wrong issuer.
	c := claimsFor("u2", exp)
	c.Issuer = "someone"
	if _, err := a.verify(ctx, signToken(t, second.Seed(), c)); !errors.Is(err, jwt.ErrTokenInvalidIssuer) {
		t.Fatalf("wrong issuer: %v", err)
	}
}

// TestJWKSUnavailable: when users cannot be reached the token is not the client's fault:
// the answer is 502 (then 503 once the breaker opens), never a 401.
func TestJWKSUnavailable(t *testing.T) {
	t.Parallel()
	users := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(users.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	up := newUpstream("users", users.URL, newHTTPClient(time.Second), 2, time.Minute, log)
	a := newAuthenticator(up)
	tok := signToken(t, newKey(t).Seed(), claimsFor("u1", time.Now().Add(time.Hour)))
	for i, want := range []int{502, 503} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/api/v1/home", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		a.identify(handle(log, func(w http.ResponseWriter, r *http.Request) error {
			_, err := requireUser(r, up)
			return err
		})).ServeHTTP(rec, r)
		if rec.Code != want {
			t.Fatalf("request %d: %d %s, want %d", i, rec.Code, rec.Body, want)
		}
	}
}
