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
	"strconv"
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

// binaries builds the real users, catalog and orders commands once per test binary.
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
		cmd := exec.CommandContext(ctx, "go", "build", "-o", built.dir+string(filepath.Separator), "./services/users", "./services/catalog", "./services/orders")
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

// upstreams is the real users, catalog and orders, as processes, each with its own
// database, on one vhost and lab database that gateways started with env.Share join.
type upstreams struct {
	env        testenv.Env
	users      string
	catalog    string
	orders     string
	usersEnv   testenv.Env
	catalogEnv testenv.Env
	ordersEnv  testenv.Env
}

func startUpstreams(t *testing.T) upstreams {
	t.Helper()
	dir := buildUpstreams(t)
	usersEnv := testenv.ServiceEnv(t, "users", true)
	usersEnv["JWT_SEED"] = devSeed
	usersEnv["BCRYPT_COST"] = "4"
	catalogEnv := usersEnv.Share(t, "catalog", true)
	delete(catalogEnv, "JWT_SEED")
	delete(catalogEnv, "BCRYPT_COST")
	ordersEnv := catalogEnv.Share(t, "orders", true)
	ordersEnv["CATALOG_URL"] = "http://" + catalogEnv["HTTP_ADDR"] // orders prices from the real catalog
	// One after the other: each migrates the shared (fresh) lab database at start, and
	// pg.Migrate takes no lock, so two first-time migrations at once can collide.
	for _, s := range []struct {
		name string
		env  testenv.Env
	}{{"users", usersEnv}, {"catalog", catalogEnv}, {"orders", ordersEnv}} {
		startProcess(t, filepath.Join(dir, s.name), s.env)
		waitReady(t, "http://"+s.env["HTTP_ADDR"])
	}
	return upstreams{env: usersEnv, users: "http://" + usersEnv["HTTP_ADDR"], catalog: "http://" + catalogEnv["HTTP_ADDR"],
		orders: "http://" + ordersEnv["HTTP_ADDR"], usersEnv: usersEnv, catalogEnv: catalogEnv, ordersEnv: ordersEnv}
}

// startLoneOrders runs one more real orders, on a vhost and databases of its own (so
// nothing it does, or fails to do, touches the shared stack's orders), pricing from
// catalogURL. Tests use it when they must break orders: freeze it, or cut its catalog.
func startLoneOrders(t *testing.T, catalogURL string) (*proc, testenv.Env) {
	t.Helper()
	env := testenv.ServiceEnv(t, "orders", true)
	env["CATALOG_URL"] = catalogURL
	p := startProcess(t, filepath.Join(buildUpstreams(t), "orders"), env)
	waitReady(t, "http://"+env["HTTP_ADDR"])
	return p, env
}

// proc is a service running as a process of its own.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
	once sync.Once
}

// startProcess starts bin with exactly env (and PATH); the process is stopped when the
// test ends, and must exit cleanly on SIGTERM.
func startProcess(t *testing.T, bin string, env testenv.Env) *proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{name: filepath.Base(bin), cmd: cmd, out: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out)
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit (once; later calls do nothing).
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s: %v\n%s", p.name, err, p.out)
			}
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Errorf("%s did not stop on SIGTERM\n%s", p.name, p.out)
		}
	})
}

// signal sends sig to the process (SIGSTOP freezes it: the kernel still completes TCP
// handshakes on its listening socket, but nothing answers — a hung upstream).
func (p *proc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// acceptBacklog is the number of connections the kernel has completed on the IPv4
// listening socket of port that no process has accepted yet (the rx_queue of a LISTEN
// row of /proc/net/tcp). With the owner frozen, it counts the connection attempts made
// to it.
func acceptBacklog(t testing.TB, port int) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	local := fmt.Sprintf("0100007F:%04X", port) // 127.0.0.1, little-endian as the kernel prints it
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st tx_queue:rx_queue ...; st 0A is LISTEN.
		if len(f) < 5 || f[1] != local || f[3] != "0A" {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp: %q: %v", line, err)
		}
		return int(n)
	}
	t.Fatalf("no listening socket on 127.0.0.1:%d", port)
	return 0
}

func portOf(t testing.TB, env testenv.Env) int {
	t.Helper()
	_, p, _ := strings.Cut(env["HTTP_ADDR"], ":")
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("HTTP_ADDR %q: %v", env["HTTP_ADDR"], err)
	}
	return n
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

// startGateway runs a gateway in-process on the upstreams' bus and lab database, in
// front of the real users, catalog and orders, with extra settings (another ORDERS_URL,
// breaker and rate-limit knobs) per test.
func startGateway(t *testing.T, up upstreams, extra map[string]string) string {
	t.Helper()
	env := up.env.Share(t, "gateway", false)
	delete(env, "JWT_SEED")
	delete(env, "BCRYPT_COST")
	env["USERS_URL"], env["CATALOG_URL"], env["ORDERS_URL"] = up.users, up.catalog, up.orders
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
