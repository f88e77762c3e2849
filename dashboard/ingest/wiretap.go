package ingest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// Wiretap queue bounds: when the dashboard stalls, the broker keeps at most this many
// messages (or bytes) for it and drops the oldest, so an observer can never fill the
// broker's memory or disk.
const (
	WiretapMaxLength      = 10_000
	WiretapMaxLengthBytes = 64 << 20
)

// Wiretap sees every message of the shop (the Wire Tap pattern) and hands each to sink
// as an Event, until ctx ends. Its queue is exclusive, auto-delete and server-named,
// bound with # on shop.events and with every command type on shop.commands (a direct
// exchange has no wildcard), consumed with auto-ack: an observer never holds messages
// back nor slows the shop. The queue is bounded (WiretapMaxLength, drop-head). After a
// broker restart or a lost connection it re-declares the queue and consumes again; the
// messages published meanwhile are not seen.
//
// sink is called from one goroutine, in delivery order, and must not block (hand the
// event on and return). Wiretap returns nil when ctx ends,
// an error only for a URL that can never work.
func Wiretap(ctx context.Context, amqpURL string, log *slog.Logger, sink func(Event)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := amqp.ParseURI(amqpURL); err != nil {
		return fmt.Errorf("wiretap: %w", err)
	}
	conn, err := bus.Dial(ctx, amqpURL, "dashboard-wiretap", log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("wiretap: %w", err)
	}
	defer conn.Close()
	for {
		err := tapOnce(ctx, conn, log, sink)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("wiretap stopped, resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// tapOnce declares the wiretap queue on a fresh channel and forwards its deliveries
// until the channel closes or ctx ends.
func tapOnce(ctx context.Context, conn *bus.Conn, log *slog.Logger, sink func(Event)) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := bus.DeclareExchanges(ch); err != nil {
		return err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{
		"x-max-length":       int32(WiretapMaxLength),
		"x-max-length-bytes": int32(WiretapMaxLengthBytes),
		"x-overflow":         "drop-head",
	})
	if err != nil {
		return fmt.Errorf("declare wiretap queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, "#", contracts.ExchangeEvents, false, nil); err != nil {
		return fmt.Errorf("bind wiretap to %s: %w", contracts.ExchangeEvents, err)
	}
	for _, cmd := range contracts.Commands {
		if err := ch.QueueBind(q.Name, cmd, contracts.ExchangeCommands, false, nil); err != nil {
			return fmt.Errorf("bind wiretap to %s %s: %w", contracts.ExchangeCommands, cmd, err)
		}
	}
	// Not ConsumeWithContext: its basic.cancel on ctx end races the deferred Close and
	// can leave Close waiting forever. Closing the channel cancels the consumer anyway.
	deliveries, err := ch.Consume(q.Name, "dashboard-wiretap", true, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume wiretap: %w", err)
	}
	log.Info("wiretap listening", "queue", q.Name)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case d, ok := <-deliveries:
			if !ok {
				select {
				case e := <-closed:
					if e != nil {
						return e
					}
				default:
				}
				return errors.New("wiretap deliveries closed")
			}
			sink(EventFromDelivery(d))
		}
	}
}

// EventFromDelivery turns a delivery into an Event. A body that is not a valid envelope
// still becomes one: its type from the AMQP type property (else the routing key), its
// payload the raw body when it is JSON, else the body as a JSON string.
func EventFromDelivery(d amqp.Delivery) Event {
	e := Event{
		ID:            d.MessageId,
		Type:          d.Type,
		Source:        d.AppId,
		CorrelationID: d.CorrelationId,
		Exchange:      d.Exchange,
		RoutingKey:    d.RoutingKey,
		At:            d.Timestamp,
		TraceID:       traceIDFromHeaders(d.Headers),
		Headers:       stringHeaders(d.Headers),
	}
	if env, err := contracts.Decode(d.Body); err == nil {
		e.ID, e.Type, e.Payload = env.EventID, env.EventType, env.Data
		if env.Source != "" {
			e.Source = env.Source
		}
		if env.CorrelationID != "" {
			e.CorrelationID = env.CorrelationID
		}
		if !env.OccurredAt.IsZero() {
			e.At = env.OccurredAt
		}
	} else {
		if json.Valid(d.Body) {
			e.Payload = json.RawMessage(append([]byte(nil), d.Body...))
		} else {
			raw, _ := json.Marshal(string(d.Body)) // invalid UTF-8 becomes U+FFFD
			e.Payload = raw
		}
	}
	if e.Type == "" {
		e.Type = d.RoutingKey
	}
	if e.ID == "" {
		e.ID = uuid.NewString() // the event stream and Get need an id
	}
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	return e
}

// traceIDFromHeaders reads the trace id out of a W3C traceparent header
// (version-traceid-parentid-flags); "" when absent or invalid.
func traceIDFromHeaders(h amqp.Table) string {
	var tp string
	switch v := h[contracts.HeaderTraceparent].(type) {
	case string:
		tp = v
	case []byte:
		tp = string(v)
	}
	parts := strings.Split(strings.TrimSpace(tp), "-")
	if len(parts) < 4 || len(parts[0]) != 2 || parts[0] == "ff" || len(parts[1]) != 32 || len(parts[2]) != 16 {
		return ""
	}
	id := strings.ToLower(parts[1])
	b, err := hex.DecodeString(id)
	if err != nil || idHex(b, 16) == "" { // all zeros is invalid
		return ""
	}
	return id
}

func stringHeaders(h amqp.Table) map[string]string {
	var out map[string]string
	for k, v := range h {
		s, ok := v.(string)
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(h))
		}
		out[k] = s
	}
	return out
}
