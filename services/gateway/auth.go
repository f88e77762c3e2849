package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"microlab/services/platform/httpx"
)

// The token contract users signs (see services/users/token.go).
const (
	tokenIssuer   = "microlab-users"
	tokenAudience = "microlab"
	// jwksMinRefresh: an unknown kid triggers a refetch of the key set (users may have
	// rotated its key) at most this often, so tokens with made-up kids cannot turn the
	// gateway into a flood of requests to users.
	jwksMinRefresh = 10 * time.Second
)

// principal is the authenticated caller, from a verified token.
type principal struct {
	UserID string
	Email  string
	Name   string
}

type tokenClaims struct {
	Email string `json:"email"`
	Name  string `json:"name"`
	jwt.RegisteredClaims
}

var (
	errNoToken    = errors.New("no bearer token")
	errUnknownKid = errors.New("token signed with an unknown key")
)

// keySet is the token issuers' public keys by kid, fetched lazily from each issuer's
// GET /internal/jwks and cached. Reads take the read lock only; fetches are serialised
// by fetchMu so a burst of requests with a new kid makes one fetch, not hundreds.
//
// The issuers are users and, for the strangler fig, the monolith: each signs with a key
// of its own, and the set is the union of both sets by kid, so a token verifies whichever
// side the login was routed to, and keeps verifying after the route moves.
type keySet struct {
	sources    []*upstream      // users first; nil entries are skipped
	minRefresh time.Duration    // jwksMinRefresh
	now        func() time.Time // the clock (time.Now; a test's own clock when time is the subject)

	fetchMu sync.Mutex
	mu      sync.RWMutex
	keys    map[string]ed25519.PublicKey
	fetched time.Time // of the last successful fetch; zero: never
}

func (k *keySet) lookup(kid string) (ed25519.PublicKey, time.Time, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	pk, ok := k.keys[kid]
	return pk, k.fetched, ok
}

// key returns the public key for kid, fetching the set if the kid is unknown and the
// last fetch is older than jwksMinRefresh. A failed fetch is an upstream error (the
// caller's token may be fine); an unknown kid after a fresh fetch is the token's fault.
func (k *keySet) key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	if pk, _, ok := k.lookup(kid); ok {
		return pk, nil
	}
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	pk, fetched, ok := k.lookup(kid) // someone may have fetched while we waited
	if ok {
		return pk, nil
	}
	if !fetched.IsZero() && k.now().Sub(fetched) < k.minRefresh {
		return nil, errUnknownKid
	}
	keys, err := k.fetch(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.keys, k.fetched = keys, k.now()
	k.mu.Unlock()
	if pk, ok := keys[kid]; ok {
		return pk, nil
	}
	return nil, errUnknownKid
}

// jwkSet is the wire form of GET /internal/jwks.
type jwkSet struct {
	Keys []struct {
		Kty, Crv, X, Kid, Alg, Use string
	} `json:"keys"`
}

// fetch reads every issuer's set at once and merges them. One issuer that cannot be
// read costs only its own tokens (its kids stay unknown until the next refetch); the
// fetch fails only when no issuer answered.
func (k *keySet) fetch(ctx context.Context) (map[string]ed25519.PublicKey, error) {
	type result struct {
		keys map[string]ed25519.PublicKey
		err  error
	}
	var srcs []*upstream
	for _, u := range k.sources {
		if u != nil {
			srcs = append(srcs, u)
		}
	}
	results := make([]result, len(srcs))
	var wg sync.WaitGroup
	for i, u := range srcs {
		wg.Go(func() {
			keys, err := fetchJWKS(ctx, u)
			results[i] = result{keys, err}
		})
	}
	wg.Wait()
	keys := map[string]ed25519.PublicKey{}
	var firstErr error
	answered := false
	for _, r := range results {
		if r.err != nil {
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		answered = true
		for kid, pk := range r.keys {
			keys[kid] = pk
		}
	}
	if !answered {
		return nil, firstErr
	}
	return keys, nil
}

// fetchJWKS reads one issuer's key set.
func fetchJWKS(ctx context.Context, u *upstream) (map[string]ed25519.PublicKey, error) {
	rep, err := u.call(ctx, request{Method: http.MethodGet, Path: "/internal/jwks"})
	if err != nil {
		return nil, err
	}
	bad := func(err error) error {
		return &upstreamCallError{Upstream: u.name, Op: "GET /internal/jwks", Err: err}
	}
	if rep.Status != http.StatusOK {
		return nil, bad(fmt.Errorf("status %d", rep.Status))
	}
	var set jwkSet
	if err := json.Unmarshal(rep.Body, &set); err != nil {
		return nil, bad(fmt.Errorf("decode key set: %w", err))
	}
	keys := map[string]ed25519.PublicKey{}
	for _, j := range set.Keys {
		// Only Ed25519 signing keys: whatever else a set might hold is never used.
		if j.Kty != "OKP" || j.Crv != "Ed25519" || (j.Alg != "" && j.Alg != "EdDSA") || (j.Use != "" && j.Use != "sig") || j.Kid == "" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			continue
		}
		keys[j.Kid] = ed25519.PublicKey(x)
	}
	return keys, nil
}

// authenticator verifies bearer tokens.
type authenticator struct {
	keys   *keySet
	parser *jwt.Parser
}

// newAuthenticator verifies tokens issued by any of issuers (users, and the monolith
// when there is one).
func newAuthenticator(issuers ...*upstream) *authenticator {
	return &authenticator{
		keys: &keySet{sources: issuers, minRefresh: jwksMinRefresh, now: time.Now},
		// WithValidMethods is the defence against algorithm confusion: the token's own
		// header says which algorithm to verify with, and without this list a token
		// claiming "none", or HS256 "signed" with the (public!) key as an HMAC secret,
		// could be accepted. Only EdDSA is ever right here.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
			jwt.WithIssuer(tokenIssuer),
			jwt.WithAudience(tokenAudience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(5*time.Second), // clock skew between users and the gateway
		),
	}
}

// verify checks a raw token: signature with the key named by its kid, alg, iss, aud,
// exp. Errors are either jwt's (the token is bad) or an upstream's (keys unavailable).
func (a *authenticator) verify(ctx context.Context, raw string) (principal, error) {
	var claims tokenClaims
	_, err := a.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errUnknownKid
		}
		return a.keys.key(ctx, kid)
	})
	if err != nil {
		return principal{}, err
	}
	if claims.Subject == "" {
		return principal{}, fmt.Errorf("%w: no subject", jwt.ErrTokenInvalidSubject)
	}
	return principal{UserID: claims.Subject, Email: claims.Email, Name: claims.Name}, nil
}

// identity is what the identify middleware learnt about the caller.
type identity struct {
	p   principal
	err error // errNoToken, a token error, or an upstream error
}

type identityKey struct{}

// identify verifies the bearer token, if any, before anything else looks at the request:
// the rate limiter needs to know who is calling. It never rejects; routes that need a
// user ask requireUser, which turns a missing or bad token into a 401.
func (a *authenticator) identify(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identity{err: errNoToken}
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, token, ok := strings.Cut(h, " ")
			token = strings.TrimSpace(token)
			switch {
			case !ok || !strings.EqualFold(scheme, "Bearer") || token == "":
				id.err = fmt.Errorf("%w: Authorization is not \"Bearer <token>\"", jwt.ErrTokenMalformed)
			default:
				id.p, id.err = a.verify(r.Context(), token)
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

// requireUser returns the caller, or the 401 (or 502/503 when users' keys could not be
// fetched) that answers a request without a valid token.
func requireUser(r *http.Request, users *upstream) (principal, error) {
	id, ok := r.Context().Value(identityKey{}).(identity)
	if !ok {
		id.err = errNoToken
	}
	if id.err == nil {
		return id.p, nil
	}
	unauthorized := func(code, msg string) error {
		return withHeader(httpx.Errorf(http.StatusUnauthorized, code, "%s", msg),
			"WWW-Authenticate", fmt.Sprintf(`Bearer realm="microlab", error="invalid_token", error_description=%q`, msg))
	}
	switch {
	case errors.Is(id.err, errNoToken):
		return principal{}, withHeader(httpx.Errorf(http.StatusUnauthorized, "unauthorized",
			"this endpoint needs a token: Authorization: Bearer <token from POST /api/v1/auth/login>"),
			"WWW-Authenticate", `Bearer realm="microlab"`)
	case errors.Is(id.err, jwt.ErrTokenExpired):
		return principal{}, unauthorized("token_expired", "the token has expired; log in again")
	case isUpstreamFailure(id.err):
		return principal{}, users.fail(r.Context(), id.err)
	default:
		return principal{}, unauthorized("invalid_token", "the token is not valid")
	}
}

// isUpstreamFailure reports an error that came from calling an upstream rather than from
// the token (transport errors, an open breaker).
func isUpstreamFailure(err error) bool {
	var ue *upstreamCallError
	return errors.As(err, &ue)
}
