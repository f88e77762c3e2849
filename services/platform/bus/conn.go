// Package bus is the shop's AMQP kit on github.com/rabbitmq/amqp091-go.
//
// amqp091-go does not reconnect by itself: when the broker restarts, every connection and
// channel is closed for good. Conn redials with backoff and hands out channels from the
// live connection; Publisher and Consume re-create their channels (and re-declare the
// topology, which is idempotent) whenever the old ones die, so services recover without
// a restart and consumers resume where the broker left their queues.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Conn is a self-healing AMQP connection.
type Conn struct {
	url  string
	name string
	log  *slog.Logger

	mu    sync.Mutex
	conn  *amqp.Connection
	ready chan struct{} // closed while conn is usable; replaced when it dies
	done  chan struct{}
	once  sync.Once
}

// Dial connects (waiting, with backoff, until the broker answers or ctx ends) and keeps
// the connection alive in the background until Close. name shows up in the management UI.
func Dial(ctx context.Context, url, name string, log *slog.Logger) (*Conn, error) {
	c := &Conn{url: url, name: name, log: log, ready: make(chan struct{}), done: make(chan struct{})}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.install(conn)
	go c.keepAlive(conn)
	return c, nil
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

func (c *Conn) install(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	close(c.ready)
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
		c.install(next)
		c.log.Info("rabbitmq connection restored")
		conn = next
	}
}

// Channel opens a channel on the live connection, waiting (bounded by ctx) while the
// connection is being re-established.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		c.mu.Lock()
		conn, ready := c.conn, c.ready
		c.mu.Unlock()
		if conn != nil {
			ch, err := conn.Channel()
			if err == nil {
				return ch, nil
			}
			if !errors.Is(err, amqp.ErrClosed) {
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

// Close closes the connection and stops reconnecting.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		if conn != nil {
			err = conn.Close()
		}
	})
	return err
}
