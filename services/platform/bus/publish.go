package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/observability"
	"microlab/services/contracts"
)

// ErrNacked means the broker refused a message (it did not take responsibility for it).
var ErrNacked = errors.New("broker nacked the message")

// Publisher publishes with publisher confirms: Publish returns only once the broker has
// taken responsibility for the message (written it to disk for a durable queue), so a
// caller that marks an outbox row as sent after Publish cannot lose the event.
type Publisher struct {
	conn *Conn
	log  *slog.Logger
	tel  *observability.Telemetry

	mu sync.Mutex
	ch *amqp.Channel
}

// NewPublisher returns a publisher on conn. Channels are opened lazily and re-opened
// after a connection loss.
func NewPublisher(conn *Conn, log *slog.Logger) *Publisher {
	return &Publisher{conn: conn, log: log, tel: observability.Nop(log)}
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

func (p *Publisher) channel(ctx context.Context) (*amqp.Channel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil && !p.ch.IsClosed() {
		return p.ch, nil
	}
	ch, err := p.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := DeclareExchanges(ch); err != nil {
		_ = ch.Close()
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	// mandatory=true makes the broker return messages no queue is bound for; a returned
	// event is logged (and, later, counted) instead of vanishing silently.
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for r := range returns {
			p.log.Warn("message returned unroutable", "exchange", r.Exchange, "routing_key", r.RoutingKey,
				"message_id", r.MessageId, "reply", r.ReplyText)
			p.tel.Metrics.Returned.WithLabelValues(r.Exchange, TypeLabel(r.Type)).Inc()
		}
	}()
	p.ch = ch
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
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) (err error) {
	h := amqp.Table{}
	for k, v := range msg.Headers {
		h[k] = v
	}
	msg.Headers = h
	ctx, span := p.tel.StartPublish(ctx, observability.Message{Exchange: exchange, RoutingKey: key,
		MessageID: msg.MessageId, CorrelationID: msg.CorrelationId, Type: msg.Type, BodySize: len(msg.Body)}, msg.Headers)
	defer func() {
		outcome := "ok"
		if err != nil {
			outcome = "error"
			observability.Fail(span, err)
		}
		p.tel.Metrics.Published.WithLabelValues(exchange, TypeLabel(msg.Type), outcome).Inc()
		span.End()
	}()
	return p.publish(ctx, exchange, key, msg)
}

func (p *Publisher) publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	ch, err := p.channel(ctx)
	if err != nil {
		return fmt.Errorf("publish %s: %w", key, err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
	if err != nil {
		p.drop(ch)
		return fmt.Errorf("publish %s: %w", key, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		p.drop(ch)
		return fmt.Errorf("publish %s: wait for confirm: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("publish %s: %w", key, ErrNacked)
	}
	return nil
}

// drop forgets a channel that failed so the next publish opens a fresh one.
func (p *Publisher) drop(ch *amqp.Channel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == ch {
		_ = ch.Close()
		p.ch = nil
	}
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
