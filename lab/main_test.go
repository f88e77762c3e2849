package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/stack"
	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// envWith is a getenv that answers from m first, then from the real environment (so CI
// can point the tests at its own PostgreSQL and RabbitMQ).
func envWith(m map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := m[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
}

// syncBuffer is a buffer safe for concurrent writers (up's supervisor writes to it).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// patience bounds every wait for something that must happen. It only costs time when
// the test fails anyway, so it is long enough for a loaded machine.
const patience = 3 * time.Minute

func runLab(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	code = run(ctx, args, envWith(env), &out, &errOut)
	return code, out.String(), errOut.String()
}

// closedPort returns a local port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// nowhere points every dependency at a closed port.
func nowhere(t *testing.T) map[string]string {
	p := closedPort(t)
	return map[string]string{
		"ADMIN_DATABASE_URL":      fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", p),
		"AMQP_URL":                fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", p),
		"RABBITMQ_MANAGEMENT_URL": fmt.Sprintf("http://guest:guest@127.0.0.1:%d", p),
	}
}

// requireDeps checks PostgreSQL and RabbitMQ independently of the code under test:
// locally a missing one skips with the command that fixes it, under CI=true it fails.
// It returns the AMQP URL of a fresh virtual host for the test.
func requireDeps(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.AdminDatabaseURL())
	if err != nil {
		testenv.Missing(t, "PostgreSQL at "+testenv.AdminDatabaseURL(), testenv.FixPostgres, err)
	}
	_ = conn.Close(ctx)
	ac, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		testenv.Missing(t, "RabbitMQ at "+testenv.AMQPURL(), testenv.FixRabbit, err)
	}
	_ = ac.Close()
	return testenv.VHost(t) // checks the management API, too
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	env := nowhere(t) // nothing may be contacted before the arguments are checked
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"doctor", "now"}, "no arguments"},
		{[]string{"up", "--scale", "nosuch=2"}, `unknown service "nosuch"`},
		{[]string{"up", "--scale", "payments"}, "want service=N"},
		{[]string{"up", "--scale", "payments=0"}, "want 1 to"},
		{[]string{"up", "--bogus"}, "flag provided but not defined"},
		{[]string{"up", "extra"}, "unexpected arguments"},
		{[]string{"settings", "frob"}, "lab settings set key=value"},
		{[]string{"settings", "set"}, "at least one key=value"},
		{[]string{"settings", "set", "saga.mode"}, `want key=value, got "saga.mode"`},
		{[]string{"settings", "set", "nosuch.key=1"}, `unknown setting "nosuch.key"`},
		{[]string{"settings", "set", "saga.mode=sideways"}, `bad value "sideways"`},
		{[]string{"settings", "set", "catalog.transport=soap"}, `bad value "soap" for catalog.transport: want one of http, grpc`},
		{[]string{"settings", "set", "catalog.transport=GRPC"}, `bad value "GRPC" for catalog.transport: want one of http, grpc`},
		{[]string{"settings", "set", "scale.shipping=10"}, `bad value "10" for scale.shipping: want a whole number from 1 to 9`},
		{[]string{"settings", "set", "gateway.cache.ttl=-1s"}, `bad value "-1s" for gateway.cache.ttl: want a duration between 0s and 1h0m0s`},
		{[]string{"settings", "set", "gateway.cache.ttl=2h"}, `bad value "2h" for gateway.cache.ttl`},
		{[]string{"settings", "set", "gateway.cache.ttl=soon"}, `bad value "soon" for gateway.cache.ttl`},
		{[]string{"settings", "set", "scale.gateway=2"}, `unknown setting "scale.gateway"`},
		{[]string{"settings", "set", "gateway.discovery=sideways"}, `bad value "sideways" for gateway.discovery: want one of static, registry`},
		{[]string{"settings", "set", "scale.catalog=10"}, `bad value "10" for scale.catalog: want a whole number from 1 to 9`},
		{[]string{"settings", "set", "deploy.catalog.weights=v3:10,v1:90"}, `bad value "v3:10,v1:90" for deploy.catalog.weights: unknown version "v3"`},
		{[]string{"settings", "set", "deploy.catalog.weights=v1:50,v2:40"}, `bad value "v1:50,v2:40" for deploy.catalog.weights: weights add up to 90, want 100`},
		{[]string{"settings", "set", "strangler.routes=payments=monolith"}, `bad value "payments=monolith" for strangler.routes: unknown route family "payments": want users, products, orders`},
		{[]string{"settings", "set", "strangler.routes=orders=mainframe"}, `bad value "orders=mainframe" for strangler.routes: orders="mainframe": want services or monolith`},
		{[]string{"settings", "saga.mode=sideways"}, `bad value "sideways"`}, // set without "set"
		{[]string{"settings", "nosuch.key=1"}, `unknown setting "nosuch.key"`},
		{[]string{"fault"}, "want `lab fault add|list|clear`"},
		{[]string{"fault", "frob"}, `got "frob"`},
		{[]string{"fault", "add", "payments"}, "want `lab fault add SERVICE KIND"},
		{[]string{"fault", "add", "nosuch", "down"}, `unknown service "nosuch"`},
		{[]string{"fault", "add", "payments", "melt"}, `unknown fault "melt"`},
		{[]string{"fault", "add", "payments", "latency=fast"}, `bad latency "fast"`},
		{[]string{"fault", "add", "payments", "error_rate=1.5"}, "fraction from 0 to 1"},
		{[]string{"fault", "add", "payments", "down", "for=0s"}, `bad for="0s"`},
		{[]string{"fault", "add", "payments", "down", "for=-5m"}, `bad for="-5m"`},
		{[]string{"fault", "add", "payments", "down", "for=2h"}, "at most 1h0m0s"},
		{[]string{"fault", "add", "payments", "down", "crash"}, "one fault at a time"},
		{[]string{"fault", "add", "payments", "down", "instance=orders-1"}, "not an instance of payments"},
		{[]string{"fault", "list", "all"}, "takes no arguments"},
		{[]string{"fault", "clear", "paymints"}, `unknown target "paymints"`},
		{[]string{"fault", "clear", "payments", "orders"}, "lab fault clear [SERVICE|INSTANCE]"},
		{[]string{"reset", "now"}, "takes no arguments"},
		{[]string{"chaos", "--rate", "fast"}, "--rate"},
		{[]string{"chaos", "--faults", "kill,flood"}, `--faults "flood": want a list of kill, broker, postgres`},
		{[]string{"chaos", "--faults", "kill,kill"}, "names kill twice"},
		{[]string{"chaos", "--kill", "paymints"}, `--kill "paymints": no such service`},
		{[]string{"chaos", "--duration", "10ms"}, "want at least 1s"},
		{[]string{"chaos", "--outage", "0s"}, "--outage 0s"},
		{[]string{"chaos", "--mode", "sideways"}, `--mode "sideways"`},
		{[]string{"chaos", "--attach", "--faults", "kill,broker"}, "--attach runs kill faults only"},
		{[]string{"chaos", "--keep", "--faults", "postgres"}, "--keep: the postgres fault runs on a private instance"},
		{[]string{"chaos", "now"}, "unexpected arguments"},
		{[]string{"bench", "now"}, "unexpected arguments"},
		{[]string{"bench", "--bogus"}, "flag provided but not defined"},
		{[]string{"bench", "--phases", "ceiling,nosuch"}, `unknown phase "nosuch"`},
		{[]string{"bench", "--phases", ","}, "name at least one phase"},
		{[]string{"bench", "--mix", "ok=0"}, "every weight is 0"},
		{[]string{"bench", "--soak", "-1s"}, "--soak -1s"},
		{[]string{"bench", "--browse", "11"}, "--browse wants 0 to 10"},
		{[]string{"topology", "sideways"}, `topology "sideways": want per-service or shared`},
		{[]string{"topology", "shared", "now"}, "want `lab topology [per-service|shared]`"},
	} {
		code, _, stderr := runLab(t, env, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("lab %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
		if tc.args != nil && strings.Count(strings.TrimSpace(stderr), "\n") > 0 && !strings.Contains(stderr, "usage:") {
			t.Errorf("lab %q: usage error longer than one line: %q", tc.args, stderr)
		}
	}
	// A second lab on the default vhost: refused before anything is contacted.
	for _, extra := range []map[string]string{{"LAB_DB_PREFIX": "second_"}, {"LAB_PORT_OFFSET": "100"}} {
		second := maps.Clone(env)
		maps.Copy(second, extra)
		code, _, stderr := runLab(t, second, "up", "--no-build")
		if code != exitUsage || !strings.Contains(stderr, "a RabbitMQ vhost of its own") {
			t.Errorf("lab up with %v on the default vhost: exit %d, stderr %q; want exit 2 and the vhost message", extra, code, stderr)
		}
	}
	code, stdout, _ := runLab(t, env, "help")
	if code != exitUsage || !strings.Contains(stdout, "lab up [--scale service=N]") {
		t.Errorf("lab help: exit %d, stdout %q", code, stdout)
	}
}

// doctor against this machine's real PostgreSQL and RabbitMQ.
func TestDoctorOnThisMachine(t *testing.T) {
	t.Parallel()
	requireDeps(t)
	code, stdout, stderr := runLab(t, nil, "doctor")
	if code != exitOK {
		t.Fatalf("doctor: exit %d\n%s%s", code, stdout, stderr)
	}
	lines := map[string]string{}
	for l := range strings.Lines(stdout) {
		f := strings.Fields(l)
		if len(f) > 0 {
			lines[f[0]] = l
		}
	}
	for _, name := range []string{"go", "postgresql", "rabbitmq"} {
		if f := strings.Fields(lines[name]); len(f) < 2 || f[1] != "ok" {
			t.Errorf("%s: %q, want ok", name, lines[name])
		}
	}
	if !strings.Contains(stdout, "rabbitmq-management  ok") {
		t.Errorf("management API not ok:\n%s", stdout)
	}
	for name, status := range map[string]string{"jaeger": "optional", "prometheus": "optional", "rabbitmq-prometheus": "optional", "chromium": "optional (later)"} {
		l := lines[name]
		if !strings.Contains(l, " ok ") && !strings.Contains(l, " "+status+" ") {
			t.Errorf("%s: %q, want ok or %s", name, l, status)
		}
		if !strings.Contains(l, " ok ") && !strings.Contains(l, "fix: ") {
			t.Errorf("%s: %q, without the fix", name, l)
		}
	}
	if strings.Contains(stdout, "guest:guest") {
		t.Error("doctor printed a password")
	}
}

func TestDoctorReportsMissingDependencies(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runLab(t, nowhere(t), "doctor")
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"postgresql           missing", testenv.FixPostgres,
		"rabbitmq             missing", testenv.FixRabbit,
		"rabbitmq-management  missing", testenv.FixMgmt,
		"required dependencies missing: 3",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestUpStopsAtMissingDependencies(t *testing.T) {
	t.Parallel()
	env := nowhere(t)
	env["LAB_BIN_DIR"] = t.TempDir()
	code, stdout, stderr := runLab(t, env, "up", "--no-build")
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 4 || !strings.Contains(stderr, testenv.FixPostgres) || !strings.Contains(stderr, testenv.FixRabbit) ||
		!strings.Contains(stderr, testenv.FixMgmt) {
		t.Errorf("want one line per missing dependency with its fix, and a summary; got:\n%s", stderr)
	}
	if stdout != "" {
		t.Errorf("up started something: %q", stdout)
	}
}

// settings against the real PostgreSQL (a lab database of the test's own) and broker (a
// vhost of its own), including the announcement running services would receive. The
// CLI makes the lab database itself here (the dashboard may never have run), so this
// test does not provision it with testenv.LabDB; it only drops it.
func TestSettings(t *testing.T) {
	t.Parallel()
	vhost := requireDeps(t)
	prefix := testenv.Name("c") + "_"
	env := map[string]string{"LAB_DB_PREFIX": prefix, "AMQP_URL": vhost}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := pg.Drop(ctx, testenv.AdminDatabaseURL(), prefix+stack.LabDB); err != nil {
			t.Errorf("drop: %v", err)
		}
	})

	code, stdout, stderr := runLab(t, env, "settings")
	if code != exitOK || !strings.Contains(stdout, "saga.mode") || !strings.Contains(stdout, "choreography | orchestration") {
		t.Fatalf("settings: exit %d\n%s%s", code, stdout, stderr)
	}

	// Listen on lab.control the way every service instance does.
	ac, err := amqp.Dial(vhost)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ch, err := ac.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(contracts.ExchangeControl, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", contracts.ExchangeControl, false, nil); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr = runLab(t, env, "settings", "set", "saga.mode=orchestration", "inbox.enabled=FALSE")
	if code != exitOK {
		t.Fatalf("settings set: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"saga.mode: choreography → orchestration", "inbox.enabled: true → false"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("settings set output lacks %q:\n%s", want, stdout)
		}
	}
	got := map[string]string{}
	for len(got) < 2 {
		select {
		case m := <-msgs:
			var c control.Change
			if err := json.Unmarshal(m.Body, &c); err != nil {
				t.Fatalf("announcement %q: %v", m.Body, err)
			}
			got[c.Key] = c.New
			if c.Source != settingsSource {
				t.Errorf("source %q", c.Source)
			}
		case <-time.After(patience):
			t.Fatalf("announcements received: %v, want two", got)
		}
	}
	if got[control.SagaMode] != "orchestration" || got[control.InboxEnabled] != "false" {
		t.Errorf("announced %v", got)
	}

	// Without "set", as the exercises' hints write it and people type it.
	code, stdout, stderr = runLab(t, env, "settings", "outbox.enabled=false")
	if code != exitOK || !strings.Contains(stdout, "outbox.enabled: true → false") {
		t.Fatalf("settings key=value: exit %d\n%s%s", code, stdout, stderr)
	}

	_, stdout, _ = runLab(t, env, "settings")
	for l := range strings.Lines(stdout) {
		f := strings.Fields(l)
		switch {
		case f[0] == control.SagaMode && f[1] != "orchestration",
			f[0] == control.InboxEnabled && f[1] != "false",
			f[0] == control.OutboxEnabled && f[1] != "false":
			t.Errorf("after set: %q", l)
		}
	}
}

// standIns is a bin directory for lab up --no-build: the fakesvc stand-in under every
// service's name, and the real Jaeger when this machine has one built (jaegerErr says
// why not; lab up goes on without it, saying so).
func standIns(t *testing.T) (bin string, jaegerErr error) {
	t.Helper()
	bin = t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	build := exec.CommandContext(t.Context(), "go", "build", "-o", filepath.Join(bin, "fakesvc"), "./stack/testdata/fakesvc")
	build.Dir = filepath.Dir(file)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build stand-in: %v\n%s", err, out)
	}
	for _, s := range stack.Services {
		if err := os.Symlink(filepath.Join(bin, "fakesvc"), filepath.Join(bin, s.Name)); err != nil {
			t.Fatal(err)
		}
	}
	jaeger, jaegerErr := stack.JaegerBinary()
	if jaegerErr == nil {
		if err := os.Symlink(jaeger, filepath.Join(bin, "jaeger")); err != nil {
			t.Fatal(err)
		}
	}
	return bin, jaegerErr
}

// dropLabDBs drops, when the test ends, every database a lab with this prefix makes.
func dropLabDBs(t *testing.T, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		sc := stack.Config{DBPrefix: prefix}
		for _, db := range sc.Databases() {
			if err := pg.Drop(ctx, testenv.AdminDatabaseURL(), db); err != nil {
				t.Errorf("drop %s: %v", db, err)
			}
		}
	})
}

// startUp runs lab up with env in the background until it prints "lab is up" (the
// test fails if it exits first, or is not up in 2×patience: longer than up's own bounds
// on provisioning and starting, so that a slow start ends in up's error rather than in
// this test's impatience). cancel is Ctrl-C; code receives up's exit status.
func startUp(t *testing.T, env map[string]string, args ...string) (stdout, stderr *syncBuffer, code <-chan int, cancel func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, append([]string{"up"}, args...), envWith(env), stdout, stderr) }()
	deadline := time.Now().Add(2 * patience)
	for !strings.Contains(stdout.String(), "lab is up") {
		select {
		case c := <-exit:
			t.Fatalf("up exited %d before it was up:\n%s%s", c, stdout.String(), stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("up not up after %s:\n%s%s", 2*patience, stdout.String(), stderr.String())
		}
	}
	return stdout, stderr, exit, cancel
}

// up, end to end, with stand-in binaries: every instance started on its port (one
// service scaled to two), URLs printed, and on cancellation (what Ctrl-C does) every
// process stopped and exit status 0.
func TestUpRunsAndStopsCleanly(t *testing.T) {
	t.Parallel()
	vhost := requireDeps(t)
	bin, jaegerErr := standIns(t)
	_, promErr := stack.FindPrometheus()
	// Ports are chosen and bound under the machine's start lock, like every lab's: a lab
	// whose services are stopped for a moment (a topology switch) must not find them
	// taken by this one when it starts them again.
	started := testenv.StartLock(t)
	offset, err := stack.ClaimOffset(map[string]int{"payments": 2}, testenv.ClaimPorts(t))
	if err != nil {
		t.Fatal(err)
	}
	base := 8000 + offset // the gateway's port
	sc := stack.Config{Host: "127.0.0.1", PortOffset: offset}
	prefix := testenv.Name("u") + "_"
	runDir := t.TempDir()
	env := map[string]string{"LAB_BIN_DIR": bin, "LAB_DB_PREFIX": prefix, "LAB_PORT_OFFSET": strconv.Itoa(offset), "LAB_RUN_DIR": runDir,
		"AMQP_URL": vhost}
	dropLabDBs(t, prefix)
	stdout, stderr, code, cancel := startUp(t, env, "--no-build", "--scale", "payments=2")
	started()
	out := stdout.String()
	gw := fmt.Sprintf("http://127.0.0.1:%d", base)
	for _, want := range []string{"gateway         " + gw + "\n", fmt.Sprintf("payments-2      http://127.0.0.1:%d\n", base+1104)} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "fakesvc payments-2 on") {
		t.Errorf("service output is not fanned in:\n%s", out)
	}
	resp, err := http.Get(gw + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()

	// Jaeger and Prometheus: running on the shifted ports and listed, or missing and
	// said so; their output in files, not in the lab's.
	observed := []string{}
	if jaegerErr == nil {
		observed = append(observed, sc.JaegerURL()+"/api/services")
		if want := "jaeger          " + sc.JaegerURL() + "  (API: /api/traces/<traceId>; log: " + filepath.Join(runDir, "jaeger", "jaeger.log") + ")\n"; !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	} else if !strings.Contains(out, "running without Jaeger (no binary in "+bin) {
		t.Errorf("no word about the missing Jaeger:\n%s", out)
	}
	if promErr == nil {
		observed = append(observed, sc.PrometheusURL()+"/-/ready")
		if want := "prometheus      " + sc.PrometheusURL() + "  (log: "; !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
		targets, err := os.ReadFile(filepath.Join(runDir, "prometheus", "targets", "lab.json"))
		if err != nil {
			t.Fatal(err)
		}
		var groups []stack.TargetGroup
		if err := json.Unmarshal(targets, &groups); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("127.0.0.1:%d payments", base+1104)
		if !slices.ContainsFunc(groups, func(g stack.TargetGroup) bool { return fmt.Sprint(g.Targets[0], " ", g.Labels["job"]) == want }) {
			t.Errorf("targets lack %s: %s", want, targets)
		}
	} else if !strings.Contains(out, "running without Prometheus (not installed: "+stack.FixPrometheus+")") {
		t.Errorf("no word about the missing Prometheus:\n%s", out)
	}
	// What native mode never has, said once, before "lab is up".
	summary, _, _ := strings.Cut(out, "lab is up")
	for _, want := range []string{"not in the native lab: Grafana (compose only", "not in the native lab: Jaeger's UI (compose only"} {
		if strings.Count(out, want) != 1 || !strings.Contains(summary, want) {
			t.Errorf("want %q once in the summary:\n%s", want, out)
		}
	}
	for _, u := range observed {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", u, resp.Status)
		}
	}
	if strings.Contains(out, "jaeger | ") || strings.Contains(out, "prometheus | ") {
		t.Errorf("Jaeger's or Prometheus's output in the lab's:\n%s", out)
	}

	cancel() // Ctrl-C
	select {
	case c := <-code:
		if c != exitOK {
			t.Errorf("up exited %d after Ctrl-C, want 0:\n%s", c, stderr.String())
		}
	case <-time.After(patience):
		t.Fatalf("up did not stop within %s", patience)
	}
	insts, err := stack.Config{Host: "127.0.0.1", PortOffset: base - 8000}.Instances(map[string]int{"payments": 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if c, err := net.DialTimeout("tcp", in.Addr, time.Second); err == nil {
			_ = c.Close()
			t.Errorf("%s still listening on %s after up stopped", in.ID, in.Addr)
		}
	}
	for _, u := range observed {
		if resp, err := http.Get(u); err == nil {
			_ = resp.Body.Close()
			t.Errorf("%s still answers after up stopped", u)
		}
	}
	if !strings.Contains(stderr.String(), "lab: stopped") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// fault and reset against the real PostgreSQL (a lab database of the test's own) and
// broker (a vhost of its own), with payments "running": a process answering /healthz on
// payments' port at the test's port offset. A fault on a service (or an instance)
// nothing answers for is refused in one line, exit 2; a good one is stored, announced,
// listed with its time left and cleared; the timeline records who did it.
func TestFaults(t *testing.T) {
	t.Parallel()
	vhost := requireDeps(t)
	started := testenv.StartLock(t) // ports chosen and bound under the machine's start lock
	offset, err := stack.ClaimOffset(nil, testenv.ClaimPorts(t))
	if err != nil {
		t.Fatal(err)
	}
	sc := stack.Config{Host: "127.0.0.1", PortOffset: offset}
	payments, _ := stack.Find("payments")
	ln, err := net.Listen("tcp", sc.Addr(payments))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	dashboard, _ := stack.Find(stack.Dashboard)
	dln, err := net.Listen("tcp", sc.Addr(dashboard))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(dln) }()
	started()
	// The dashboard runs once and stack refuses to scale it: running must still find it
	// (it asked for nine dashboards, was refused, and said "not running").
	if cfg := (Config{PortOffset: offset}); !cfg.running(stack.Dashboard, "") || cfg.running("shipping", "") {
		t.Errorf("running: dashboard %v, shipping %v; want true, false", cfg.running(stack.Dashboard, ""), cfg.running("shipping", ""))
	}

	prefix := testenv.Name("f") + "_"
	env := map[string]string{"LAB_DB_PREFIX": prefix, "AMQP_URL": vhost, "LAB_PORT_OFFSET": strconv.Itoa(offset)}
	_, store := testenv.LabDB(t, prefix+stack.LabDB) // the lab database the CLI opens under the prefix
	anns := testenv.Dial(t, vhost).Tap(t, contracts.ExchangeControl, "")
	awaitAnn := func() control.Change {
		t.Helper()
		select {
		case m := <-anns:
			var c control.Change
			if err := json.Unmarshal(m.Body, &c); err != nil {
				t.Fatalf("announcement %q: %v", m.Body, err)
			}
			return c
		case <-time.After(patience):
			t.Fatal("no announcement")
		}
		return control.Change{}
	}

	for _, tc := range []struct{ args, want string }{
		{"shipping down", "shipping is not running"},
		{"payments down instance=payments-2", "payments-2 is not running"},
	} {
		code, stdout, stderr := runLab(t, env, append([]string{"fault", "add"}, strings.Fields(tc.args)...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 || stdout != "" {
			t.Errorf("fault add %s: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, stdout, stderr, tc.want)
		}
	}

	code, stdout, stderr := runLab(t, env, "fault", "add", "payments", "latency=300ms", "for=5m", "on=http")
	if code != exitOK || !strings.Contains(stdout, "latency=300ms on=http on payments until") {
		t.Fatalf("fault add: exit %d\n%s%s", code, stdout, stderr)
	}
	if stderr != "" {
		t.Errorf("fault add warned: %s", stderr)
	}
	if a := awaitAnn(); a.Key != "fault payments" || a.Source != faultSource { // also the marker: the refusals announced nothing
		t.Errorf("announced %+v", a)
	}

	code, stdout, _ = runLab(t, env, "fault", "list")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != exitOK || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID TARGET FAULT TIME LEFT SOURCE" {
		t.Fatalf("fault list: exit %d\n%s", code, stdout)
	}
	f := strings.Fields(lines[1])
	if len(f) < 5 {
		t.Fatalf("fault list row %q", lines[1])
	}
	if left, err := time.ParseDuration(f[4]); len(f) != 7 || f[1] != "payments" || f[2] != "latency=300ms" || f[3] != "on=http" ||
		err != nil || left <= 0 || left > 5*time.Minute ||
		f[5]+" "+f[6] != faultSource {
		t.Errorf("fault list row %q", lines[1])
	}

	code, stdout, stderr = runLab(t, env, "fault", "clear", "payments")
	if code != exitOK || !strings.Contains(stdout, "fault payments: latency=300ms on=http → cleared") {
		t.Errorf("fault clear: exit %d\n%s%s", code, stdout, stderr)
	}
	if a := awaitAnn(); a.New != "cleared" {
		t.Errorf("announced %+v", a)
	}
	if code, stdout, _ = runLab(t, env, "fault", "list"); code != exitOK || strings.TrimSpace(stdout) != "no fault in force" {
		t.Errorf("fault list after clear: exit %d %q", code, stdout)
	}

	// reset: a setting and a fault undone, each on the timeline as lab reset's.
	if code, stdout, stderr = runLab(t, env, "settings", "set", "saga.mode=orchestration"); code != exitOK {
		t.Fatalf("settings set: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr = runLab(t, env, "fault", "add", "payments", "error_rate=0.5"); code != exitOK {
		t.Fatalf("fault add: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runLab(t, env, "reset")
	if code != exitOK || !strings.Contains(stdout, "saga.mode: orchestration → choreography") ||
		!strings.Contains(stdout, "fault payments: error_rate=0.5 → cleared") {
		t.Errorf("reset: exit %d\n%s%s", code, stdout, stderr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	chs, err := store.Changes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]int{}
	for _, c := range chs {
		sources[c.Source]++
	}
	if sources[faultSource] != 3 || sources[settingsSource] != 1 || sources[resetSource] != 2 || len(chs) != 6 {
		t.Errorf("timeline sources %v (%d changes), want 3 by %s, 1 by %s, 2 by %s", sources, len(chs), faultSource, settingsSource, resetSource)
	}
}

// lab chaos refuses, before it contacts anything, infrastructure that is not on this
// machine: it creates vhosts and databases there, and crashes processes it finds.
func TestChaosTargetsOnlyThisMachine(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"AMQP_URL", "ADMIN_DATABASE_URL", "RABBITMQ_MANAGEMENT_URL"} {
		env := nowhere(t)
		env[key] = strings.Replace(env[key], "127.0.0.1", "192.0.2.1", 1)
		code, stdout, stderr := runLab(t, env, "chaos", "--faults", "kill", "--attach")
		if code != exitUsage || !strings.Contains(stderr, key+": host 192.0.2.1 is not this machine") || stdout != "" {
			t.Errorf("%s elsewhere: exit %d, stdout %q, stderr %q", key, code, stdout, stderr)
		}
	}
}
