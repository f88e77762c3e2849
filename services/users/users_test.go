package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/testenv"
	"microlab/services/shop"
)

// testSeed is a seed the tests set explicitly, so they can check it never reaches a log.
const testSeed = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// stack is users running in-process, with a queue bound to user.registered in its vhost.
type stack struct {
	base   string
	events <-chan amqp.Delivery
	logs   *testenv.LogBuffer
}

// start binds the test queue BEFORE users starts, so the demo accounts' registrations
// (emitted at start) are observed too.
func start(t *testing.T) stack {
	t.Helper()
	env := testenv.ServiceEnv(t, "users", true)
	env["JWT_SEED"] = testSeed
	env["BCRYPT_COST"] = "4" // bcrypt under the race detector is very slow at cost 10
	out := testenv.Dial(t, env["AMQP_URL"]).Tap(t, contracts.ExchangeEvents, contracts.UserRegistered)
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("users logs:\n%s", logs)
		}
	})
	base := testenv.Run(t, run, env, logs)
	return stack{base: base, events: out, logs: logs}
}

type errorBody struct {
	Error struct{ Code, Message string }
}

// call sends a JSON body (raw string) and decodes the answer into out.
func call(t *testing.T, method, url, contentType, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRegisterAndLogin(t *testing.T) {
	t.Parallel()
	s := start(t)

	// The demo accounts were announced at start.
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case d := <-s.events:
			var data contracts.UserRegisteredData
			env, err := contracts.Decode(d.Body)
			if err != nil {
				t.Fatal(err)
			}
			if err := env.DecodeData(&data); err != nil {
				t.Fatal(err)
			}
			seen[data.Email] = true
			// Seeded with shop's fixed ids: the monolith seeds the same users.
			for _, acc := range shop.DemoAccounts {
				if acc.Email == data.Email && data.UserID != acc.ID {
					t.Fatalf("demo account %s seeded as %s, want shop's id %s", acc.Email, data.UserID, acc.ID)
				}
			}
		case <-time.After(time.Minute):
			t.Fatalf("demo accounts not announced; saw %v", seen)
		}
	}

	var u User
	code := call(t, "POST", s.base+"/users", "application/json",
		`{"email":"  Carol@Example.COM ","name":"  Carol  ","password":"carol-secret"}`, &u)
	if code != http.StatusCreated || u.Email != "carol@example.com" || u.Name != "Carol" || u.ID == "" {
		t.Fatalf("register: %d %+v", code, u)
	}
	select {
	case d := <-s.events:
		env, err := contracts.Decode(d.Body)
		if err != nil {
			t.Fatal(err)
		}
		var data contracts.UserRegisteredData
		if err := env.DecodeData(&data); err != nil {
			t.Fatal(err)
		}
		if d.Type != contracts.UserRegistered || env.Source != "users" || env.CorrelationID != u.ID ||
			data != (contracts.UserRegisteredData{UserID: u.ID, Email: u.Email, Name: u.Name}) {
			t.Fatalf("user.registered: %s %+v %+v", d.Type, env, data)
		}
	case <-time.After(time.Minute):
		t.Fatal("user.registered not emitted")
	}

	long := strings.Repeat("a", 250) + "@example.com"
	for _, tc := range []struct {
		name, contentType, body string
		code                    int
		errCode, mentions       string
	}{
		{"duplicate, other case", "application/json", `{"email":"CAROL@example.com","name":"C2","password":"whatever-pw"}`, 409, "email_taken", ""},
		{"missing email", "application/json", `{"name":"X","password":"12345678"}`, 400, "invalid_field", "email"},
		{"bad email", "application/json", `{"email":"not-an-email","name":"X","password":"12345678"}`, 400, "invalid_field", "email"},
		{"display-name form", "application/json", `{"email":"X <x@example.com>","name":"X","password":"12345678"}`, 400, "invalid_field", "email"},
		{"email too long", "application/json", mustJSON(Registration{Email: long, Name: "X", Password: "12345678"}), 400, "invalid_field", "email"},
		{"blank name", "application/json", `{"email":"x1@example.com","name":"   ","password":"12345678"}`, 400, "invalid_field", "name"},
		{"name too long", "application/json", mustJSON(Registration{Email: "x2@example.com", Name: strings.Repeat("é", 101), Password: "12345678"}), 400, "invalid_field", "name"},
		{"control char in name", "application/json", `{"email":"x3@example.com","name":"a\u0007b","password":"12345678"}`, 400, "invalid_field", "name"},
		{"password too short", "application/json", `{"email":"x4@example.com","name":"X","password":"1234567"}`, 400, "invalid_field", "password"},
		{"password too long", "application/json", mustJSON(Registration{Email: "x5@example.com", Name: "X", Password: strings.Repeat("p", 73)}), 400, "invalid_field", "password"},
		{"unknown field", "application/json", `{"email":"x6@example.com","name":"X","password":"12345678","admin":true}`, 400, "unknown_field", "admin"},
		{"malformed", "application/json", `{"email":`, 400, "malformed_json", ""},
		{"wrong content type", "text/plain", `{}`, 415, "unsupported_media_type", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e errorBody
			if code := call(t, "POST", s.base+"/users", tc.contentType, tc.body, &e); code != tc.code {
				t.Fatalf("status %d, want %d (%+v)", code, tc.code, e)
			}
			if e.Error.Code != tc.errCode || !strings.Contains(e.Error.Message, tc.mentions) {
				t.Fatalf("error %+v, want code %s mentioning %q", e.Error, tc.errCode, tc.mentions)
			}
		})
	}
	// Boundaries that are accepted: 100 characters of name, 72 bytes of password.
	if code := call(t, "POST", s.base+"/users", "application/json",
		mustJSON(Registration{Email: "edge@example.com", Name: strings.Repeat("é", 100), Password: strings.Repeat("p", 72)}), nil); code != 201 {
		t.Fatalf("boundary registration: %d", code)
	}

	// Logins: the same answer for an unknown email and a wrong password.
	var wrong, unknown errorBody
	for _, tc := range []struct {
		name, body string
		code       int
		out        any
	}{
		{"wrong password", `{"email":"alice@example.com","password":"alice-wrong"}`, 401, &wrong},
		{"unknown email", `{"email":"nobody@example.com","password":"alice-secret"}`, 401, &unknown},
		{"missing password", `{"email":"alice@example.com"}`, 400, &errorBody{}},
	} {
		if code := call(t, "POST", s.base+"/login", "application/json", tc.body, tc.out); code != tc.code {
			t.Fatalf("%s: %d, want %d", tc.name, code, tc.code)
		}
	}
	if wrong != unknown || wrong.Error.Code != "invalid_credentials" {
		t.Fatalf("login failures differ or wrong code: %+v vs %+v", wrong, unknown)
	}

	// A successful login issues a token the published JWKS verifies.
	for _, acct := range []struct{ email, password, name, id string }{
		{"Alice@Example.com", "alice-secret", "Alice", ""},
		{"carol@example.com", "carol-secret", "Carol", u.ID},
	} {
		var sess Session
		before := time.Now()
		if code := call(t, "POST", s.base+"/login", "application/json",
			mustJSON(map[string]string{"email": acct.email, "password": acct.password}), &sess); code != 200 {
			t.Fatalf("login %s: %d", acct.email, code)
		}
		after := time.Now()
		// An hour (JWT_TTL's default) from the moment of the login, in whole seconds:
		// however long the call took, that moment lies between before and after.
		if lo, hi := before.Add(time.Hour).Truncate(time.Second), after.Add(time.Hour); sess.ExpiresAt.Before(lo) || sess.ExpiresAt.After(hi) {
			t.Fatalf("expiresAt %s: want an hour after the login, between %s and %s", sess.ExpiresAt, lo, hi)
		}
		claims := verify(t, s.base, sess.Token)
		if claims.Name != acct.name || claims.Email != strings.ToLower(acct.email) || claims.Subject == "" ||
			(acct.id != "" && claims.Subject != acct.id) || !claims.ExpiresAt.Time.Equal(sess.ExpiresAt) {
			t.Fatalf("claims %+v for %s", claims, acct.email)
		}
		// GET /users/{sub} finds the user.
		var got User
		if code := call(t, "GET", s.base+"/users/"+claims.Subject, "", "", &got); code != 200 || got.Name != acct.name {
			t.Fatalf("GET /users/%s: %d %+v", claims.Subject, code, got)
		}
		if strings.Contains(s.logs.String(), sess.Token) {
			t.Fatal("a token was logged")
		}
	}
	for _, id := range []string{"00000000-0000-0000-0000-000000000000", "not-a-uuid"} {
		var e errorBody
		if code := call(t, "GET", s.base+"/users/"+id, "", "", &e); code != 404 || e.Error.Code != "not_found" {
			t.Fatalf("GET /users/%s: %d %+v", id, code, e)
		}
	}
	if strings.Contains(s.logs.String(), testSeed) {
		t.Fatal("the JWT seed was logged")
	}
}

// verify checks a token the way the gateway does: EdDSA only, key from the JWKS by kid,
// issuer, audience and expiry required.
func verify(t *testing.T, base, token string) *Claims {
	t.Helper()
	var set struct{ Keys []JWK }
	if code := call(t, "GET", base+"/internal/jwks", "", "", &set); code != 200 || len(set.Keys) != 1 {
		t.Fatalf("jwks: %d %+v", code, set)
	}
	k := set.Keys[0]
	if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" || len(k.Kid) != 16 {
		t.Fatalf("jwk %+v", k)
	}
	x, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		t.Fatalf("jwk x: %v", err)
	}
	var claims Claims
	tok, err := jwt.ParseWithClaims(token, &claims, func(tok *jwt.Token) (any, error) {
		if tok.Header["kid"] != k.Kid {
			t.Fatalf("kid %v, want %s", tok.Header["kid"], k.Kid)
		}
		return ed25519.PublicKey(x), nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer(Issuer), jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil || !tok.Valid {
		t.Fatalf("token does not verify: %v", err)
	}
	return &claims
}

func TestSeedValidation(t *testing.T) {
	t.Parallel()
	for _, seed := range []string{"abc", strings.Repeat("zz", 32), strings.Repeat("ab", 33)} {
		env := map[string]string{"JWT_SEED": seed, "LAB_DATABASE_URL": "postgres://nowhere.invalid/lab"}
		err := run(context.Background(), func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "JWT_SEED must be 64 hexadecimal characters") {
			t.Fatalf("seed %q: err %v", seed, err)
		}
		if strings.Contains(err.Error(), seed) {
			t.Fatalf("the error repeats the seed: %v", err)
		}
	}
}

// The public development seed signs only for a users that no other machine reaches.
// Beyond loopback, an unset JWT_SEED stops the start before anything is connected, and
// the error says what to set and how to make a seed.
func TestDevSeedRefusedBeyondLoopback(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:8101", ":8101", "[::]:8101", "172.18.0.5:8101", "users:8101", "localhost.example:8101"} {
		env := map[string]string{"HTTP_ADDR": addr, "LAB_DATABASE_URL": "postgres://nowhere.invalid/lab",
			"DATABASE_URL": "postgres://nowhere.invalid/users"}
		err := run(context.Background(), func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "JWT_SEED is not set") ||
			!strings.Contains(err.Error(), "openssl rand -hex 32") || !strings.Contains(err.Error(), addr) {
			t.Errorf("HTTP_ADDR=%s without JWT_SEED: want the development seed refused, got %v", addr, err)
		}
	}

	// A seed from a file (compose's secrets) is a seed: the start goes on past the check
	// and fails only where the test wants it to, at the database that does not exist.
	file := filepath.Join(t.TempDir(), "jwt_seed")
	if err := os.WriteFile(file, []byte(testSeed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HTTP_ADDR": "0.0.0.0:8101", "JWT_SEED_FILE": file, "START_TIMEOUT": "2s",
		"LAB_DATABASE_URL": "postgres://nowhere.invalid/lab", "DATABASE_URL": "postgres://nowhere.invalid/users"}
	err := run(context.Background(), func(k string) string { return env[k] }, io.Discard)
	if err == nil || strings.Contains(err.Error(), "JWT_SEED") || !strings.Contains(err.Error(), "database") {
		t.Fatalf("JWT_SEED_FILE set: want a start that gets as far as the database, got %v", err)
	}
}

func TestDevSeedAllowed(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8101": true, "127.0.0.2:8101": true, "[::1]:8101": true, "localhost:8101": true,
		"0.0.0.0:8101": false, ":8101": false, "[::]:8101": false, "192.168.1.10:8101": false,
		"users:8101": false, "localhost.example:8101": false, "127.0.0.1": false, // no port: not an address
	} {
		if got := devSeedAllowed(addr); got != want {
			t.Errorf("devSeedAllowed(%q) = %v, want %v", addr, got, want)
		}
	}
}

// On loopback an unset JWT_SEED keeps the lab's first run simple: users starts, warns,
// and signs with the development seed (its JWKS holds the seed's public key).
func TestDevSeedOnLoopback(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "users", true)
	delete(env, "JWT_SEED")
	env["BCRYPT_COST"] = "4"
	logs := &testenv.LogBuffer{}
	base := testenv.Run(t, run, env, logs)
	if !strings.Contains(logs.String(), "signing with the public development seed") {
		t.Fatalf("no warning about the development seed in the logs:\n%s", logs)
	}
	seed, _ := hex.DecodeString(devJWTSeed)
	want := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	var set struct{ Keys []JWK }
	if code := call(t, "GET", base+"/internal/jwks", "", "", &set); code != 200 || len(set.Keys) != 1 {
		t.Fatalf("jwks: %d %+v", code, set)
	}
	if x, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].X); !ed25519.PublicKey(x).Equal(want) {
		t.Fatalf("the JWKS key is not the development seed's")
	}
}

func TestDevSeedIsValid(t *testing.T) {
	t.Parallel()
	if _, err := NewSigner(devJWTSeed, time.Hour); err != nil {
		t.Fatal(err)
	}
	if b, _ := hex.DecodeString(devJWTSeed); string(b) != "microlab-dev-jwt-seed-not-secret" {
		t.Fatal("devJWTSeed no longer spells what its comment says")
	}
}

// A token expires exactly its TTL after the moment it is signed, in whole seconds (JWT
// times have no fraction), and says when it was issued.
func TestSignExpiry(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(testSeed, 90*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	token, exp, err := s.Sign(User{ID: "u-1", Email: "a@example.com", Name: "A"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2030, 1, 2, 4, 34, 5, 0, time.UTC); !exp.Equal(want) {
		t.Fatalf("expires %s, want %s", exp, want)
	}
	var claims Claims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil {
		t.Fatal(err)
	}
	if !claims.ExpiresAt.Time.Equal(exp) || !claims.IssuedAt.Time.Equal(now.Truncate(time.Second)) {
		t.Fatalf("exp %s iat %s, want %s and %s", claims.ExpiresAt, claims.IssuedAt, exp, now.Truncate(time.Second))
	}
}
