package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"microlab/services/platform/testenv"
)

// devSeed is users' documented development JWT seed (services/users/main.go). The tests
// start users with it explicitly and sign their own tokens (expired, wrong audience)
// with it, as an attacker who knows a dev lab's public seed could.
const devSeed = "6d6963726f6c61622d6465762d6a77742d736565642d6e6f742d736563726574"

// binaries builds the real users and catalog commands once per test binary.
type binaries struct {
	once sync.Once
	dir  string
	err  error
}

var built binaries // test-only: one build shared by every test of the package

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

func buildUpstreams(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "microlab-gateway-test-")
		if built.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", built.dir+string(filepath.Separator), "./services/users", "./services/catalog")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// upstreams is the real users and catalog, as processes, each with its own database, on
// one vhost and lab database that gateways started with env.Share join.
type upstreams struct {
	env        testenv.Env
	users      string
	catalog    string
	usersEnv   testenv.Env
	catalogEnv testenv.Env
}

func startUpstreams(t *testing.T) upstreams {
	t.Helper()
	dir := buildUpstreams(t)
	usersEnv := testenv.ServiceEnv(t, "users", true)
	usersEnv["JWT_SEED"] = devSeed
	usersEnv["BCRYPT_COST"] = "4"
	catalogEnv := usersEnv.Share(t, "catalog", true)
	delete(catalogEnv, "JWT_SEED")
	// One after the other: both migrate the shared (fresh) lab database at start, and
	// pg.Migrate takes no lock, so two first-time migrations at once can collide.
	for _, s := range []struct {
		name string
		env  testenv.Env
	}{{"users", usersEnv}, {"catalog", catalogEnv}} {
		startProcess(t, filepath.Join(dir, s.name), s.env)
		waitReady(t, "http://"+s.env["HTTP_ADDR"])
	}
	return upstreams{env: usersEnv, users: "http://" + usersEnv["HTTP_ADDR"], catalog: "http://" + catalogEnv["HTTP_ADDR"],
		usersEnv: usersEnv, catalogEnv: catalogEnv}
}

func startProcess(t *testing.T, bin string, env testenv.Env) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v\n%s", filepath.Base(bin), err, out)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s did not stop on SIGTERM\n%s", filepath.Base(bin), out)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out)
		}
	})
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", base)
}

// startGateway runs a gateway in-process on the upstreams' bus and lab database, with
// extra settings (ORDERS_URL, breaker and rate-limit knobs) per test.
func startGateway(t *testing.T, up upstreams, extra map[string]string) string {
	t.Helper()
	env := up.env.Share(t, "gateway", false)
	delete(env, "JWT_SEED")
	delete(env, "BCRYPT_COST")
	env["USERS_URL"], env["CATALOG_URL"] = up.users, up.catalog
	for k, v := range extra {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, env.Get, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs)
		}
	})
	base := "http://" + env["HTTP_ADDR"]
	waitReady(t, base)
	return base
}

// answer is a decoded response.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) errorCode() (string, string) {
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(a.Body, &e)
	return e.Error.Code, e.Error.Message
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("decode %d %s: %v", a.Status, a.Body, err)
	}
}

// do sends a request; body is sent as is when it is a string or []byte, else as JSON.
func do(t *testing.T, method, url, token string, body any, header map[string]string) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
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
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

func login(t *testing.T, gw, email, password string) string {
	t.Helper()
	a := do(t, "POST", gw+"/api/v1/auth/login", "", map[string]string{"email": email, "password": password}, nil)
	var s struct{ Token string }
	a.decode(t, &s)
	if a.Status != http.StatusOK || s.Token == "" {
		t.Fatalf("login %s: %d %s", email, a.Status, a.Body)
	}
	return s.Token
}

// signToken signs claims as users would, with the key derived from seed (kid included).
func signToken(t *testing.T, seed []byte, claims jwt.Claims) string {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(seed)
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = kidOf(priv.Public().(ed25519.PublicKey))
	s, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func kidOf(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

func devSeedBytes(t *testing.T) []byte {
	t.Helper()
	b, err := hex.DecodeString(devSeed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func claimsFor(sub string, exp time.Time) tokenClaims {
	return tokenClaims{Email: "alice@example.com", Name: "Alice", RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, Issuer: tokenIssuer, Audience: jwt.ClaimStrings{tokenAudience},
		IssuedAt: jwt.NewNumericDate(exp.Add(-time.Hour)), ExpiresAt: jwt.NewNumericDate(exp)}}
}

// stubOrders stands in for the orders service (built separately) at the HTTP contract
// the gateway relies on, and records what the gateway sent it.
type stubOrders struct {
	mu   sync.Mutex
	reqs []stubRequest
}

type stubRequest struct {
	Method, Path, Query, UserID, IdempotencyKey, ContentType string
	Body                                                     []byte
}

func (s *stubOrders) requests() []stubRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stubRequest(nil), s.reqs...)
}

func (s *stubOrders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, stubRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		UserID: r.Header.Get("X-User-Id"), IdempotencyKey: r.Header.Get("Idempotency-Key"),
		ContentType: r.Header.Get("Content-Type"), Body: body})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "POST" && r.URL.Path == "/orders":
		if bytes.Contains(body, []byte(`"LAB-NOPE"`)) {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"error":{"code":"unknown_sku","message":"unknown sku LAB-NOPE"}}`+"\n")
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"orderId":"o-1","status":"pending","traceId":""}`)
	case r.Method == "GET" && r.URL.Path == "/orders":
		_, _ = io.WriteString(w, `{"items":[{"orderId":"o-2","status":"confirmed"},{"orderId":"o-1","status":"pending"}],"nextCursor":""}`)
	case r.Method == "GET" && r.URL.Path == "/orders/slow":
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	case r.Method == "GET" && r.URL.Path == "/orders/boom":
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"code":"internal","message":"internal error"}}`)
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/orders/o-"):
		_, _ = fmt.Fprintf(w, `{"orderId":%q,"status":"pending","steps":[]}`, strings.TrimPrefix(r.URL.Path, "/orders/"))
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":{"code":"not_found","message":"no such order"}}`)
	}
}
