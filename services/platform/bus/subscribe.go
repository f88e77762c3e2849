package bus

import (
	"context"
	"fmt"
	"time"
)

// Subscription is a queue of one instance's own, for news every instance must hear
// (a price change to drop from its cache, a lab setting to re-read), as opposed to a
// service's work queue (Queue), where each message is work for ONE instance of it.
//
// The queue is exclusive to the connection and auto-deleted: it lives exactly as long
// as the instance listening, so nothing piles up for an instance that is gone. It is
// not durable and its consumer auto-acks, with no retries and no DLQ: what it carries
// is a nudge whose loss the listener makes up for at every (re)subscription (see
// OnSubscribed), not work that must be done once.
type Subscription struct {
	// Queue names the queue (e.g. gateway.cache.<instance>, so the lab can show it);
	// "" lets the broker name it (amq.gen-...), for a queue nobody needs to find.
	Queue string
	// Exchange and Keys are what the queue is bound to; no Keys binds it once with the
	// empty key, which is what a fanout exchange (lab.control) wants.
	Exchange string
	Keys     []string
	// OnSubscribed, if set, is called with the queue's name each time the queue is
	// declared and bound and the consumer subscribed, before the subscription's first
	// delivery: whatever was announced while the instance was not listening is lost
	// with the old queue, so this is where it catches up (flushes its cache, re-reads).
	OnSubscribed func(queue string)
	// OnLost, if set, is told why a subscription ended before ctx did (the channel or
	// the connection was lost); Subscribe subscribes again a second later.
	OnLost func(err error)
}

// resubscribeAfter is the pause between a lost subscription and the next attempt:
// Conn.Channel already waits for a lost connection to come back, so this only keeps a
// subscription that fails at once (a refused declare) from spinning.
const resubscribeAfter = time.Second

// Subscribe declares s's queue, binds it and hands every message to h, one at a time,
// until ctx ends (then it returns nil). Whenever the channel or the connection is lost,
// it declares, binds and subscribes again on a fresh channel, the way Consume recovers
// a work queue: the exchanges are re-declared too (idempotent), so it works whoever
// started first and after a broker restart that lost everything not durable.
func Subscribe(ctx context.Context, conn *Conn, s Subscription, h func(context.Context, Delivery)) error {
	for ctx.Err() == nil {
		err := s.once(ctx, conn, h)
		if ctx.Err() != nil {
			break
		}
		if s.OnLost != nil {
			s.OnLost(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(resubscribeAfter):
		}
	}
	return nil
}

// once is one subscription, from a fresh channel until its deliveries end.
func (s Subscription) once(ctx context.Context, conn *Conn, h func(context.Context, Delivery)) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := DeclareExchanges(ch); err != nil {
		return err
	}
	// durable false, auto-delete, exclusive: the queue lives as long as this connection.
	q, err := ch.QueueDeclare(s.Queue, false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("declare %s: %w", s.Queue, err)
	}
	keys := s.Keys
	if len(keys) == 0 {
		keys = []string{""}
	}
	for _, key := range keys {
		if err := ch.QueueBind(q.Name, key, s.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s %q: %w", q.Name, s.Exchange, key, err)
		}
	}
	// auto-ack, exclusive consumer: see Subscription for why nothing here is retried.
	msgs, err := ch.ConsumeWithContext(ctx, q.Name, "", true, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", q.Name, err)
	}
	if s.OnSubscribed != nil {
		s.OnSubscribed(q.Name)
	}
	for m := range msgs {
		h(ctx, Delivery{Queue: q.Name, Exchange: m.Exchange, RoutingKey: m.RoutingKey,
			MessageID: m.MessageId, Type: m.Type, CorrelationID: m.CorrelationId, AppID: m.AppId,
			Headers: m.Headers, Body: m.Body, Attempt: 1})
	}
	return fmt.Errorf("%s: deliveries closed", q.Name)
}
