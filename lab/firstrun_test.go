package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"microlab/lab/stack"
	"microlab/services/platform/testenv"
)

// The first run on a fresh machine (issue 13): RabbitMQ installed and running with its
// management and Prometheus plugins off, as Debian's package leaves it. lab up enables
// them itself, says so, and the lab comes up. The broker is a private node (its own
// name, ports, data and plugin list), so the machine's broker and every other test are
// untouched; lab up is pointed at it as rabbitmq-plugins is, by RABBITMQ_NODENAME and
// RABBITMQ_ENABLED_PLUGINS_FILE. The services are stand-ins (as in
// TestUpRunsAndStopsCleanly): the plugins are what is tested, not the shop.
func TestFirstRunEnablesRabbitPlugins(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.AdminDatabaseURL())
	if err != nil {
		testenv.Missing(t, "PostgreSQL at "+testenv.AdminDatabaseURL(), testenv.FixPostgres, err)
	}
	_ = conn.Close(ctx)
	if _, err := lookPath("rabbitmq-plugins", "/usr/sbin/rabbitmq-plugins"); err != nil {
		testenv.Missing(t, "rabbitmq-plugins", "apt-get install rabbitmq-server", err)
	}
	if os.Geteuid() != 0 {
		// As scripts/deps.sh, lab up runs rabbitmq-plugins as root, through sudo -n.
		if err := exec.CommandContext(ctx, "sudo", "-n", "true").Run(); err != nil {
			testenv.Missing(t, "root or passwordless sudo (lab up runs rabbitmq-plugins as root)", "run the tests as root", err)
		}
	}
	testenv.HoldLab(t, testenv.Light)
	broker := testenv.PrivateBrokerForPlugins(t) // stopped (rabbitmqctl -n NODE stop) when the test ends
	vhost := broker.VHost(testenv.Name("fr"))
	if _, err := checkManagement(ctx, broker.ManagementURL()); err == nil {
		t.Fatalf("the private node's management API answers before lab up ran: the test proves nothing")
	}
	bin, _ := standIns(t)

	started := testenv.StartLock(t)
	offset, err := stack.ClaimOffset(nil, testenv.ClaimPorts(t))
	if err != nil {
		t.Fatal(err)
	}
	prefix := testenv.Name("fr") + "_"
	env := map[string]string{"LAB_BIN_DIR": bin, "LAB_DB_PREFIX": prefix, "LAB_PORT_OFFSET": strconv.Itoa(offset), "LAB_RUN_DIR": t.TempDir(),
		"AMQP_URL": vhost, "RABBITMQ_MANAGEMENT_URL": broker.ManagementURL(), "RABBITMQ_PROMETHEUS_URL": broker.PrometheusURL()}
	for _, kv := range broker.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	dropLabDBs(t, prefix)
	stdout, stderr, code, stop := startUp(t, env, "--no-build")
	started()

	out := stdout.String()
	for _, want := range []string{
		"rabbitmq: rabbitmq-management does not answer: enabling RabbitMQ's management and Prometheus plugins (once per machine): ",
		"rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus\n",
		"rabbitmq: plugins enabled in ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "running without RabbitMQ's metrics") {
		t.Errorf("the Prometheus endpoint is said to be missing after it was enabled:\n%s", out)
	}
	if detail, err := checkManagement(ctx, broker.ManagementURL()); err != nil {
		t.Errorf("private node's management API after lab up: %v", err)
	} else {
		t.Log(detail)
	}
	if _, err := checkHTTP(ctx, broker.PrometheusURL()+"/metrics"); err != nil {
		t.Errorf("private node's Prometheus endpoint after lab up: %v", err)
	}
	// Healthy: every instance answers /readyz on its port at the offset.
	insts, err := stack.Config{Host: "127.0.0.1", PortOffset: offset}.Instances(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		resp, err := http.Get(in.URL() + "/readyz")
		if err != nil {
			t.Errorf("%s: %v", in.ID, err)
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s /readyz: %s", in.ID, resp.Status)
		}
	}

	stop() // Ctrl-C
	if c := <-code; c != exitOK {
		t.Errorf("up exited %d after Ctrl-C, want 0:\n%s", c, stderr.String())
	}
}

// When lab up cannot enable the plugins itself — the management API is not on this
// machine, here — it stops at once with one line naming the command, the same line
// lab doctor prints: both come from one check and one plan (pluginsFix).
func TestUpCannotEnablePluginsElsewhere(t *testing.T) {
	t.Parallel()
	vhost := requireDeps(t)
	env := map[string]string{
		"AMQP_URL": vhost, "LAB_DB_PREFIX": testenv.Name("nx") + "_", "LAB_BIN_DIR": t.TempDir(),
		// TEST-NET-1 (RFC 5737): nothing answers there, and it is not this machine.
		"RABBITMQ_MANAGEMENT_URL": "http://guest:guest@192.0.2.1:15672",
	}
	code, stdout, stderr := runLab(t, env, "up", "--no-build")
	line := strings.TrimSpace(stderr)
	if code != exitFailure || stdout != "" || strings.Contains(line, "\n") {
		t.Fatalf("up: exit %d, stdout %q, stderr %q; want exit 1 and one line on stderr", code, stdout, stderr)
	}
	for _, want := range []string{"rabbitmq-management  missing", "fix: rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus",
		"run it where the broker runs: RABBITMQ_MANAGEMENT_URL: host 192.0.2.1 is not this machine"} {
		if !strings.Contains(line, want) {
			t.Errorf("up's line lacks %q: %s", want, line)
		}
	}
	// The same line but for the error (a timeout's words vary from one try to the next).
	_, doc, _ := runLab(t, env, "doctor")
	_, fix, _ := strings.Cut(line, " — fix: ")
	found := false
	for l := range strings.Lines(doc) {
		found = found || strings.HasPrefix(l, "rabbitmq-management  missing ") && strings.HasSuffix(l, " — fix: "+fix+"\n")
	}
	if !found {
		t.Errorf("doctor's line differs from up's %q:\n%s", line, doc)
	}
}

// pluginsFix: the command, and whether lab up may run it.
func TestPluginsFix(t *testing.T) {
	t.Parallel()
	local := Config{AMQPURL: "amqp://guest:guest@127.0.0.1:5672/", ManagementURL: "http://guest:guest@localhost:15672"}
	p := pluginsFix(local)
	if _, err := exec.LookPath("rabbitmq-plugins"); err == nil && p.cannot != "" {
		t.Errorf("local broker, rabbitmq-plugins installed: %+v", p)
	}
	if !strings.HasSuffix(p.command, "rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus") {
		t.Errorf("command %q", p.command)
	}
	node := local
	node.RabbitNode, node.RabbitPluginsFile = "other@localhost", "/tmp/x/plugins"
	if p := pluginsFix(node); !strings.Contains(p.command, "RABBITMQ_NODENAME=other@localhost RABBITMQ_ENABLED_PLUGINS_FILE=/tmp/x/plugins ") ||
		(p.cannot == "" && !strings.Contains(fmt.Sprint(p.env, p.argv), "RABBITMQ_NODENAME=other@localhost")) {
		t.Errorf("another node: %+v", p)
	}
	remote := local
	remote.AMQPURL = "amqp://guest:guest@rabbit.example:5672/"
	if p := pluginsFix(remote); p.argv != nil || !strings.Contains(p.cannot, "AMQP_URL: host rabbit.example is not this machine") {
		t.Errorf("remote broker: %+v", p)
	}
}
