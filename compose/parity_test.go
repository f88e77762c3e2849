package compose_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/stack"
	"microlab/lab/supervisor"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// The parity test: the compose environment is complete. It runs the compose lab's own
// set-up natively -- compose/secrets/generate.sh, then compose/postgres/init.sh with
// psql, as the postgres image's entrypoint would -- starts every process of the shop
// from the binaries the Dockerfile builds, each with EXACTLY the environment compose
// gives its container (nothing inherited from this process), only the container names
// mapped to this machine's ports, in compose's start order; waits for each to be ready
// as compose's healthchecks do; and places an order through the gateway that the saga
// confirms. A variable compose forgets, a secret file it does not make, a database the
// init script does not create or grant: the lab does not come up, or the order is lost.

// parityLab is one such lab's names: unique, so it runs beside every other test.
type parityLab struct {
	prefix  string // of database and role names
	vhost   string // RabbitMQ virtual host (an AMQP URL from testenv.VHost)
	user    string // RabbitMQ user compose's rabbitmq image would create
	offset  int    // port offset
	secrets string // the secrets volume
}

func TestParityTheComposeEnvironmentRunsTheLab(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole lab")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		testenv.Missing(t, "psql (the init script runs it)", "apt-get install -y postgresql-client", err)
	}
	bins := imageBinaries(t)
	testenv.HoldLab(t, testenv.Light)
	project := load(t)

	vhostURL := testenv.VHost(t)
	vhost, err := testenv.VHostOf(vhostURL)
	if err != nil {
		t.Fatal(err)
	}
	claim := testenv.ClaimPorts(t)
	offset, err := stack.ClaimOffset(nil, claim)
	if err != nil {
		t.Fatal(err)
	}
	lab := parityLab{prefix: testenv.Name("cp") + "_", vhost: vhost, user: testenv.Name("microlab-"),
		offset: offset, secrets: filepath.Join(t.TempDir(), "secrets")}

	// 1. The secrets container, then PostgreSQL's first start, then the rabbitmq
	// image's default user.
	secretsEnv := map[string]string{
		"SECRETS_DIR": lab.secrets, "DB_PREFIX": lab.prefix, "PG_ADDR": "127.0.0.1:5432",
		"AMQP_ADDR": hostPort(vhostURL), "AMQP_VHOST": url.PathEscape(vhost), "AMQP_USER": lab.user,
		"RABBITMQ_MANAGEMENT_ADDR": hostPort(testenv.ManagementURL()),
	}
	run(t, "secrets/generate.sh", secretsEnv)
	admin := testenv.AdminDatabaseURL()
	t.Cleanup(func() {
		ctx := context.Background()
		if err := pg.DropShared(ctx, admin, lab.prefix+stack.SharedDB); err != nil {
			t.Logf("drop %sshop: %v", lab.prefix, err)
		}
		for _, db := range stack.ComposeDatabases() {
			if err := pg.Drop(ctx, admin, lab.prefix+db); err != nil {
				t.Logf("drop %s: %v", lab.prefix+db, err)
			}
		}
	})
	au, _ := url.Parse(admin)
	run(t, "postgres/init.sh", map[string]string{
		"SECRETS_DIR": lab.secrets, "DB_PREFIX": lab.prefix,
		"PGHOST": au.Hostname(), "PGPORT": au.Port(), "POSTGRES_USER": au.User.Username(), "POSTGRES_DB": "postgres",
	})
	password, err := os.ReadFile(filepath.Join(lab.secrets, "rabbitmq_password"))
	if err != nil {
		t.Fatal(err)
	}
	mustManage(t, http.MethodPut, "/api/users/"+url.PathEscape(lab.user),
		fmt.Sprintf(`{"password":%q,"tags":"administrator"}`, strings.TrimSpace(string(password))))
	t.Cleanup(func() { _ = testenv.Management(http.MethodDelete, "/api/users/"+url.PathEscape(lab.user), "") })
	mustManage(t, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/"+url.PathEscape(lab.user),
		`{"configure":".*","write":".*","read":".*"}`)

	// 2. The shop, in compose's start order, each process with its container's
	// environment and no other (the supervisor's ExactEnv), run by the lab's own
	// supervisor but left dead if it exits, as a container without a restart policy.
	logDir := t.TempDir() // a log file per service: the last lines explain a failure
	supLog := &testenv.LogBuffer{}
	sup := supervisor.New(slog.New(slog.NewTextHandler(supLog, nil)), io.Discard)
	stop := func(keep string) {
		var wg sync.WaitGroup
		for _, s := range stack.Services {
			if s.Name != keep {
				wg.Go(func() { _ = sup.Stop(s.Name) }) // not started (or stopped already): nothing to do
			}
		}
		wg.Wait()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = sup.StopAll(ctx)
		if t.Failed() {
			for _, s := range stack.Services {
				if b, err := os.ReadFile(filepath.Join(logDir, s.Name+".log")); err == nil {
					t.Logf("--- %s:\n%s", s.Name, tail(string(b), 30))
				}
			}
			t.Logf("--- supervisor:\n%s", tail(supLog.String(), 30))
		}
	})
	start := func(s stack.Service) {
		t.Helper()
		c := project.Services[s.Name]
		var env []string
		for k, v := range c.Environment {
			env = append(env, k+"="+lab.mapValue(*v))
		}
		sort.Strings(env)
		if err := sup.Start(context.Background(), supervisor.Proc{Name: s.Name,
			Path: filepath.Join(bins[s.Package()], "app"), Env: env, ExactEnv: true,
			Dir: t.TempDir(), NoRestart: true, LogFile: filepath.Join(logDir, s.Name+".log")}); err != nil {
			t.Fatalf("start %s: %v", s.Name, err)
		}
		// The container's healthcheck: its own probe binary.
		probe := filepath.Join(bins[s.Package()], "probe")
		ready := "http://127.0.0.1:" + strconv.Itoa(s.Port+lab.offset) + "/readyz"
		deadline := time.Now().Add(90 * time.Second)
		for {
			out, err := exec.Command(probe, ready).CombinedOutput()
			if err == nil {
				break
			}
			if sup.PID(s.Name) == 0 {
				t.Fatalf("%s exited with compose's environment: %s\n%s", s.Name, out, strings.Join(sup.Tail(s.Name), "\n"))
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never became healthy with compose's environment: %s", s.Name, out)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("%s healthy", s.Name)
	}
	for _, s := range stack.Services { // compose's order too: depends_on follows it (compose_test.go)
		start(s)
	}

	// 3. A checkout through the gateway, confirmed by the saga.
	gw, _ := stack.Find("gateway")
	client := loadgen.NewClient("http://127.0.0.1:"+strconv.Itoa(gw.Port+lab.offset), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	first := checkout(ctx, t, client, lab.prefix+"first")
	t.Logf("order %s confirmed: the compose environment runs the lab", first.id)

	// 4. The compose lab's db.topology switch, as the dashboard tells the learner: with
	// the services running, the topology job refuses; stopped, it moves the data; the
	// next `up` (the secrets container, then the services) puts them on the shared
	// database, every row still there.
	topo := func() ([]byte, error) {
		env := []string{"LAB_DB_PREFIX=" + lab.prefix, // compose's databases have no prefix; this lab's do
			"LAB_MIGRATIONS_DIR=" + imageMigrations(t)} // the images' /migrations
		for k, v := range project.Services["topology"].Environment {
			if k != "LAB_MIGRATIONS_DIR" {
				env = append(env, k+"="+lab.mapValue(*v))
			}
		}
		cmd := exec.Command(filepath.Join(bins["./lab"], "app"), "topology", "shared")
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	if out, err := topo(); err == nil || !strings.Contains(string(out), "still running") {
		t.Fatalf("lab topology with the services running: %v\n%s\nwant a refusal naming them", err, out)
	}
	stop(stack.Dashboard)
	out, err := topo()
	if err != nil {
		t.Fatalf("lab topology shared: %v\n%s", err, out)
	}
	t.Logf("lab topology shared:\n%s", out)
	run(t, "secrets/generate.sh", secretsEnv)
	url, err := os.ReadFile(filepath.Join(lab.secrets, "orders_database_url"))
	if err != nil || !strings.Contains(string(url), "/"+lab.prefix+"shop?search_path=orders&") {
		t.Fatalf("after the switch and an up, orders' database URL is %q, want the shared database", url)
	}
	for _, s := range stack.Services {
		if s.Name != stack.Dashboard {
			start(s)
		}
	}
	if err := login(ctx, client, first.token); err != nil {
		t.Fatal(err)
	}
	var again struct{ Status string }
	if err := client.Do(ctx, http.MethodGet, "/api/v1/orders/"+first.id, first.token, nil, nil, &again); err != nil || again.Status != "confirmed" {
		t.Fatalf("after the switch, order %s is %q (%v): want it still confirmed", first.id, again.Status, err)
	}
	second := checkout(ctx, t, client, lab.prefix+"second")
	t.Logf("order %s confirmed on the shared database", second.id)
}

type placedOrder struct{ id, token string }

// login checks that token still works (users' keys survived the switch).
func login(ctx context.Context, client *loadgen.Client, token string) error {
	if err := client.Do(ctx, http.MethodGet, "/api/v1/orders", token, nil, nil, nil); err != nil {
		return fmt.Errorf("list orders with the token from before: %w", err)
	}
	return nil
}

// checkout logs in as alice and places an order the saga must confirm.
func checkout(ctx context.Context, t *testing.T, client *loadgen.Client, key string) placedOrder {
	t.Helper()
	var in struct{ Token string }
	if err := client.Do(ctx, http.MethodPost, "/api/v1/auth/login", "",
		map[string]string{"email": "alice@example.com", "password": "alice-secret"}, nil, &in); err != nil {
		t.Fatalf("log in (users signs with the seed from the secrets volume): %v", err)
	}
	order := map[string]any{
		"items":   []map[string]any{{"sku": "LAB-MUG", "qty": 1}},
		"payment": map[string]string{"card": "4242 4242 4242 4242"},
		"shippingAddress": map[string]string{"name": "Alice", "street": "1 Lab Street", "city": "Berlin",
			"postalCode": "10115", "country": "DE"},
	}
	var placed struct{ OrderID string }
	if err := client.Do(ctx, http.MethodPost, "/api/v1/orders", in.Token, order,
		map[string]string{"Idempotency-Key": key}, &placed); err != nil {
		t.Fatalf("place an order: %v", err)
	}
	for {
		var got struct {
			Status, CancelReason string
		}
		if err := client.Do(ctx, http.MethodGet, "/api/v1/orders/"+placed.OrderID, in.Token, nil, nil, &got); err != nil {
			t.Fatalf("read order %s: %v", placed.OrderID, err)
		}
		if got.Status == "confirmed" {
			return placedOrder{id: placed.OrderID, token: in.Token}
		}
		if got.Status != "pending" {
			t.Fatalf("order %s is %s (%s), want confirmed", placed.OrderID, got.Status, got.CancelReason)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("order %s still pending", placed.OrderID)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

var containerAddr = regexp.MustCompile(`\b([a-z]+|0\.0\.0\.0):(\d+)\b`)

// mapValue rewrites one value of compose's environment for this machine: the secrets
// volume is a directory here, a container's name:port is 127.0.0.1 at this lab's
// offset, and listening on every interface becomes listening on loopback.
func (l parityLab) mapValue(v string) string {
	v = strings.ReplaceAll(v, stack.SecretsDir, l.secrets)
	return containerAddr.ReplaceAllStringFunc(v, func(m string) string {
		name, port, _ := strings.Cut(m, ":")
		n, _ := strconv.Atoi(port)
		switch name {
		case "0.0.0.0", "jaeger", "prometheus":
			// Neither runs here: the ports are this lab's (claimed), so nothing answers
			// and spans are dropped, as in a lab without them.
		default:
			if _, ok := stack.Find(name); !ok {
				return m
			}
		}
		return "127.0.0.1:" + strconv.Itoa(n+l.offset)
	})
}

func TestParityMapsOnlyContainerNames(t *testing.T) {
	l := parityLab{secrets: "/tmp/s", offset: 3000}
	for in, want := range map[string]string{
		"0.0.0.0:8103":                              "127.0.0.1:11103",
		"http://catalog:8102":                       "http://127.0.0.1:11102",
		"http://jaeger:4318":                        "http://127.0.0.1:7318",
		"/run/microlab/secrets/orders_database_url": "/tmp/s/orders_database_url",
		"48MiB":               "48MiB",
		"compose":             "compose",
		"http://example:8080": "http://example:8080",
	} {
		if got := l.mapValue(in); got != want {
			t.Errorf("mapValue(%q) = %q, want %q", in, got, want)
		}
	}
}

// run runs one of compose's shell scripts natively with only env (and PATH).
func run(t *testing.T, script string, env map[string]string) {
	t.Helper()
	cmd := exec.Command("sh", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	t.Logf("%s:\n%s", script, out)
}

func mustManage(t *testing.T, method, path, body string) {
	t.Helper()
	if err := testenv.Management(method, path, body); err != nil {
		t.Fatalf("management API %s %s: %v", method, path, err)
	}
}

func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
