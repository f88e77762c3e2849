// Package bus is the shop's AMQP kit on github.com/rabbitmq/amqp091-go.
//
// amqp091-go does not reconnect by itself: when the broker restarts, every connection and
// channel is closed for good. Conn redials with backoff and hands out channels from the
// live connection; Publisher and Consume re-create their channels (and re-declare the
// topology, which is idempotent) whenever the old ones die, so services recover without
// a restart and consumers resume where the broker left their queues.
//
// A service holds two connections, one that publishes and one that consumes (RabbitMQ's
// own advice): during a memory or disk alarm the broker blocks every connection that
// publishes by no longer reading from it — acks, channel opens and closes included —
// until the alarm clears. Consumers on a connection that never publishes keep acking, so
// a backlog (the usual cause of a memory alarm) still drains. Conn reports the blocked
// state (log lines, the amqp_connection_blocked gauge), Publish waits it out only as long
// as its context allows, and every call that waits for the broker is bounded by its
// caller's context: amqp091-go's own calls wait for the broker's answer without a
// timeout, so they run in a goroutine the caller can leave behind.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/observability"
)

// ErrBlocked means the broker is blocking the connection (a resource alarm) and the
// caller's context ended before it unblocked. It wraps the context's error.
var ErrBlocked = errors.New("rabbitmq is blocking the connection")

// closeTimeout bounds Close's wait for the broker's close-ok, which a blocked connection
// never reads.
const closeTimeout = 5 * time.Second

// Conn is a self-healing AMQP connection.
type Conn struct {
	url  string
	name string
	log  *slog.Logger

	mu    sync.Mutex
	conn  *amqp.Connection
	ready chan struct{} // closed while conn is usable; replaced when it dies
	// blocked is the broker's connection.blocked state of conn (reason: its explanation,
	// e.g. "low on memory"); unblocked is closed while not blocked.
	blocked      bool
	blockReason  string
	blockedSince time.Time
	unblocked    chan struct{}
	gauge        prometheus.Gauge // amqp_connection_blocked for this connection; nil until Instrument
	done         chan struct{}
	once         sync.Once
}

// Dial connects (waiting, with backoff, until the broker answers or ctx ends) and keeps
// the connection alive in the background until Close. name shows up in the management UI.
func Dial(ctx context.Context, url, name string, log *slog.Logger) (*Conn, error) {
	c := newConn(url, name, log)
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	if !c.install(conn) {
		return nil, errors.New("dial rabbitmq: connection closed")
	}
	go c.keepAlive(conn)
	return c, nil
}

// Open is Dial for a connection the process can work without for a while: it returns
// at once and connects in the background (retrying with backoff until Close), so a
// broker that is down or not there delays nothing. Channel waits for the connection as
// it does after a loss. The gateway follows lab.control this way: it has no other use
// for the broker, and without one it still applies the lab's changes at its periodic
// re-read.
func Open(url, name string, log *slog.Logger) *Conn {
	c := newConn(url, name, log)
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		conn, err := c.dial(ctx)
		cancel()
		if err != nil || !c.install(conn) {
			return // closed before it connected
		}
		c.keepAlive(conn)
	}()
	return c
}

// newConn is a Conn not yet connected (and not blocked).
func newConn(url, name string, log *slog.Logger) *Conn {
	unblocked := make(chan struct{})
	close(unblocked)
	return &Conn{url: url, name: name, log: log, ready: make(chan struct{}), unblocked: unblocked, done: make(chan struct{})}
}

// Instrument exports the connection's blocked state as the gauge
// amqp_connection_blocked{connection=role} (1 blocked, 0 not); role says what the
// connection is for: "publish" or "consume".
func (c *Conn) Instrument(tel *observability.Telemetry, role string) *Conn {
	if tel == nil {
		return c
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gauge = tel.Metrics.ConnectionBlocked.WithLabelValues(role)
	c.gauge.Set(b2f(c.blocked))
	return c
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *Conn) dial(ctx context.Context) (*amqp.Connection, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		select {
		case <-c.done:
			return nil, errors.New("dial rabbitmq: connection closed")
		default:
		}
		cfg := amqp.Config{Properties: amqp.NewConnectionProperties(), Heartbeat: 10 * time.Second}
		cfg.Properties.SetClientConnectionName(c.name)
		conn, err := amqp.DialConfig(c.url, cfg)
		if err == nil {
			// Registered before the connection is handed out, so no blocked notice is
			// missed. amqp091-go delivers them from its reader: watchBlocked drains them.
			go c.watchBlocked(conn, conn.NotifyBlocked(make(chan amqp.Blocking, 1)))
			return conn, nil
		}
		if attempt == 1 || attempt%10 == 0 {
			c.log.WarnContext(ctx, "rabbitmq unreachable, retrying", "attempt", attempt, "err", err)
		}
		// Full jitter keeps a fleet of services from reconnecting in lock-step.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial rabbitmq: %w", errors.Join(err, ctx.Err()))
		case <-c.done:
			return nil, errors.New("dial rabbitmq: connection closed")
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// install makes conn the live connection; false if Close came first (conn is closed).
func (c *Conn) install(conn *amqp.Connection) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		go func() { _ = conn.CloseDeadline(time.Now().Add(closeTimeout)) }()
		return false
	default:
	}
	c.conn = conn
	close(c.ready)
	return true
}

// watchBlocked follows the broker's connection.blocked and connection.unblocked notices
// for conn until it closes. Only the live connection's count: the broker blocks a
// connection when it publishes during an alarm, so no notice precedes install.
func (c *Conn) watchBlocked(conn *amqp.Connection, notes <-chan amqp.Blocking) {
	for b := range notes {
		c.mu.Lock()
		if c.conn != conn { // a late notice from a connection already lost
			c.mu.Unlock()
			continue
		}
		c.setBlocked(b.Active, b.Reason)
		c.mu.Unlock()
	}
}

// setBlocked records the blocked state and logs a change (with reason: the broker's, or
// why the state ended other than by the broker's notice); c.mu must be held.
func (c *Conn) setBlocked(active bool, reason string) {
	if active == c.blocked {
		return
	}
	c.blocked = active
	if c.gauge != nil {
		c.gauge.Set(b2f(active))
	}
	if active {
		c.blockReason, c.blockedSince = reason, time.Now()
		c.unblocked = make(chan struct{})
		// The broker no longer reads this connection: publishes wait for their confirm,
		// and nothing else on it (acks included) reaches the broker until the alarm clears.
		c.log.Warn("rabbitmq connection blocked", "connection", c.name, "reason", reason)
		return
	}
	close(c.unblocked)
	attrs := []any{"connection", c.name, "blocked_for", time.Since(c.blockedSince).Round(time.Millisecond).String()}
	if reason != "" {
		attrs = append(attrs, "reason", reason)
	}
	c.log.Info("rabbitmq connection unblocked", attrs...)
}

// awaitUnblocked returns at once unless the broker is blocking the connection; then it
// waits until the broker unblocks it (or the connection is lost), or ctx ends (ErrBlocked).
func (c *Conn) awaitUnblocked(ctx context.Context) error {
	c.mu.Lock()
	unblocked, reason := c.unblocked, c.blockReason
	c.mu.Unlock()
	select {
	case <-unblocked:
		return nil
	default:
	}
	select {
	case <-unblocked:
		return nil
	case <-c.done:
		return errors.New("bus closed")
	case <-ctx.Done():
		return fmt.Errorf("%w (%s): %w", ErrBlocked, reason, ctx.Err())
	}
}

func (c *Conn) keepAlive(conn *amqp.Connection) {
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.done:
			return
		case amqpErr := <-closed:
			select {
			case <-c.done: // closed by Close, not lost
				return
			default:
			}
			c.mu.Lock()
			c.conn = nil
			c.ready = make(chan struct{})
			c.setBlocked(false, "connection lost") // the next connection starts unblocked
			c.mu.Unlock()
			c.log.Warn("rabbitmq connection lost, reconnecting", "err", amqpErr)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		next, err := c.dial(ctx)
		cancel()
		if err != nil {
			return // closed while reconnecting
		}
		if !c.install(next) {
			return
		}
		c.log.Info("rabbitmq connection restored")
		conn = next
	}
}

// Channel opens a channel on the live connection, waiting (bounded by ctx) while the
// connection is being re-established or is blocked by the broker. The open itself waits
// for the broker's open-ok, which a blocked or unresponsive broker never sends, so it is
// bounded by ctx too.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		c.mu.Lock()
		conn, ready := c.conn, c.ready
		c.mu.Unlock()
		if conn != nil {
			if err := c.awaitUnblocked(ctx); err != nil {
				return nil, fmt.Errorf("open channel: %w", err)
			}
			ch, err := openChannel(ctx, conn)
			if err == nil {
				return ch, nil
			}
			if ctx.Err() != nil || !errors.Is(err, amqp.ErrClosed) {
				return nil, fmt.Errorf("open channel: %w", err)
			}
			// Closed but not yet noticed by keepAlive: ready is still the old, closed
			// channel, so wait a beat instead of spinning on it.
			ready = nil
		}
		select {
		case <-ready:
		case <-c.done:
			return nil, errors.New("open channel: bus closed")
		case <-ctx.Done():
			return nil, fmt.Errorf("open channel: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// openChannel is conn.Channel() bounded by ctx. A channel that opens after ctx ended is
// closed by the goroutine left behind, which lasts until the broker answers or the
// connection closes.
func openChannel(ctx context.Context, conn *amqp.Connection) (*amqp.Channel, error) {
	type opened struct {
		ch  *amqp.Channel
		err error
	}
	res := make(chan opened, 1)
	go func() {
		ch, err := conn.Channel()
		res <- opened{ch, err}
	}()
	select {
	case r := <-res:
		return r.ch, r.err
	case <-ctx.Done():
		go func() {
			if r := <-res; r.err == nil {
				_ = r.ch.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Close closes the connection and stops reconnecting. It waits for the broker's
// close-ok for closeTimeout at most: a blocked connection is not read, and a service
// shutting down during an alarm must not wait for the alarm to end.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		close(c.done)
		conn := c.conn
		c.mu.Unlock()
		if conn != nil {
			err = conn.CloseDeadline(time.Now().Add(closeTimeout))
		}
	})
	return err
}
