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
	"go.opentelemetry.io/otel/trace"

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

	// PollInterval is the fallback should a notification ever be missed. The listener
	// wakes the relay each time it (re)connects, so rows committed while it was away
	// (a PostgreSQL restart) go out at once rather than at the next poll; the poll is a
	// safety net, and a rare one: every poll is a transaction, and nine relays polling
	// each second were half of the idle lab's database traffic.
	PollInterval time.Duration
	// BatchSize is how many rows one batch claims at most.
	BatchSize int
	// BatchBudget is how long one batch may go on publishing. Once it is spent the relay
	// publishes no further row of the batch, marks the confirmed ones sent, commits and
	// claims the rest in the next batch. So a batch holds its row locks for about this
	// long whatever the broker's confirm latency, and a slow broker makes batches
	// smaller, never futile (see relayBatch). Zero still publishes one row a batch.
	BatchBudget time.Duration
}

const (
	// publishTimeout bounds one publish: sending a row and waiting for its confirm.
	publishTimeout = 10 * time.Second
	// dbTimeout bounds each of the relay's statements (claim, mark sent, commit).
	dbTimeout = 10 * time.Second
	// finalPass is how long Run goes on relaying once its context ends.
	finalPass = 3 * time.Second
)

// New returns an outbox. enabled is read on every Emit (the lab toggles it live).
func New(pool *pgxpool.Pool, pub *bus.Publisher, enabled func() bool, log *slog.Logger) *Outbox {
	return &Outbox{pool: pool, pub: pub, enabled: enabled, log: log,
		PollInterval: 10 * time.Second, BatchSize: 100, BatchBudget: 5 * time.Second}
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
	// Queued (pg.Later): nothing in the transaction reads the outbox back, so the row
	// goes to PostgreSQL with the transaction's other queued writes, in one round trip
	// just before COMMIT, and commits (or not) with them all the same.
	//
	// RETURNING pg_notify wakes the relay in the same statement: the notification is
	// delivered to listeners only when (and if) the transaction commits, and PostgreSQL
	// delivers identical notifications of one transaction once, however many rows it
	// wrote.
	if err := pg.Later(ctx, o.pool, `INSERT INTO outbox (event_id, event_type, exchange, routing_key, envelope, headers)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING pg_notify($7, '')`,
		env.EventID, env.EventType, contracts.Exchange(env.EventType), env.EventType, body, hjson, Channel); err != nil {
		return fmt.Errorf("outbox: insert %s: %w", env.EventType, err)
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
		// The batch's work is not cancelled by shutdown (WithoutCancel): a publish under
		// way finishes, and what was confirmed is marked sent. Shutdown only stops it
		// from publishing further rows (ctx.Done()); the final pass below takes over.
		more, err := o.relayBatch(context.WithoutCancel(ctx), ctx.Done(), time.Now().Add(o.BatchBudget))
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
			// Bounded as a whole, publishes included: the process is on its way out. A
			// publish cut short is not marked sent; the next process publishes it again.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalPass)
			_, _ = o.relayBatch(fctx, nil, time.Now().Add(finalPass))
			cancel()
			return nil
		}
		if more {
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
			// Listening from now on; what was committed before is found by one pass.
			select {
			case wake <- struct{}{}:
			default:
			}
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
// instances share the work without publishing the same row twice), sends them in order,
// waits for their confirms together, and marks the confirmed ones sent in the same
// transaction. It reports whether more rows may be waiting.
//
// Sending stops at the first failure (a later row must never go out before an earlier
// one), when stop is closed, or once the budget (until) is spent. The budget is checked
// before each send, never before the batch's first row, so every batch makes progress
// however slow the broker: a slow broker makes batches smaller instead of futile. Only
// rows confirmed in order are marked sent. ctx bounds the sends and the confirms (all
// of them together get publishTimeout); a batch lasts at most until + 2 × publishTimeout
// + the time to commit.
//
// Marking sent and committing use a fresh context of their own: a confirmed publish is
// work done, and it must be recorded even if ctx's deadline passed while publishing.
// (Marking with the publishing context was a livelock: with slow confirms the deadline
// expired mid-batch, the UPDATE failed, the transaction rolled back, and the same rows
// were published again on every pass, so the backlog never shrank.)
func (o *Outbox) relayBatch(ctx context.Context, stop <-chan struct{}, until time.Time) (more bool, err error) {
	// finish bounds the statements that record the outcome, however long publishing took.
	finish := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), dbTimeout)
	}
	cctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	// A pg.Unit: BEGIN goes with the claim, the marks with COMMIT, so a pass waits for
	// the database twice (an empty one too) where it waited four times.
	tx := pg.Begin(o.pool)
	defer func() {
		rctx, cancel := finish()
		defer cancel()
		tx.Rollback(rctx) // a no-op once committed
	}()
	rows, err := tx.Query(cctx, `SELECT id, created_at, exchange, routing_key, envelope, headers FROM outbox
		WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, o.BatchSize)
	if err != nil {
		return false, fmt.Errorf("outbox relay: claim: %w", err)
	}
	var batch []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.created, &r.exchange, &r.key, &r.envelope, &r.headers); err != nil {
			rows.Close()
			return false, fmt.Errorf("outbox relay: scan: %w", err)
		}
		batch = append(batch, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("outbox relay: claim: %w", err)
	}
	more = len(batch) == o.BatchSize
	// Send every row in order, then wait for the confirms together: the broker confirms
	// a burst with one round of fsyncs, where waiting for each row before sending the
	// next cost a confirm's 5–60 ms per message. Only rows confirmed in order, up to the
	// first that was not, are marked sent; the rest stay unsent and go out again (a
	// duplicate of any that was in fact confirmed is what consumers' inboxes are for).
	type inFlight struct {
		row
		pd   *bus.Pending
		span trace.Span
	}
	var sending []inFlight
	var sent []int64
	var failed *row
	var pubErr error
sending:
	for i := range batch {
		select {
		case <-stop: // shutting down: Run's final pass takes over
			more = true
			break sending
		default:
		}
		if i > 0 && !time.Now().Before(until) {
			// Slow sends: keep what was sent and let the next batch go on.
			o.log.InfoContext(ctx, "outbox relay: batch budget spent, committing what was confirmed",
				"sent", len(sending), "claimed", len(batch))
			more = true
			break
		}
		pd, span, err := o.send(ctx, batch[i])
		if err != nil {
			failed, pubErr = &batch[i], err
			break // keep order: do not publish later rows before this one
		}
		sending = append(sending, inFlight{batch[i], pd, span})
	}
	// One bound for all the confirms: a stalled broker costs publishTimeout, not that
	// times the batch.
	wctx, cancel := context.WithTimeout(ctx, publishTimeout)
	inOrder := true // every row so far confirmed
	for i := range sending {
		m := &sending[i]
		err := m.pd.Wait(wctx)
		switch {
		case err != nil:
			observability.Fail(m.span, err)
			if inOrder {
				failed, pubErr = &m.row, err
			}
			inOrder = false
		case inOrder:
			sent = append(sent, m.id)
			o.pub.Telemetry().Metrics.OutboxPublishLag.Observe(time.Since(m.created).Seconds())
		}
		m.span.End()
	}
	cancel()
	fctx, cancel := finish()
	defer cancel()
	if failed != nil {
		tx.Later(`UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1`, failed.id, pubErr.Error())
	}
	if len(sent) > 0 {
		tx.Later(`UPDATE outbox SET sent_at = now() WHERE id = ANY($1)`, sent)
	}
	if err := tx.Commit(fctx); err != nil {
		// Published but not marked: they will be published again. Consumers dedupe.
		return false, fmt.Errorf("outbox relay: mark sent and commit: %w", err)
	}
	return more, pubErr
}

// send decodes a row and sends it (Publisher.Send): the row's outbox span, from its
// creation to its confirm, ends once the relay has waited for the confirm.
func (o *Outbox) send(ctx context.Context, r row) (*bus.Pending, trace.Span, error) {
	var env contracts.Envelope
	if err := json.Unmarshal(r.envelope, &env); err != nil {
		return nil, nil, fmt.Errorf("decode outbox row %d: %w", r.id, err)
	}
	headers := amqp.Table{}
	if err := json.Unmarshal(r.headers, &headers); err != nil {
		return nil, nil, fmt.Errorf("decode outbox row %d headers: %w", r.id, err)
	}
	msg, err := bus.Envelope(env, headers)
	if err != nil {
		return nil, nil, err
	}
	ctx, span := o.pub.Telemetry().StartOutboxWait(ctx, observability.Message{Type: env.EventType, MessageID: env.EventID,
		CorrelationID: env.CorrelationID}, r.created, headers)
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	pd, err := o.pub.Send(pctx, r.exchange, r.key, msg)
	if err != nil {
		observability.Fail(span, err)
		span.End()
		return nil, nil, err
	}
	return pd, span, nil
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
