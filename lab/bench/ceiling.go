package bench

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/pg"
)

// The infrastructure's ceiling: what this machine's RabbitMQ and PostgreSQL do on their
// own, with nothing of the shop in the way, measured in the same run as the shop so
// that the shop's figures can be read as shares of it (as PerfTest and pgbench would
// measure them, in Go so that nothing else need be installed).

// rabbitConfig is one broker measurement.
type rabbitConfig struct {
	AMQPURL    string // the machine's broker (its vhost is replaced by a private one)
	Publishers int
	Consumers  int // one queue each; publishers spread their messages over the queues
	Bytes      int
	InFlight   int // unconfirmed messages per publisher: confirms are pipelined, not awaited one by one
	Prefetch   int
	Warmup     time.Duration
	Duration   time.Duration
}

// rabbitCeiling publishes persistent, mandatory messages with publisher confirms and
// consumes them with manual acks (one ack per message, as the services do), in a vhost
// of its own that it deletes afterwards, and counts what is confirmed and acked per
// second after a warm-up.
func rabbitCeiling(ctx context.Context, m *mgmt, rc rabbitConfig, progress func(string)) (*RabbitCeiling, error) {
	vhost := "microlab-bench-ceiling-" + crand.Text()[:8]
	if err := m.createVHost(ctx, vhost); err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		_ = m.deleteVHost(dctx, vhost)
	}()
	vurl, err := withVHost(rc.AMQPURL, vhost)
	if err != nil {
		return nil, err
	}
	dial := func(name string) (*amqp.Connection, *amqp.Channel, error) {
		props := amqp.NewConnectionProperties()
		props.SetClientConnectionName("lab-bench-ceiling-" + name)
		conn, err := amqp.DialConfig(vurl, amqp.Config{Properties: props, Heartbeat: 10 * time.Second})
		if err != nil {
			return nil, nil, fmt.Errorf("RabbitMQ: %w", err)
		}
		ch, err := conn.Channel()
		if err != nil {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("RabbitMQ: %w", err)
		}
		return conn, ch, nil
	}
	// Every connection is closed before the goroutines are waited for: a publish the
	// broker is blocking (flow control) returns only then.
	var conns []*amqp.Connection
	var wg sync.WaitGroup
	rctx, stop := context.WithCancel(ctx)
	defer func() {
		stop()
		for _, c := range conns {
			_ = c.Close()
		}
		wg.Wait()
	}()
	conn, ch, err := dial("setup")
	if err != nil {
		return nil, err
	}
	conns = append(conns, conn)
	const exchange = "bench"
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("RabbitMQ: declare exchange: %w", err)
	}
	for i := range rc.Consumers {
		q := fmt.Sprintf("bench.q%d", i)
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("RabbitMQ: declare queue: %w", err)
		}
		if err := ch.QueueBind(q, fmt.Sprintf("k%d", i), exchange, false, nil); err != nil {
			return nil, fmt.Errorf("RabbitMQ: bind: %w", err)
		}
	}

	var measuring atomic.Bool
	var confirmed, acked, nacked atomic.Int64
	var lmu sync.Mutex
	var lat []time.Duration
	errs := make(chan error, rc.Publishers+rc.Consumers)

	for i := range rc.Consumers {
		c, cch, err := dial(fmt.Sprintf("consumer-%d", i))
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		if err := cch.Qos(rc.Prefetch, 0, false); err != nil {
			return nil, fmt.Errorf("RabbitMQ: qos: %w", err)
		}
		ds, err := cch.Consume(fmt.Sprintf("bench.q%d", i), "", false, false, false, false, nil)
		if err != nil {
			return nil, fmt.Errorf("RabbitMQ: consume: %w", err)
		}
		wg.Go(func() {
			for {
				select {
				case <-rctx.Done():
					return
				case d, ok := <-ds:
					if !ok {
						errs <- errors.New("RabbitMQ: a consumer's deliveries ended")
						return
					}
					if err := d.Ack(false); err != nil {
						errs <- fmt.Errorf("RabbitMQ: ack: %w", err)
						return
					}
					if measuring.Load() {
						acked.Add(1)
					}
				}
			}
		})
	}
	body := make([]byte, rc.Bytes)
	_, _ = crand.Read(body)
	for i := range rc.Publishers {
		c, pch, err := dial(fmt.Sprintf("publisher-%d", i))
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		if err := pch.Confirm(false); err != nil {
			return nil, fmt.Errorf("RabbitMQ: confirm mode: %w", err)
		}
		confirms := pch.NotifyPublish(make(chan amqp.Confirmation, rc.InFlight))
		window := make(chan time.Time, rc.InFlight) // one per unconfirmed message, in publish order
		wg.Go(func() {                              // confirms arrive in delivery-tag order
			for {
				select {
				case <-rctx.Done():
					return
				case cf, ok := <-confirms:
					if !ok {
						return
					}
					sent := <-window
					if !measuring.Load() {
						continue
					}
					if !cf.Ack {
						nacked.Add(1)
						continue
					}
					confirmed.Add(1)
					lmu.Lock()
					lat = append(lat, time.Since(sent))
					lmu.Unlock()
				}
			}
		})
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-rctx.Done():
					return
				case window <- time.Now():
				}
				err := pch.PublishWithContext(rctx, exchange, fmt.Sprintf("k%d", n%rc.Consumers), true, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: body,
				})
				if err != nil {
					if rctx.Err() == nil {
						errs <- fmt.Errorf("RabbitMQ: publish: %w", err)
					}
					return
				}
			}
		})
	}
	if err := sleep(ctx, rc.Warmup); err != nil {
		return nil, err
	}
	measuring.Store(true)
	start := time.Now()
	progress(fmt.Sprintf("RabbitMQ: %d publishers, %d consumers, %d-byte persistent messages, confirms pipelined %d deep, for %s",
		rc.Publishers, rc.Consumers, rc.Bytes, rc.InFlight, rc.Duration))
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-errs:
		return nil, err
	case <-time.After(rc.Duration):
	}
	measuring.Store(false)
	secs := time.Since(start).Seconds()
	lmu.Lock()
	l := slices.Clone(lat)
	lmu.Unlock()
	slices.Sort(l)
	out := &RabbitCeiling{Publishers: rc.Publishers, Consumers: rc.Consumers, Bytes: rc.Bytes, InFlight: rc.InFlight,
		Prefetch: rc.Prefetch, Seconds: secs,
		Published: float64(confirmed.Load()) / secs, Acked: float64(acked.Load()) / secs,
		ConfirmP50: pctMs(l, .50), ConfirmP99: pctMs(l, .99)}
	if n := nacked.Load(); n > 0 {
		return out, fmt.Errorf("RabbitMQ: the broker nacked %d messages", n)
	}
	return out, nil
}

func pctMs(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return msOf(sorted[min(len(sorted)-1, int(q*float64(len(sorted))))])
}

// postgresTx is the ceiling's transaction: pgbench's "simple update" without its SELECT.
const postgresTx = "BEGIN; UPDATE accounts SET balance = balance + $1 WHERE id = $2; INSERT INTO history (account, delta) VALUES ($2, $1); COMMIT"

// postgresCeiling runs postgresTx from clients connections for d (after a warm-up) in a
// private database (dbURL, already provisioned), over the same driver and TLS setting
// the services use, and counts commits per second.
func postgresCeiling(ctx context.Context, dbURL string, clients int, warmup, d time.Duration, progress func(string)) (*PostgresCeiling, error) {
	pool, err := pg.Open(ctx, dbURL, func(c *pgxpool.Config) { c.MaxConns, c.MinConns = int32(clients), int32(clients) })
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	defer pool.Close()
	const accounts = 10000
	for _, q := range []string{
		`DROP TABLE IF EXISTS accounts, history`,
		`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0)`,
		fmt.Sprintf(`INSERT INTO accounts (id) SELECT generate_series(1, %d)`, accounts),
		`CREATE TABLE history (id bigserial PRIMARY KEY, account int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
		`VACUUM ANALYZE accounts`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("PostgreSQL: prepare the ceiling's tables: %w", err)
		}
	}
	var measuring atomic.Bool
	var n atomic.Int64
	var lmu sync.Mutex
	var lat []time.Duration
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for rctx.Err() == nil {
				t0 := time.Now()
				err := func() error {
					tx, err := pool.Begin(rctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(context.WithoutCancel(rctx))
					delta, id := rand.IntN(10000)-5000, 1+rand.IntN(accounts)
					if _, err := tx.Exec(rctx, `UPDATE accounts SET balance = balance + $1 WHERE id = $2`, delta, id); err != nil {
						return err
					}
					if _, err := tx.Exec(rctx, `INSERT INTO history (account, delta) VALUES ($1, $2)`, id, delta); err != nil {
						return err
					}
					return tx.Commit(rctx)
				}()
				if err != nil {
					if rctx.Err() == nil {
						errs <- fmt.Errorf("PostgreSQL: %w", err)
					}
					return
				}
				if measuring.Load() {
					n.Add(1)
					lmu.Lock()
					lat = append(lat, time.Since(t0))
					lmu.Unlock()
				}
			}
		})
	}
	defer wg.Wait()
	defer stop()
	if err := sleep(ctx, warmup); err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("PostgreSQL: %d clients, one UPDATE and one INSERT per transaction, for %s", clients, d))
	measuring.Store(true)
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-errs:
		return nil, err
	case <-time.After(d):
	}
	measuring.Store(false)
	secs := time.Since(start).Seconds()
	lmu.Lock()
	l := slices.Clone(lat)
	lmu.Unlock()
	slices.Sort(l)
	return &PostgresCeiling{Method: "Go (pgx, plain TCP on loopback as the services connect)", Clients: clients,
		Transaction: postgresTx, Seconds: secs, TPS: float64(n.Load()) / secs, P50: pctMs(l, .50), P99: pctMs(l, .99)}, nil
}
