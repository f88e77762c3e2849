package testenv

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
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

// Run starts a service in-process with env, waits until /readyz answers 200 and returns
// its base URL. The service is stopped (as by SIGTERM) when the test ends, and a run
// error fails the test. logs may be nil.
func Run(t testing.TB, run RunFunc, env Env, logs io.Writer) string {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, env.Get, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	base := "http://" + env["HTTP_ADDR"]
	WaitReady(t, base, done)
	return base
}

// WaitReady polls base/readyz until it answers 200; it fails the test after 30 s or if
// the service's run returns first (done may be nil).
func WaitReady(t testing.TB, base string, done <-chan error) {
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
		select {
		case err := <-done:
			t.Fatalf("service stopped before it was ready: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s never became ready", base)
}

// Bus is a test's own connection to a vhost: a publisher, and a tap that receives a
// copy of every message routed with the given keys.
type Bus struct {
	Conn *bus.Conn
	Pub  *bus.Publisher
}

// Dial connects to amqpURL for the test's duration.
func Dial(t testing.TB, amqpURL string) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Dial(ctx, amqpURL, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &Bus{Conn: conn, Pub: bus.NewPublisher(conn, log)}
}

// Tap declares an exclusive queue bound to keys on exchange (use "#" on shop.events for
// everything) and returns its deliveries (auto-acked).
func (b *Bus) Tap(t testing.TB, exchange string, keys ...string) <-chan amqp.Delivery {
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
	for _, k := range keys {
		if err := ch.QueueBind(q.Name, k, exchange, false, nil); err != nil {
			t.Fatal(err)
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
