// Package outbox implements the transactional outbox and its relay.
//
// Why: a service that updates its database and then publishes an event has two writes
// that can't be atomic ("dual write"). Crash between them and the event is lost (or, the
// other way round, announced for a change that was rolled back). With the outbox the
// event is a row written in the SAME transaction as the change; a relay publishes rows
// with publisher confirms and marks them sent. A crash can now only cause a re-publish
// (at-least-once), which the consumers' inbox absorbs.
//
// The lab can switch the outbox off: events are then published right after commit, and a
// broker outage or crash at the wrong moment visibly loses them.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/pg"
)

// Channel is the LISTEN/NOTIFY channel a commit with new outbox rows notifies.
const Channel = "outbox"

// Outbox emits events from inside a transaction and relays them to the broker.
type Outbox struct {
	pool    *pgxpool.Pool
	pub     *bus.Publisher
	enabled func() bool
	log     *slog.Logger

	// PollInterval is the fallback when a notification is missed (e.g. the LISTEN
	// connection was being re-established at the time).
	PollInterval time.Duration
	BatchSize    int
}

// New returns an outbox. enabled is read on every Emit (the lab toggles it live).
func New(pool *pgxpool.Pool, pub *bus.Publisher, enabled func() bool, log *slog.Logger) *Outbox {
	return &Outbox{pool: pool, pub: pub, enabled: enabled, log: log, PollInterval: time.Second, BatchSize: 100}
}

// Emit records env for publication. Inside a pg.InTx transaction the row commits (or
// not) with the caller's change. With the outbox switched off it publishes after commit.
func (o *Outbox) Emit(ctx context.Context, env contracts.Envelope) error {
	// The trace context of the change that emits goes with the event (in the row's
	// headers), so the relay — later, in another goroutine — publishes in the same trace.
	headers := amqp.Table{}
	o.pub.Telemetry().Inject(ctx, headers)
	if !o.enabled() {
		// The dual write, on purpose: nothing guarantees this publish happens.
		pg.AfterCommit(ctx, func(ctx context.Context) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := o.pub.PublishEnvelope(pctx, env, headers); err != nil {
				o.log.ErrorContext(ctx, "event LOST: published after commit without an outbox, and the publish failed",
					"event_id", env.EventID, "type", env.EventType, "correlation_id", env.CorrelationID, "err", err)
			}
		})
		return nil
	}
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("outbox: encode %s: %w", env.EventType, err)
	}
	hjson, err := json.Marshal(headers)
	if err != nil {
		return fmt.Errorf("outbox: encode headers: %w", err)
	}
	q := pg.Q(ctx, o.pool)
	if _, err := q.Exec(ctx, `INSERT INTO outbox (event_id, event_type, exchange, routing_key, envelope, headers)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		env.EventID, env.EventType, contracts.Exchange(env.EventType), env.EventType, body, hjson); err != nil {
		return fmt.Errorf("outbox: insert %s: %w", env.EventType, err)
	}
	// Delivered to listeners only when (and if) the transaction commits.
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, '')`, Channel); err != nil {
		return fmt.Errorf("outbox: notify: %w", err)
	}
	return nil
}

// Run relays rows until ctx ends, then makes one last pass so a clean shutdown leaves
// nothing behind that it could have sent.
func (o *Outbox) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	go o.listen(ctx, wake)
	backoff := 100 * time.Millisecond
	for {
		// A batch, once claimed, runs to its end even if shutdown begins meanwhile:
		// cancelling it between a confirmed publish and the commit that marks the row sent
		// would publish that event again from the next process.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		n, err := o.relayBatch(bctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			o.log.WarnContext(ctx, "outbox relay: publish failed, will retry", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		case err == nil:
			backoff = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			_, _ = o.relayBatch(fctx)
			cancel()
			return nil
		}
		if n == o.BatchSize {
			continue // more waiting
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-time.After(o.PollInterval):
		}
	}
}

// listen turns NOTIFYs into wake-ups on a dedicated connection, re-acquiring it on error.
func (o *Outbox) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := func() error {
			conn, err := o.pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
				return err
			}
			defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "UNLISTEN "+Channel) }()
			for {
				if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
					return err
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		o.log.Debug("outbox listener reconnecting (polling meanwhile)", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

type row struct {
	id       int64
	created  time.Time
	exchange string
	key      string
	envelope []byte
	headers  []byte
}

// relayBatch claims up to BatchSize unsent rows (FOR UPDATE SKIP LOCKED: several relay
// instances share the work without publishing the same row twice), publishes them in
// order with confirms, and marks the published ones sent in the same transaction.
func (o *Outbox) relayBatch(ctx context.Context) (int, error) {
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbox relay: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, `SELECT id, created_at, exchange, routing_key, envelope, headers FROM outbox
		WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, o.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("outbox relay: claim: %w", err)
	}
	var batch []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.created, &r.exchange, &r.key, &r.envelope, &r.headers); err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox relay: scan: %w", err)
		}
		batch = append(batch, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("outbox relay: claim: %w", err)
	}
	var sent []int64
	var pubErr error
	for _, r := range batch {
		if pubErr = o.publish(ctx, r); pubErr != nil {
			_, _ = tx.Exec(ctx, `UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1`, r.id, pubErr.Error())
			break // keep order: do not publish later rows before this one
		}
		sent = append(sent, r.id)
	}
	if len(sent) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE outbox SET sent_at = now() WHERE id = ANY($1)`, sent); err != nil {
			return 0, fmt.Errorf("outbox relay: mark sent: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// Published but not marked: they will be published again. Consumers dedupe.
		return 0, fmt.Errorf("outbox relay: commit: %w", err)
	}
	return len(batch), pubErr
}

func (o *Outbox) publish(ctx context.Context, r row) error {
	var env contracts.Envelope
	if err := json.Unmarshal(r.envelope, &env); err != nil {
		return fmt.Errorf("decode outbox row %d: %w", r.id, err)
	}
	headers := amqp.Table{}
	if err := json.Unmarshal(r.headers, &headers); err != nil {
		return fmt.Errorf("decode outbox row %d headers: %w", r.id, err)
	}
	msg, err := bus.Envelope(env, headers)
	if err != nil {
		return err
	}
	tel := o.pub.Telemetry()
	ctx, span := tel.StartOutboxWait(ctx, observability.Message{Type: env.EventType, MessageID: env.EventID,
		CorrelationID: env.CorrelationID}, r.created, headers)
	defer span.End()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := o.pub.Publish(pctx, r.exchange, r.key, msg); err != nil {
		observability.Fail(span, err)
		return err
	}
	tel.Metrics.OutboxPublishLag.Observe(time.Since(r.created).Seconds())
	return nil
}

// Backlog returns how many rows wait to be published and the age of the oldest.
func (o *Outbox) Backlog(ctx context.Context) (int64, time.Duration, error) {
	var n int64
	var oldest *time.Time
	err := o.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL`).Scan(&n, &oldest)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox backlog: %w", err)
	}
	if oldest == nil {
		return n, 0, nil
	}
	return n, time.Since(*oldest), nil
}

// Prune deletes rows sent more than keep ago (run periodically; the table is a queue,
// not an archive).
func (o *Outbox) Prune(ctx context.Context, keep time.Duration) error {
	_, err := o.pool.Exec(ctx, `DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)`, keep.Seconds())
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("outbox prune: %w", err)
	}
	return nil
}
