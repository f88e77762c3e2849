package observability

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// AMQPCarrier lets the propagators read and write AMQP message headers: the trace
// context travels with the message (`traceparent` header), so the consumer's span is a
// child of the publisher's span — one checkout is one trace across the broker.
type AMQPCarrier amqp.Table

// Get returns a header's string value.
func (c AMQPCarrier) Get(key string) string {
	v, _ := c[key].(string)
	return v
}

// Set sets a header.
func (c AMQPCarrier) Set(key, value string) { c[key] = value }

// Keys lists the headers.
func (c AMQPCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into headers (which must not be nil).
func (t *Telemetry) Inject(ctx context.Context, headers amqp.Table) {
	t.Propagator().Inject(ctx, AMQPCarrier(headers))
}

// Extract returns ctx with the trace context found in headers.
func (t *Telemetry) Extract(ctx context.Context, headers amqp.Table) context.Context {
	if headers == nil {
		return ctx
	}
	return t.Propagator().Extract(ctx, AMQPCarrier(headers))
}

// Message describes one AMQP message for its span.
type Message struct {
	Exchange      string
	RoutingKey    string
	Queue         string // consumer side
	MessageID     string
	CorrelationID string
	Type          string
	BodySize      int
	Attempt       int // consumer side: 1 the first time
}

func (m Message) attrs(op attribute.KeyValue, dest string) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemRabbitMQ,
		op,
		semconv.MessagingDestinationName(dest),
		semconv.MessagingRabbitMQDestinationRoutingKey(m.RoutingKey),
		semconv.MessagingMessageID(m.MessageID),
		semconv.MessagingMessageConversationID(m.CorrelationID),
		semconv.MessagingMessageBodySize(m.BodySize),
		attribute.String("messaging.message.type", m.Type),
	}
}

// StartPublish starts the producer span for publishing msg and writes its context into
// headers, so the consumer continues this trace. The span is named `publish <type>`
// (the routing key is the message type: few values, readable in a waterfall).
func (t *Telemetry) StartPublish(ctx context.Context, m Message, headers amqp.Table) (context.Context, trace.Span) {
	op := semconv.MessagingOperationTypeSend
	name := m.RoutingKey
	if name == "" { // fanout (lab.control)
		name = m.Exchange
	}
	ctx, span := t.Tracer().Start(ctx, "publish "+name,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(append(m.attrs(op, m.Exchange), semconv.MessagingOperationName("publish"))...))
	if headers != nil {
		t.Inject(ctx, headers)
	}
	return ctx, span
}

// StartProcess starts the consumer span for handling a delivery, as a child of the
// producer span whose context is in headers. The span is named `process <type>`.
func (t *Telemetry) StartProcess(ctx context.Context, m Message, headers amqp.Table) (context.Context, trace.Span) {
	ctx = t.Extract(ctx, headers)
	ctx, span := t.Tracer().Start(ctx, "process "+m.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(append(m.attrs(semconv.MessagingOperationTypeProcess, m.Queue),
			semconv.MessagingOperationName("process"),
			attribute.String("messaging.rabbitmq.source.exchange", m.Exchange),
			attribute.Int("messaging.delivery.attempt", m.Attempt))...))
	return WithCorrelation(ctx, m.CorrelationID), span
}

// StartOutboxWait records the time an event spent in the outbox table — from the
// transaction that wrote the row (created) until now, when the relay publishes it — as
// a span in the trace of the request that emitted it (its context is in headers).
// Under load or with the broker down, this span is where the lag shows.
func (t *Telemetry) StartOutboxWait(ctx context.Context, m Message, created time.Time, headers amqp.Table) (context.Context, trace.Span) {
	ctx = t.Extract(ctx, headers)
	return t.Tracer().Start(ctx, "outbox "+m.Type,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithTimestamp(created),
		trace.WithAttributes(
			attribute.String("outbox.event_type", m.Type),
			semconv.MessagingMessageID(m.MessageID),
			semconv.MessagingMessageConversationID(m.CorrelationID)))
}

// Fail marks span as failed: the error is recorded as an event and the status set.
func Fail(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// StepFailed marks the current span in ctx as a failed business step (a declined
// payment, an out-of-stock item, an undeliverable address): the handler succeeded — the
// message is acked — but the step it stands for did not, and that is what a learner
// looks for in the waterfall.
func StepFailed(ctx context.Context, step, reason string) {
	span := trace.SpanFromContext(ctx)
	span.AddEvent("step failed", trace.WithAttributes(attribute.String("saga.step", step), attribute.String("reason", reason)))
	span.SetAttributes(attribute.String("saga.step", step), attribute.String("saga.step.failure", reason))
	span.SetStatus(codes.Error, step+": "+reason)
}

// Step starts a span for a saga step or compensation in the service doing it (e.g.
// `compensate: refund payment`), so the waterfall names what the saga did, not just
// which message arrived.
func (t *Telemetry) Step(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return t.Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
}
