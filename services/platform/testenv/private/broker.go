package private

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Broker is a RabbitMQ node of one's own. Its data directory survives Stop and Start,
// as a real broker restart's does (durable queues and persistent messages included).
//
// It has no plugins: the management plugin would make every start (and so every
// restart a chaos test waits for) seconds slower. Queues lists its queues instead. A
// node made by NewBrokerForPlugins has ports of its own set aside for the management
// and Prometheus plugins, still disabled: a first-run test enables them as lab up does.
type Broker struct {
	node     string
	port     int // AMQP
	mgmtPort int // the management plugin's, once enabled (0: none set aside)
	promPort int // the Prometheus plugin's, once enabled
	dir      string
	env      []string
}

// NewBroker prepares a node — a data directory under os.TempDir (the node runs as the
// rabbitmq user when started by root, and root's own directories are closed to it),
// free ports, its configuration — without starting it. Remove deletes the directory.
// It needs rabbitmq-server and rabbitmqctl on PATH.
func NewBroker() (*Broker, error) { return newBrokerIn(false) }

// NewBrokerForPlugins is NewBroker with two more free ports, which the management API
// and the Prometheus endpoint listen on (127.0.0.1 only) once their plugins are enabled
// — `rabbitmq-plugins enable` with the node's Env — rather than on 15672 and 15692,
// which the machine's own broker holds. The plugins start disabled, as on a fresh
// install.
func NewBrokerForPlugins() (*Broker, error) { return newBrokerIn(true) }

func newBrokerIn(plugins bool) (*Broker, error) {
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		return nil, fmt.Errorf("private rabbitmq: %w (install: apt-get install rabbitmq-server)", err)
	}
	dir, err := os.MkdirTemp("", "microlab-rabbit-")
	if err != nil {
		return nil, fmt.Errorf("private rabbitmq: %w", err)
	}
	b, err := newBroker(dir, plugins)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

func newBroker(dir string, plugins bool) (*Broker, error) {
	ports := make([]int, 2, 4)
	if plugins {
		ports = ports[:4]
	}
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("private rabbitmq: %w", err)
		}
		ports[i] = p
	}
	suffix := make([]byte, 5)
	_, _ = rand.Read(suffix)
	b := &Broker{node: "mlab" + hex.EncodeToString(suffix) + "@localhost", port: ports[0], dir: dir}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", b.port)
	if plugins {
		// RabbitMQ knows every bundled plugin's settings, enabled or not: these take
		// effect when the plugins are enabled on the running node.
		b.mgmtPort, b.promPort = ports[2], ports[3]
		conf += fmt.Sprintf("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n"+
			"prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = %d\n", b.mgmtPort, b.promPort)
	}
	for name, content := range map[string]string{"rabbitmq.conf": conf, "plugins": "[].\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, fmt.Errorf("private rabbitmq: %w", err)
		}
	}
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("private rabbitmq: %w", err)
		}
	}
	if u, err := user.Lookup("rabbitmq"); err == nil && os.Geteuid() == 0 {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	}
	b.env = append(os.Environ(),
		"RABBITMQ_NODENAME="+b.node,
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
		"RABBITMQ_NODE_PORT="+strconv.Itoa(b.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(ports[1]),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
	)
	return b, nil
}

// URL is the node's AMQP URL (user guest, vhost /).
func (b *Broker) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", b.port) }

// ManagementURL is the base URL of the node's management API, with guest's credentials
// (it answers once the management plugin is enabled); "" unless NewBrokerForPlugins
// made the node.
func (b *Broker) ManagementURL() string {
	if b.mgmtPort == 0 {
		return ""
	}
	return fmt.Sprintf("http://guest:guest@127.0.0.1:%d", b.mgmtPort)
}

// PrometheusURL is the base URL of the node's Prometheus endpoint (GET /metrics, once
// the plugin is enabled); "" unless NewBrokerForPlugins made the node.
func (b *Broker) PrometheusURL() string {
	if b.promPort == 0 {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d", b.promPort)
}

// Env is what points RabbitMQ's command-line tools (rabbitmqctl, rabbitmq-plugins) at
// this node rather than the machine's: its name, and the enabled-plugins file it reads
// (rabbitmq-plugins refuses to enable anything when its file is not the node's).
func (b *Broker) Env() []string {
	return []string{"RABBITMQ_NODENAME=" + b.node, "RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(b.dir, "plugins")}
}

// Dir is the node's directory: configuration, data, logs.
func (b *Broker) Dir() string { return b.dir }

// Start starts the node and waits (at most a minute, and while ctx lasts) until it
// accepts AMQP connections.
func (b *Broker) Start(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "rabbitmq-server", "-detached")
	cmd.Env = b.env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start private rabbitmq: %w\n%s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if answers(b.port, time.Second) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(b.dir, "log", b.node+".log"))
			return fmt.Errorf("private rabbitmq did not start within a minute (%v); log tail:\n%s",
				ctx.Err(), tail(log, 2000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop stops the node cleanly, like `rabbitmqctl stop`: connections drop, durable state
// stays on disk for the next Start. It returns once the AMQP port is closed (or after
// 10 s more).
func (b *Broker) Stop(ctx context.Context) error {
	_, err := b.Ctl(ctx, "stop")
	for range 100 {
		if !answers(b.port, 200*time.Millisecond) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(err, fmt.Errorf("private rabbitmq on port %d still answers after stop", b.port))
}

// Ctl runs rabbitmqctl against the node (with the node's environment) and returns its
// output.
func (b *Broker) Ctl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-n", b.node}, args...)...)
	cmd.Env = b.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Queues returns the depth (messages ready and unacknowledged) of every queue in vhost,
// as rabbitmqctl list_queues reads them from the queues themselves: exact, where the
// management API's figures are sampled statistics.
func (b *Broker) Queues(ctx context.Context, vhost string) (map[string]int, error) {
	out, err := b.Ctl(ctx, "list_queues", "--vhost", vhost, "--formatter", "json", "name", "messages")
	if err != nil {
		return nil, err
	}
	i := strings.Index(out, "[")
	if i < 0 {
		return nil, fmt.Errorf("rabbitmqctl list_queues: no JSON in %q", out)
	}
	var rows []struct {
		Name     string `json:"name"`
		Messages int    `json:"messages"`
	}
	if err := json.Unmarshal([]byte(out[i:]), &rows); err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues: %w\n%s", err, out)
	}
	qs := make(map[string]int, len(rows))
	for _, r := range rows {
		qs[r.Name] = r.Messages
	}
	return qs, nil
}

// Remove deletes the node's directory. Stop it first.
func (b *Broker) Remove() error { return os.RemoveAll(b.dir) }
