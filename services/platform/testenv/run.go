package testenv

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// RunFunc is a service's run function (every service's main.go has one).
type RunFunc func(ctx context.Context, getenv func(string) string, stdout io.Writer) error

// LogBuffer collects a service's logs; safe for the many goroutines that write them.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// AwaitLine waits up to within for a logged line holding every one of parts, and
// reports whether one came.
func (b *LogBuffer) AwaitLine(within time.Duration, parts ...string) bool {
	deadline := time.Now().Add(within)
	for {
		for _, line := range strings.Split(b.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Run starts a service in-process with env, waits until /readyz answers 200 and returns
// its base URL. The service is stopped (as by SIGTERM) when the test ends, and a run
// error fails the test. logs may be nil. It is patient with a busy machine (see Start).
func Run(t testing.TB, run RunFunc, env Env, logs io.Writer) string {
	t.Helper()
	base, _ := Start(t, run, env, logs)
	return base
}

// Start is Run for a test that also stops the service itself (to restart it, say): stop
// stops it as by SIGTERM and waits until run has returned, failing the test on a run
// error. stop may be called more than once; the test's end calls it too.
//
// The service listens where env["HTTP_ADDR"] says (AnyAddr: a port of its choosing);
// Start writes the address it listens on back into env["HTTP_ADDR"].
//
// On a loaded machine (two cores, several -race test binaries and a lab or two beside
// them) a start can take far longer than on an idle one. That says nothing about the
// service: Start waits up to ReadyWithin for readiness, and starts the service again (up
// to startAttempts times, on AnyAddr) when an attempt failed because its start deadline
// (START_TIMEOUT) passed or a fixed port it was given was taken. Every attempt runs
// against the same databases and vhost, which a service's start is built to survive
// (migrations, topology and seeding are idempotent). Any other failure fails the test.
func Start(t testing.TB, run RunFunc, env Env, logs io.Writer) (base string, stop func()) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	for attempt := 1; ; attempt++ {
		began := time.Now()
		base, stop, err := startOnce(t, run, env, logs)
		if err == nil {
			if took := time.Since(began); took > 10*time.Second {
				t.Logf("%s took %s to become ready (attempt %d)", base, took.Round(time.Millisecond), attempt)
			}
			return base, stop
		}
		if attempt == startAttempts || !busyMachine(err) {
			t.Fatalf("start attempt %d of %d: %v", attempt, startAttempts, err)
		}
		t.Logf("start attempt %d failed after %s (%v); starting again", attempt,
			time.Since(began).Round(time.Millisecond), err)
		env["HTTP_ADDR"] = AnyAddr
	}
}

// WaitReady polls base/readyz until it answers 200; it fails the test after ReadyWithin
// or if the service stops first, which done reports by delivering its result or by being
// closed (done may be nil).
func WaitReady(t testing.TB, base string, done <-chan error) {
	t.Helper()
	if err := awaitReady(base, done, ReadyWithin); err != nil {
		t.Fatal(err)
	}
}

// Bus is a test's own connections to a vhost: a publisher, and a tap that receives a
// copy of every message routed with the given keys. Like a service, it publishes and
// consumes on separate connections (a broker alarm blocks the publishing one).
type Bus struct {
	Conn *bus.Conn // taps and inspection
	Pub  *bus.Publisher
}

// Dial connects to amqpURL for the test's duration.
func Dial(t testing.TB, amqpURL string) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Dial(ctx, amqpURL, "test/consume", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pubConn, err := bus.Dial(ctx, amqpURL, "test/publish", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pubConn.Close() })
	return &Bus{Conn: conn, Pub: bus.NewPublisher(pubConn, log)}
}

// Tap declares an exclusive queue bound to keys on exchange (use "#" on shop.events for
// everything) and returns its deliveries (auto-acked).
func (b *Bus) Tap(t testing.TB, exchange string, keys ...string) <-chan amqp.Delivery {
	t.Helper()
	return b.tap(t, map[string][]string{exchange: keys})
}

// Wiretap is a Tap of every event and every command (contracts.Commands). One queue
// receives them all, so they arrive in the order the broker routed them.
func (b *Bus) Wiretap(t testing.TB) <-chan amqp.Delivery {
	t.Helper()
	return b.tap(t, map[string][]string{contracts.ExchangeEvents: {"#"}, contracts.ExchangeCommands: contracts.Commands})
}

// tap declares an exclusive queue bound to keys on each exchange.
func (b *Bus) tap(t testing.TB, bindings map[string][]string) <-chan amqp.Delivery {
	t.Helper()
	ch, err := b.Conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	if err := bus.DeclareExchanges(ch); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for exchange, keys := range bindings {
		for _, k := range keys {
			if err := ch.QueueBind(q.Name, k, exchange, false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Publish publishes a new envelope of typ (correlation id corr) with data.
func (b *Bus) Publish(t testing.TB, typ, corr string, data any) contracts.Envelope {
	t.Helper()
	env, err := contracts.NewEnvelope(typ, "test", corr, "", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Pub.PublishEnvelope(context.Background(), env, nil); err != nil {
		t.Fatal(err)
	}
	return env
}

// SetLab sets a lab setting in the lab database at labURL (source "test"). With pub it
// is also announced on the bus, as `lab set` does, so that running services apply it
// at once; without, services read it when they start (set it before starting them).
func SetLab(t testing.TB, labURL string, pub *bus.Publisher, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := control.OpenStore(ctx, labURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	change, err := store.Set(ctx, key, value, "test")
	if err != nil {
		t.Fatal(err)
	}
	if pub == nil {
		return
	}
	if err := control.Announce(ctx, pub, change); err != nil {
		t.Fatal(err)
	}
}
