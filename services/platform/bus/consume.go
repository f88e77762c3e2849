package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/observability"
	"microlab/services/contracts"
)

// Delivery is one message handed to a handler.
type Delivery struct {
	Queue         string
	Exchange      string
	RoutingKey    string
	MessageID     string
	Type          string
	CorrelationID string
	AppID         string
	Headers       amqp.Table
	Body          []byte
	// Attempt counts deliveries through the retry queues: 1 the first time.
	Attempt int
}

// Envelope decodes the body (errors wrap contracts.ErrMalformed).
func (d Delivery) Envelope() (contracts.Envelope, error) { return contracts.Decode(d.Body) }

// Handler handles one message. Returning nil acks it; an error sends it to the next retry
// queue, or to the DLQ when retries are exhausted (see Classify for which errors are
// retried for how long). A handler never sleeps to retry.
type Handler func(ctx context.Context, d Delivery) error

// ErrPermanent marks a failure no retry can cure (the message is wrong, not the moment):
// the message goes to the DLQ at once. contracts.ErrMalformed counts as permanent too.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err as a permanent failure.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Failure is how a handler's error is treated.
type Failure int

const (
	// FailPoison: retried through the retry queues, then dead-lettered (a bug, a panic, a
	// state the handler did not expect: a few retries may see it resolve, forever won't).
	FailPoison Failure = iota
	// FailPermanent: dead-lettered at once.
	FailPermanent
	// FailTransient: a dependency is unavailable (database or broker unreachable, a timeout,
	// a deadlock). Retried through the retry queues for as long as it lasts, the last
	// delay repeating, never dead-lettered: a database restart must not turn every
	// message in flight into a DLQ entry someone has to replay by hand.
	FailTransient
)

// Classify says how err is treated; transient reports the dependency errors of the
// service's own stores (pg.IsTransient), on top of the broker's and timeouts.
func Classify(err error, transient func(error) bool) Failure {
	switch {
	case errors.Is(err, ErrPermanent), errors.Is(err, contracts.ErrMalformed):
		return FailPermanent
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, amqp.ErrClosed):
		return FailTransient
	case transient != nil && transient(err):
		return FailTransient
	}
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Recover {
		return FailTransient
	}
	return FailPoison
}

// Middleware wraps a handler to do one thing (recover, log, inbox, fault, ...).
type Middleware func(Handler) Handler

// Chain applies middleware so that the first one listed is the outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// ConsumeOptions tune a consumer.
type ConsumeOptions struct {
	// Prefetch is the QoS: how many unacked messages the broker may push at once.
	Prefetch int
	// Workers handle deliveries concurrently (competing consumers inside one process).
	Workers int
	// HandlerTimeout bounds one handler call.
	HandlerTimeout time.Duration
	// OnSubscribed, if set, is called each time the queue is declared and the consumer
	// subscribed (at start and after every recovery). Readiness waits for it: a service
	// that reports ready before its queue exists would let events published meanwhile
	// go unrouted.
	OnSubscribed func()
	// Telemetry gets a consumer span per delivery (a child of the producer span found
	// in the headers) and the handler metrics. nil: none.
	Telemetry *observability.Telemetry
	// Types are the message types the queue's handlers know: their metric series are
	// created at zero, and any other type is counted as "other".
	Types []string
	// Transient reports the errors of the service's own dependencies that a retry cures
	// once they are back (pg.IsTransient); see Classify. nil: only the broker's and
	// timeouts.
	Transient func(error) bool
	// Paused, if set, is asked before each delivery is taken and every PauseCheck: while
	// it reports true the consumer takes nothing (the lab's down fault). Intake stops by
	// closing the channel once in-flight handlers have finished: the broker puts the
	// prefetched, unhandled messages back in the queue, where they wait (or go to another
	// instance) until the consumer subscribes again when Paused turns false.
	Paused func() bool
	// PauseCheck is how often Paused is asked while nothing arrives (default 250 ms).
	PauseCheck time.Duration
	// Retries, if set, gives the retry delays for each failed delivery (the lab's
	// amqp.retry.delays, changed live); nil or empty: the queue's (Queue.Retries).
	Retries func() []time.Duration
}

// errPaused ends a subscription while Paused reports true.
var errPaused = errors.New("consumption paused")

func (o ConsumeOptions) paused() bool { return o.Paused != nil && o.Paused() }

// delays are the retry delays in force for q.
func (o ConsumeOptions) delays(q Queue) []time.Duration {
	if o.Retries != nil {
		if d := o.Retries(); len(d) > 0 {
			return d
		}
	}
	return q.retries()
}

func (o ConsumeOptions) withDefaults() ConsumeOptions {
	if o.Prefetch <= 0 {
		o.Prefetch = 20
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.HandlerTimeout <= 0 {
		o.HandlerTimeout = 30 * time.Second
	}
	if o.Telemetry == nil {
		o.Telemetry = observability.Nop(slog.New(slog.DiscardHandler))
	}
	if o.PauseCheck <= 0 {
		o.PauseCheck = 250 * time.Millisecond
	}
	return o
}

// Consume declares q and handles its messages until ctx ends, re-subscribing whenever
// the channel or connection is lost. On ctx end it stops intake, lets in-flight handlers
// finish and ack, and returns. Acks are manual: a message is acked only after its handler
// returned (at-least-once), so a crash mid-handler means redelivery, never loss.
func Consume(ctx context.Context, conn *Conn, pub *Publisher, q Queue, opts ConsumeOptions, h Handler, log *slog.Logger) error {
	opts = opts.withDefaults()
	opts.Telemetry.Metrics.InitQueue(q.Name(), opts.Types)
	log = log.With("queue", q.Name())
	for {
		err := consumeOnce(ctx, conn, pub, q, opts, h, log)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errPaused) {
			continue // subscribe again: the next subscription waits while paused
		}
		log.Warn("consumer stopped, resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func consumeOnce(ctx context.Context, conn *Conn, pub *Publisher, q Queue, opts ConsumeOptions, h Handler, log *slog.Logger) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := q.Declare(ch); err != nil {
		return err
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	retryQs := &retryQueues{q: q, ch: ch, declared: map[time.Duration]bool{}}
	if err := retryQs.ensure(opts.delays(q)); err != nil {
		return err
	}
	// Paused: the queue exists (and collects messages) but nobody takes from it.
	if opts.paused() {
		log.Warn("consumption paused: messages wait in the queue")
		t := time.NewTicker(opts.PauseCheck)
		for opts.paused() {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case e := <-closed:
				t.Stop()
				return fmt.Errorf("channel closed: %v", e)
			case <-t.C:
			}
		}
		t.Stop()
		log.Warn("consumption resumed")
	}
	if err := ch.Qos(opts.Prefetch, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	tag := fmt.Sprintf("%s-%p", q.Service, ch)
	deliveries, err := ch.ConsumeWithContext(context.WithoutCancel(ctx), q.Name(), tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", q.Name(), err)
	}

	work := make(chan amqp.Delivery)
	// A worker that finds the consumer paused when a delivery reaches it does not handle
	// it and asks for the subscription to end: left unacked, the delivery goes back to
	// the queue when the channel closes (and the next subscription waits while paused).
	resubscribe := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				if opts.paused() {
					select {
					case resubscribe <- struct{}{}:
					default:
					}
					continue
				}
				handle(ctx, pub, q, retryQs, opts, h, log, d)
			}
		}()
	}
	defer func() {
		close(work)
		wg.Wait() // in-flight handlers finish and ack before the channel closes
	}()
	log.Info("consuming", "prefetch", opts.Prefetch, "workers", opts.Workers)
	if opts.OnSubscribed != nil {
		opts.OnSubscribed()
	}
	var check <-chan time.Time // nil without Paused: never fires
	if opts.Paused != nil {
		t := time.NewTicker(opts.PauseCheck)
		defer t.Stop()
		check = t.C
	}
	// Pausing: closing the channel (deferred, after in-flight handlers acked) returns
	// what was prefetched and not handled to the queue: nothing is nacked, nothing lost.
	pause := func() error {
		_ = ch.Cancel(tag, false)
		return errPaused
	}
	for {
		select {
		case <-resubscribe:
			return pause()
		case <-check:
			if opts.paused() {
				return pause()
			}
		case <-ctx.Done():
			// Stop intake; prefetched but unhandled messages return to the queue when
			// the channel closes, so another instance (or our next start) gets them.
			_ = ch.Cancel(tag, false)
			return nil
		case e := <-closed:
			return fmt.Errorf("channel closed: %v", e)
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("delivery channel closed")
			}
			if opts.paused() {
				return pause() // d was not handed to a worker: it goes back too
			}
		handoff:
			for {
				select {
				case work <- d:
					break handoff
				case <-resubscribe:
					return pause()
				case <-check: // every worker busy: a pause must not wait for one
					if opts.paused() {
						return pause()
					}
				case <-ctx.Done():
					_ = d.Nack(false, true)
					break handoff
				}
			}
		}
	}
}

func handle(ctx context.Context, pub *Publisher, q Queue, retryQs *retryQueues, opts ConsumeOptions, h Handler, log *slog.Logger, d amqp.Delivery) {
	del := Delivery{
		Queue: q.Name(), Exchange: d.Exchange, RoutingKey: d.RoutingKey, MessageID: d.MessageId,
		Type: d.Type, CorrelationID: d.CorrelationId, AppID: d.AppId, Headers: d.Headers,
		Body: d.Body, Attempt: Attempt(d.Headers),
	}
	tel, m, typ := opts.Telemetry, opts.Telemetry.Metrics, opts.typeLabel(d.Type)
	// The consumer span covers the handler and what happens to the message after it
	// (ack, retry, dead-letter), so a retry's publish is part of this trace too.
	ctx, span := tel.StartProcess(ctx, observability.Message{Exchange: d.Exchange, RoutingKey: d.RoutingKey,
		Queue: q.Name(), MessageID: d.MessageId, CorrelationID: d.CorrelationId, Type: d.Type,
		BodySize: len(d.Body), Attempt: del.Attempt}, d.Headers)
	defer span.End()
	inFlight := m.HandlerInFlight.WithLabelValues(q.Name())
	inFlight.Inc()
	// The handler runs to completion even during shutdown: cutting it off half-way would
	// only turn a finished effect into a redelivery.
	start := time.Now()
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.HandlerTimeout)
	err := h(hctx, del)
	cancel()
	inFlight.Dec()
	m.HandleDuration.WithLabelValues(q.Name(), typ).Observe(time.Since(start).Seconds())
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err == nil {
		m.Handled.WithLabelValues(q.Name(), typ, "ok").Inc()
		if aerr := d.Ack(false); aerr != nil {
			log.WarnContext(ctx, "ack failed; the message will be redelivered", "message_id", d.MessageId, "err", aerr)
		}
		return
	}
	m.Handled.WithLabelValues(q.Name(), typ, "error").Inc()
	observability.Fail(span, err)
	class := Classify(err, opts.Transient)
	delays := opts.delays(q)
	target, key, reason := nextHop(q, delays, del.Attempt, class)
	msg := republish(d, del.Attempt+1, err)
	perr := error(nil)
	if reason == "retry" {
		perr = retryQs.ensure(delays) // a delay the lab set since we subscribed
	}
	if perr == nil {
		perr = pub.Publish(actx, target, key, msg)
	}
	if perr != nil {
		// Could not park it: put it back on the work queue rather than lose it.
		log.WarnContext(ctx, "could not move failed message, requeueing", "message_id", d.MessageId, "err", perr)
		_ = d.Nack(false, true)
		return
	}
	if reason == "retry" {
		m.Retries.WithLabelValues(q.Name(), typ).Inc()
	} else {
		m.DeadLettered.WithLabelValues(q.Name(), typ).Inc()
	}
	log.WarnContext(ctx, "handler failed", "message_id", d.MessageId, "type", d.Type, "attempt", del.Attempt,
		"failure", class.String(), "next", reason, "err", err)
	if aerr := d.Ack(false); aerr != nil {
		log.WarnContext(ctx, "ack failed after moving message; it may be handled twice", "message_id", d.MessageId, "err", aerr)
	}
}

// nextHop is where a message that failed its attempt-th delivery goes: the next retry
// queue, the DLQ once a poison message has used its retries (a permanent failure at
// once), and for a transient failure the next retry queue or the last one again, forever.
func nextHop(q Queue, delays []time.Duration, attempt int, class Failure) (exchange, key, reason string) {
	retries := len(delays)
	switch {
	case class == FailPermanent, class == FailPoison && attempt > retries, retries == 0:
		return contracts.ExchangeDLX, q.DLQ(), "dead-letter"
	case class == FailTransient:
		return "", q.RetryQueue(delays[min(attempt, retries)-1]), "retry"
	}
	return "", q.RetryQueue(delays[attempt-1]), "retry"
}

// retryQueues declares, once per subscription, the retry queue of each delay in use:
// the delays can change while the consumer runs (amqp.retry.delays), and a message must
// never be parked in a queue that does not exist (it would be returned unroutable).
type retryQueues struct {
	q        Queue
	ch       *amqp.Channel // the consumer's; safe for concurrent use by the workers
	mu       sync.Mutex
	declared map[time.Duration]bool
}

func (r *retryQueues) ensure(delays []time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range delays {
		if r.declared[d] {
			continue
		}
		if err := r.q.declareRetry(r.ch, d); err != nil {
			return err
		}
		r.declared[d] = true
	}
	return nil
}

func (f Failure) String() string {
	switch f {
	case FailPermanent:
		return "permanent"
	case FailTransient:
		return "transient"
	}
	return "poison"
}

// typeLabel is the message_type label: a type the queue handles, or "other".
func (o ConsumeOptions) typeLabel(t string) string {
	for _, k := range o.Types {
		if k == t {
			return t
		}
	}
	return "other"
}

func republish(d amqp.Delivery, attempt int, cause error) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		h[k] = v
	}
	h[contracts.HeaderAttempt] = int32(attempt)
	h["x-last-error"] = truncate(cause.Error(), 500)
	h["x-original-exchange"] = d.Exchange
	h["x-original-routing-key"] = d.RoutingKey
	return amqp.Publishing{
		Headers: h, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, CorrelationId: d.CorrelationId, Timestamp: d.Timestamp,
		Type: d.Type, AppId: d.AppId, Body: d.Body,
	}
}

// Attempt reads x-attempt (1 when absent or unreadable).
func Attempt(h amqp.Table) int {
	switch v := h[contracts.HeaderAttempt].(type) {
	case int32:
		return max(int(v), 1)
	case int64:
		return max(int(v), 1)
	case int:
		return max(v, 1)
	}
	return 1
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
