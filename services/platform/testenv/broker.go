package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Broker is a private RabbitMQ node for a test that must stop and restart the broker
// (chaos tests). Stopping the machine's shared broker would break every other test
// running in parallel, so the test gets a node of its own, on its own port, with its own
// data directory, which survives Stop/Start like a real broker restart does (durable
// queues and persistent messages included).
type Broker struct {
	t    testing.TB
	node string
	port int
	dir  string
	env  []string
}

// PrivateBroker starts a new RabbitMQ node and stops it when the test ends.
func PrivateBroker(t testing.TB) *Broker {
	t.Helper()
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		Missing(t, "rabbitmq-server", "apt-get install rabbitmq-server", err)
	}
	// The node runs as the rabbitmq user (Debian's wrapper switches to it), which must
	// be able to write its data; TempDir's parents are private to root.
	dir, err := os.MkdirTemp("", "microlab-rabbit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	port := FreePort(t)
	dist := FreePort(t)
	b := &Broker{t: t, node: Name("mlab") + "@localhost", port: port, dir: dir}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", port)
	for name, content := range map[string]string{"rabbitmq.conf": conf, "plugins": "[].\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
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
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
	)
	b.Start()
	t.Cleanup(func() { b.Stop() })
	return b
}

// URL is the AMQP URL of the node.
func (b *Broker) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", b.port) }

// Start starts the node and waits until it accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	cmd := exec.Command("rabbitmq-server", "-detached")
	cmd.Env = b.env
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Fatalf("start private rabbitmq: %v\n%s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.port), time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(b.dir, "log", b.node+".log"))
	b.t.Fatalf("private rabbitmq did not start within 60s; log tail:\n%s", tail(log, 2000))
}

// Stop stops the node (cleanly, like `rabbitmqctl stop`): connections drop, durable
// state stays on disk for the next Start.
func (b *Broker) Stop() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", "-n", b.node, "stop")
	cmd.Env = b.env
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Logf("stop private rabbitmq: %v\n%s", err, out)
	}
	for range 100 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.port), 200*time.Millisecond)
		if err != nil {
			return
		}
		_ = c.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// ctl runs rabbitmqctl against the node (with the node's environment, as Stop does) and
// returns its output.
func (b *Broker) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-n", b.node}, args...)...)
	cmd.Env = b.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Alarm raises (on) or clears the node's memory alarm, as if the broker had run out of
// memory: the watermark goes to almost nothing, or back to RabbitMQ's default (0.4).
// While the alarm is on, the broker blocks every connection that publishes: it stops
// reading from it altogether (acks included) until the alarm clears. Alarm returns once
// the node reports the alarm raised or cleared. Call it from the test's goroutine.
func (b *Broker) Alarm(on bool) {
	b.t.Helper()
	watermark := "0.4"
	if on {
		watermark = "0.0000001"
	}
	if _, err := b.ctl("set_vm_memory_high_watermark", watermark); err != nil {
		b.t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		alarmed, err := b.MemoryAlarm()
		if err != nil {
			b.t.Fatal(err)
		}
		if alarmed == on {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("memory alarm still %v a minute after setting the watermark to %s", alarmed, watermark)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MemoryAlarm reports whether the node has a memory alarm in effect.
func (b *Broker) MemoryAlarm() (bool, error) {
	out, err := b.ctl("eval", "rabbit_alarm:get_alarms().")
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "resource_limit,memory"), nil
}

// Connections returns the node's client connections: each one's client-provided name
// (the connection_name property, what bus.Dial is given) and its state: running,
// blocking (an alarm is on; blocked at its next publish) or blocked (no longer read).
func (b *Broker) Connections() (map[string]string, error) {
	out, err := b.ctl("list_connections", "--formatter", "json", "client_properties", "state")
	if err != nil {
		return nil, err
	}
	// client_properties is a list of [key, type, value] triples.
	var rows []struct {
		ClientProperties [][]any `json:"client_properties"`
		State            string  `json:"state"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &rows); err != nil {
		return nil, fmt.Errorf("list_connections: %w\n%s", err, out)
	}
	conns := map[string]string{}
	for _, r := range rows {
		name := ""
		for _, p := range r.ClientProperties {
			if len(p) == 3 && p[0] == "connection_name" {
				name, _ = p[2].(string)
			}
		}
		conns[name] = r.State
	}
	return conns, nil
}
