package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/testenv/private"
)

// Broker is a private RabbitMQ node for a test that must stop and restart the broker
// (chaos tests). Stopping the machine's shared broker would break every other test
// running in parallel, so the test gets a node of its own, on its own port, with its own
// data directory, which survives Stop/Start like a real broker restart does (durable
// queues and persistent messages included). See package private.
type Broker struct {
	t testing.TB
	b *private.Broker
}

// PrivateBroker starts a new RabbitMQ node and stops it when the test ends.
func PrivateBroker(t testing.TB) *Broker {
	t.Helper()
	return startPrivate(t, private.NewBroker)
}

// PrivateBrokerForPlugins is PrivateBroker with ports set aside for the management and
// Prometheus plugins, both disabled, as on a fresh install (a first-run test enables
// them; see private.NewBrokerForPlugins).
func PrivateBrokerForPlugins(t testing.TB) *Broker {
	t.Helper()
	return startPrivate(t, private.NewBrokerForPlugins)
}

func startPrivate(t testing.TB, newBroker func() (*private.Broker, error)) *Broker {
	t.Helper()
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		Missing(t, "rabbitmq-server", "apt-get install rabbitmq-server", err)
	}
	pb, err := newBroker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pb.Remove() })
	b := &Broker{t: t, b: pb}
	b.Start()
	t.Cleanup(func() { b.Stop() })
	return b
}

// URL is the AMQP URL of the node.
func (b *Broker) URL() string { return b.b.URL() }

// ManagementURL, PrometheusURL and Env: see private.Broker.
func (b *Broker) ManagementURL() string { return b.b.ManagementURL() }
func (b *Broker) PrometheusURL() string { return b.b.PrometheusURL() }
func (b *Broker) Env() []string         { return b.b.Env() }

// VHost adds a virtual host to the node, guest allowed everything on it, and returns
// its AMQP URL.
func (b *Broker) VHost(name string) string {
	b.t.Helper()
	if _, err := b.ctl("add_vhost", name); err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*"); err != nil {
		b.t.Fatal(err)
	}
	return b.URL() + url.PathEscape(name)
}

// Queues returns the exact depth of every queue in vhost (the node has no management
// API); see private.Broker.Queues.
func (b *Broker) Queues(ctx context.Context, vhost string) (map[string]int, error) {
	return b.b.Queues(ctx, vhost)
}

// Start starts the node and waits until it accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	if err := b.b.Start(context.Background()); err != nil {
		b.t.Fatal(err)
	}
}

// Stop stops the node (cleanly, like `rabbitmqctl stop`): connections drop, durable
// state stays on disk for the next Start.
func (b *Broker) Stop() {
	b.t.Helper()
	if err := b.b.Stop(context.Background()); err != nil {
		b.t.Logf("stop private rabbitmq: %v", err)
	}
}

// ctl runs rabbitmqctl against the node (with the node's environment, as Stop does) and
// returns its output.
func (b *Broker) ctl(args ...string) (string, error) { return b.b.Ctl(context.Background(), args...) }

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
