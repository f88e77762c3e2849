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

// patience bounds every wait for something that must happen (a process ready, an event
// on a tap, a setup call through the stack that keeps failing). It is generous on
// purpose: a -race run on a busy 2-core machine can be many times slower than an idle
// one, and the bound only costs time when a test fails anyway.
const patience = 90 * time.Second

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
		cmd := exec.CommandContext(ctx, "go", "build", "-o", built.dir+string(filepath.Separator), "./services/users", "./services/catalog", "./services/orders", "./services/monolith")
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
	// One after the other: each migrates the shared (fresh) lab database at start, and
	// pg.Migrate takes no lock, so two first-time migrations at once can collide.
	launch(t, filepath.Join(dir, "users"), usersEnv)
	launch(t, filepath.Join(dir, "catalog"), catalogEnv)
	ordersEnv["CATALOG_URL"] = "http://" + catalogEnv["HTTP_ADDR"] // orders prices from the real catalog
	launch(t, filepath.Join(dir, "orders"), ordersEnv)
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
	return launch(t, filepath.Join(buildUpstreams(t), "orders"), env), env
}

// Services under test started by launch and startGateway bind a port of their own
// choosing (HTTP_ADDR 127.0.0.1:0), and the test reads the address from the service's
// own "http listening" log line. A port picked beforehand (testenv.FreePort) is only
// free for a moment: on a busy machine full of tests picking ports the same way,
// another process can bind it first and answer /readyz in place of the service, which
// has exited with "address already in use".
const anyPort = "127.0.0.1:0"

// launch starts bin with env on a port it picks, waits until it is ready and sets
// env's HTTP_ADDR to the address it listens on. (startProcess keeps a port picked
// beforehand: for a test that must restart a service at the same address.)
func launch(t *testing.T, bin string, env testenv.Env) *proc {
	t.Helper()
	env["HTTP_ADDR"] = anyPort
	p := startProcess(t, bin, env)
	env["HTTP_ADDR"] = listening(t, p.name, p.out, p.done)
	waitReady(t, "http://"+env["HTTP_ADDR"])
	return p
}

// listening waits until out holds a service's "http listening" log line and returns
// its address. It fails the test if done (the service's end) comes first.
func listening(t *testing.T, name string, out *lockedBuffer, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		for _, line := range strings.Split(out.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "http listening" && l.Addr != "" {
				return l.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("%s stopped before it listened: %v\n%s", name, err, out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen within %s\n%s", name, patience, out)
		}
	}
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
	// The exit is delivered, then done is closed: listening may take it (and fail the
	// test with it), and stop must not wait for a second one.
	go func() {
		p.done <- cmd.Wait()
		close(p.done)
	}()
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
		case <-time.After(patience):
			_ = p.cmd.Process.Kill()
			t.Errorf("%s did not stop on SIGTERM within %s\n%s", p.name, patience, p.out)
		}
	})
}

// signal sends sig to the process.
func (p *proc) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// freeze stops the process with SIGSTOP — the kernel still completes TCP handshakes on
// its listening socket, but nothing answers: a hung upstream — and returns once every
// thread of it has stopped. kill(2) returning does not mean that: it only queues the
// signal; one thread takes it and then stops the others, and on a busy machine the
// rest can go on accepting and answering requests for a while (seen as a "frozen"
// orders answering 404).
func (p *proc) freeze(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGSTOP)
	deadline := time.Now().Add(patience)
	for {
		running, err := runningThreads(p.cmd.Process.Pid)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: threads %v not stopped %s after SIGSTOP", p.name, running, patience)
		}
		time.Sleep(time.Millisecond)
	}
}

// runningThreads lists the threads of process pid that are not stopped, from the state
// field of /proc/<pid>/task/<tid>/stat ("tid (comm) state ...": T is stopped).
func runningThreads(pid int) ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var running []string
	for _, task := range tasks {
		raw, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if os.IsNotExist(err) {
			continue // the thread has exited meanwhile
		}
		if err != nil {
			return nil, err
		}
		i := bytes.LastIndexByte(raw, ')') // comm may itself hold spaces and parentheses
		if i < 0 || i+2 >= len(raw) {
			return nil, fmt.Errorf("%s/%s/stat: %q", dir, task.Name(), raw)
		}
		if state := raw[i+2]; state != 'T' && state != 't' {
			running = append(running, task.Name()+":"+string(state))
		}
	}
	return running, nil
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
	deadline := time.Now().Add(patience)
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
	env["HTTP_ADDR"] = anyPort
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	// done delivers run's result, then is closed (listening may take it).
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env.Get, logs)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs)
		}
	})
	base := "http://" + listening(t, "gateway", logs, done)
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
	return doWith(t, http.DefaultClient, method, url, token, body, header)
}

// doWith is do with a client of the caller's (one with a deadline, say).
func doWith(t *testing.T, client *http.Client, method, url, token string, body any, header map[string]string) answer {
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
	resp, err := client.Do(req)
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

// retry5xx sends a request again while the answer is a 5xx, for calls that are safe to
// repeat (logins, a POST /orders with an Idempotency-Key, a request that users or
// orders refuses with a 4xx before storing anything). On a
// busy machine a call through the stack can outlast a timeout of the product (the
// gateway's UPSTREAM_TIMEOUT, orders' CATALOG_TIMEOUT) and come back 502; that is not
// what these calls are about. A 5xx that persists still fails: its answer is returned
// once patience is spent. Never for a call whose 5xx (or whose number of attempts) is
// the subject.
func retry5xx(t *testing.T, call func() answer) answer {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		a := call()
		if a.Status < 500 || time.Now().After(deadline) {
			return a
		}
		t.Logf("%d %s; trying again", a.Status, a.Body)
		time.Sleep(200 * time.Millisecond)
	}
}

func login(t *testing.T, gw, email, password string) string {
	t.Helper()
	a := retry5xx(t, func() answer {
		return do(t, "POST", gw+"/api/v1/auth/login", "", map[string]string{"email": email, "password": password}, nil)
	})
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
