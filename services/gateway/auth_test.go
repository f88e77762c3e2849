package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"microlab/services/platform/testenv"
)

// countingTransport passes every request on to the real upstream and counts those for
// path: how the tests see how often the gateway fetched users' key set.
type countingTransport struct {
	base http.RoundTripper
	path string
	n    atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == c.path {
		c.n.Add(1)
	}
	return c.base.RoundTrip(r)
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// usersLogin logs in at users itself (not through a gateway) and returns the token.
func usersLogin(t *testing.T, users, email, password string) string {
	t.Helper()
	a := do(t, "POST", users+"/login", "", map[string]string{"email": email, "password": password}, nil)
	var s struct{ Token string }
	a.decode(t, &s)
	if a.Status != http.StatusOK || s.Token == "" {
		t.Fatalf("login %s at users: %d %s", email, a.Status, a.Body)
	}
	return s.Token
}

// TestJWKSRefetch runs the real users and rotates its key the way an operator does:
// restart it with a new JWT_SEED.
func TestJWKSRefetch(t *testing.T) {
	t.Parallel()
	first, second := newKey(t), newKey(t)
	bin := filepath.Join(buildUpstreams(t), "users")
	env := testenv.ServiceEnv(t, "users", true)
	env["JWT_SEED"] = hex.EncodeToString(first.Seed())
	env["BCRYPT_COST"] = "4"
	users := launch(t, bin, env) // on a port of its choosing, written into env: the restart below reuses it
	base := "http://" + env["HTTP_ADDR"]

	client := newHTTPClient(nil)
	fetches := &countingTransport{base: client.Transport, path: "/internal/jwks"}
	client.Transport = fetches
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := newAuthenticator(newUpstream("users", base, client, fixedKnobs(5, time.Second, time.Second), log, nil))
	// The refresh interval is the subject: the test moves a clock of its own, so the
	// verdict does not depend on how long the calls below take on a busy machine.
	clock := &fakeClock{t: time.Now()}
	a.keys.now = clock.Now
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)

	// Lazily fetched on first use, then cached.
	if n := fetches.n.Load(); n != 0 {
		t.Fatalf("%d fetches before any token was verified, want 0", n)
	}
	old := usersLogin(t, base, "alice@example.com", "alice-secret")
	alice := subjectOf(t, old)
	for range 3 {
		if p, err := a.verify(ctx, old); err != nil || p.UserID != alice || p.Name != "Alice" {
			t.Fatalf("verify: %v %+v", err, p)
		}
	}
	if n := fetches.n.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// Unknown kids (made-up or a key not published yet) cause at most one refetch per
	// interval, however many tokens carry them.
	for range 20 {
		if _, err := a.verify(ctx, signToken(t, second.Seed(), claimsFor("u2", exp))); !errors.Is(err, errUnknownKid) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := fetches.n.Load(); n != 1 {
		t.Fatalf("%d fetches within the refresh interval, want 1", n)
	}
	// users rotates its key: once the interval has passed, the new kid triggers a
	// refetch and tokens signed with the new key verify.
	users.stop(t)
	env["JWT_SEED"] = hex.EncodeToString(second.Seed())
	startProcess(t, bin, env)
	waitReady(t, base)
	// Just short of the interval: the new kid is still unknown, without a fetch.
	clock.Advance(jwksMinRefresh - time.Millisecond)
	fresh := usersLogin(t, base, "alice@example.com", "alice-secret")
	if _, err := a.verify(ctx, fresh); !errors.Is(err, errUnknownKid) {
		t.Fatalf("new kid within the interval: %v, want errUnknownKid", err)
	}
	if n := fetches.n.Load(); n != 1 {
		t.Fatalf("%d fetches within the refresh interval, want 1", n)
	}
	clock.Advance(time.Millisecond)
	if p, err := a.verify(ctx, fresh); err != nil || p.UserID != alice {
		t.Fatalf("after rotation: %v", err)
	}
	if n := fetches.n.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// users publishes only its current key: tokens of the retired one are refused (and,
	// within the interval, without another fetch).
	if _, err := a.verify(ctx, old); !errors.Is(err, errUnknownKid) {
		t.Fatalf("token of the retired key: %v", err)
	}
	if n := fetches.n.Load(); n != 2 {
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
	// A users that is down: it drops every connection (a port nobody listens on could be
	// taken by another test's service meanwhile).
	users := deadUpstream(t).url
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	up := newUpstream("users", users, newHTTPClient(nil), fixedKnobs(2, time.Minute, time.Second), log, nil)
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
