package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"microlab/observability"
	"microlab/services/contracts"
)

// ErrNacked means the broker refused a message (it did not take responsibility for it).
var ErrNacked = errors.New("broker nacked the message")

// Publisher publishes with publisher confirms: Publish returns only once the broker has
// taken responsibility for the message (written it to disk for a durable queue), so a
// caller that marks an outbox row as sent after Publish cannot lose the event.
//
// Every call that waits for the broker is bounded by the caller's context, including
// while the broker blocks the connection (a resource alarm) or does not answer at all:
// the publishes of a consumer's workers (retries, dead-letters, a saga's next step) then
// fail with their context instead of queueing behind one another.
type Publisher struct {
	conn *Conn
	log  *slog.Logger
	tel  *observability.Telemetry

	// opening is a semaphore (capacity 1): one caller at a time opens the channel, and
	// the others wait for it only as long as their context allows (a mutex cannot be
	// given up on).
	opening chan struct{}
	mu      sync.Mutex // guards ch; never held across a call to the broker
	ch      *amqp.Channel

	// Duplicate, if set, is asked after each event or command (shop.events,
	// shop.commands) is sent; true publishes it a second time, same message id and
	// all: the lab's duplicate_delivery fault, what a relay that crashed between its
	// publish and marking the row sent does for real. ctx carries the publish span. Set
	// it before the first publish. Retries, dead-letters and announcements are never
	// duplicated.
	Duplicate func(ctx context.Context) bool
}

// NewPublisher returns a publisher on conn, which should be a connection of its own: a
// connection that publishes is the one the broker blocks during an alarm (see the
// package doc). Channels are opened lazily and re-opened after a connection loss.
func NewPublisher(conn *Conn, log *slog.Logger) *Publisher {
	return &Publisher{conn: conn, log: log, tel: observability.Nop(log), opening: make(chan struct{}, 1)}
}

// Instrument makes every publish a producer span (its context written into the
// message headers) and counts it in the messaging metrics.
func (p *Publisher) Instrument(tel *observability.Telemetry) *Publisher {
	if tel != nil {
		p.tel = tel
	}
	return p
}

// Telemetry is the telemetry the publisher reports to.
func (p *Publisher) Telemetry() *observability.Telemetry { return p.tel }

func (p *Publisher) current() *amqp.Channel {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil && !p.ch.IsClosed() {
		return p.ch
	}
	return nil
}

func (p *Publisher) channel(ctx context.Context) (*amqp.Channel, error) {
	if ch := p.current(); ch != nil {
		return ch, nil
	}
	select {
	case p.opening <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("open channel: %w", ctx.Err())
	}
	defer func() { <-p.opening }()
	if ch := p.current(); ch != nil { // opened by the caller we waited for
		return ch, nil
	}
	ch, err := p.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	// Declaring and entering confirm mode wait for the broker's answers: bounded by ctx.
	// A setup that outlives ctx closes its channel when it ends.
	setup := make(chan error, 1)
	go func() {
		if err := DeclareExchanges(ch); err != nil {
			setup <- err
			return
		}
		if err := ch.Confirm(false); err != nil {
			setup <- fmt.Errorf("confirm mode: %w", err)
			return
		}
		setup <- nil
	}()
	select {
	case err := <-setup:
		if err != nil {
			closeChannel(ch)
			return nil, err
		}
	case <-ctx.Done():
		go func() {
			<-setup
			_ = ch.Close()
		}()
		return nil, fmt.Errorf("open channel: %w", ctx.Err())
	}
	// mandatory=true makes the broker return messages no queue is bound for; a returned
	// event is logged and counted instead of vanishing silently.
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for r := range returns {
			p.log.Warn("message returned unroutable", "exchange", r.Exchange, "routing_key", r.RoutingKey,
				"message_id", r.MessageId, "reply", r.ReplyText)
			p.tel.Metrics.Returned.WithLabelValues(r.Exchange, TypeLabel(r.Type)).Inc()
		}
	}()
	p.mu.Lock()
	p.ch = ch
	p.mu.Unlock()
	return ch, nil
}

// Envelope turns an envelope into an AMQP message: persistent, JSON, with the envelope's
// identity mirrored into the properties so tools that never parse bodies still see it.
func Envelope(env contracts.Envelope, headers amqp.Table) (amqp.Publishing, error) {
	body, err := json.Marshal(env)
	if err != nil {
		return amqp.Publishing{}, fmt.Errorf("encode envelope: %w", err)
	}
	h := amqp.Table{}
	for k, v := range headers {
		h[k] = v
	}
	return amqp.Publishing{
		Headers:       h,
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     env.EventID,
		CorrelationId: env.CorrelationID,
		Timestamp:     env.OccurredAt,
		Type:          env.EventType,
		AppId:         env.Source,
		Body:          body,
	}, nil
}

// PublishEnvelope publishes env on the exchange its type belongs to, keyed by its type.
func (p *Publisher) PublishEnvelope(ctx context.Context, env contracts.Envelope, headers amqp.Table) error {
	msg, err := Envelope(env, headers)
	if err != nil {
		return err
	}
	return p.Publish(ctx, contracts.Exchange(env.EventType), env.EventType, msg)
}

// Publish publishes one message (mandatory) and waits for the broker's confirm. The
// publish is a producer span in ctx's trace, and its context goes into the headers.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	pd, err := p.Send(ctx, exchange, key, msg)
	if err != nil {
		return err
	}
	return pd.Wait(ctx)
}

// Pending is a message sent and not yet confirmed (Send); Wait waits for its confirm.
type Pending struct {
	p             *Publisher
	ch            *amqp.Channel
	dcs           []*amqp.DeferredConfirmation // the message's, and its duplicate's
	span          trace.Span
	exchange, key string
	typ           string
	done          bool
}

// Send publishes one message (mandatory) without waiting for its confirm: what the
// outbox relay does with a batch — send every row, then wait for the confirms together
// — so a batch costs one round of broker fsyncs instead of one per message (a confirm
// takes 5–60 ms here, and a relay waiting for each in turn held a service to a few
// dozen messages a second). Messages sent one after the other from one goroutine reach
// the broker in that order. The producer span lasts until Wait.
func (p *Publisher) Send(ctx context.Context, exchange, key string, msg amqp.Publishing) (*Pending, error) {
	h := amqp.Table{}
	for k, v := range msg.Headers {
		h[k] = v
	}
	msg.Headers = h
	ctx, span := p.tel.StartPublish(ctx, observability.Message{Exchange: exchange, RoutingKey: key,
		MessageID: msg.MessageId, CorrelationID: msg.CorrelationId, Type: msg.Type, BodySize: len(msg.Body)}, msg.Headers)
	pd := &Pending{p: p, span: span, exchange: exchange, key: key, typ: msg.Type}
	ch, dc, err := p.send(ctx, exchange, key, msg)
	if err != nil {
		pd.finish(err)
		return nil, err
	}
	pd.ch, pd.dcs = ch, []*amqp.DeferredConfirmation{dc}
	if p.Duplicate != nil && (exchange == contracts.ExchangeEvents || exchange == contracts.ExchangeCommands) && p.Duplicate(ctx) {
		if _, dc2, err := p.send(ctx, exchange, key, msg); err == nil {
			pd.dcs = append(pd.dcs, dc2)
		} else {
			pd.finish(err)
			return nil, err
		}
	}
	return pd, nil
}

// Wait waits (bounded by ctx) until the broker has confirmed the message: nil once it
// has taken responsibility for it, ErrNacked if it refused it.
func (pd *Pending) Wait(ctx context.Context) (err error) {
	defer func() { pd.finish(err) }()
	for _, dc := range pd.dcs {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			pd.p.drop(pd.ch)
			return fmt.Errorf("publish %s: wait for confirm: %w", pd.key, err)
		}
		if !ok {
			return fmt.Errorf("publish %s: %w", pd.key, ErrNacked)
		}
	}
	return nil
}

func (pd *Pending) finish(err error) {
	if pd.done {
		return
	}
	pd.done = true
	outcome := "ok"
	if err != nil {
		outcome = "error"
		observability.Fail(pd.span, err)
	}
	pd.p.tel.Metrics.Published.WithLabelValues(pd.exchange, TypeLabel(pd.typ), outcome).Inc()
	pd.span.End()
}

// send writes one publish on the publishing channel (opened if need be) and returns its
// deferred confirm.
func (p *Publisher) send(ctx context.Context, exchange, key string, msg amqp.Publishing) (*amqp.Channel, *amqp.DeferredConfirmation, error) {
	// While the broker blocks the connection nothing sent on it is read: wait for it to
	// unblock (as long as ctx allows) rather than add to what the broker is not reading.
	if err := p.conn.awaitUnblocked(ctx); err != nil {
		return nil, nil, fmt.Errorf("publish %s: %w", key, err)
	}
	ch, err := p.channel(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("publish %s: %w", key, err)
	}
	dc, err := send(ctx, ch, exchange, key, msg)
	if err != nil {
		p.drop(ch)
		return nil, nil, fmt.Errorf("publish %s: %w", key, err)
	}
	return ch, dc, nil
}

// send writes the publish, bounded by ctx: amqp091-go's write is not, and blocks once
// the socket's buffers are full of what a blocked or stalled broker does not read.
func send(ctx context.Context, ch *amqp.Channel, exchange, key string, msg amqp.Publishing) (*amqp.DeferredConfirmation, error) {
	type sent struct {
		dc  *amqp.DeferredConfirmation
		err error
	}
	res := make(chan sent, 1)
	go func() {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
		res <- sent{dc, err}
	}()
	select {
	case r := <-res:
		return r.dc, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// drop forgets a channel that failed so the next publish opens a fresh one. It closes
// the channel in the background: closing waits for the broker's close-ok, which a
// blocked or stalled connection does not send, and nobody should wait for that (the
// goroutine ends when the broker answers or the connection closes).
func (p *Publisher) drop(ch *amqp.Channel) {
	p.mu.Lock()
	mine := p.ch == ch
	if mine {
		p.ch = nil
	}
	p.mu.Unlock()
	if mine {
		closeChannel(ch)
	}
}

// closeChannel closes ch without waiting for the broker.
func closeChannel(ch *amqp.Channel) {
	go func() { _ = ch.Close() }()
}

// TypeLabel bounds the message_type label: our messages' types are the contract's
// few dozen names; anything else (a hand-published test message, a hostile one) is
// "other", so a stray publisher cannot create a time series per message.
func TypeLabel(t string) string {
	if contracts.Known(t) {
		return t
	}
	return "other"
}
