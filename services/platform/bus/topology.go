package bus

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
)

// DeclareExchanges declares the shop's exchanges. Idempotent; every publisher and
// consumer calls it on a fresh channel so the topology exists whoever starts first.
func DeclareExchanges(ch *amqp.Channel) error {
	for _, x := range []struct{ name, kind string }{
		{contracts.ExchangeEvents, amqp.ExchangeTopic},
		{contracts.ExchangeCommands, amqp.ExchangeDirect},
		{contracts.ExchangeDLX, amqp.ExchangeDirect},
		{contracts.ExchangeControl, amqp.ExchangeFanout},
	} {
		if err := ch.ExchangeDeclare(x.name, x.kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", x.name, err)
		}
	}
	return nil
}

// Queue describes a service's durable work queue: the events and commands it handles,
// and how failed messages are retried before they are dead-lettered.
type Queue struct {
	Service  string   // queue names derive from it: <service>.events, .retry.<delay>, .dlq
	Events   []string // routing keys bound on shop.events
	Commands []string // routing keys bound on shop.commands
	// Retries are the delays before each retry; after len(Retries) failed retries the
	// message goes to the DLQ. Nil means DefaultRetries. A consumer may override them per
	// delivery (ConsumeOptions.Retries: the lab's amqp.retry.delays, changed live).
	Retries []time.Duration
}

// DefaultRetries: three retries, growing delays (the fourth failure dead-letters).
var DefaultRetries = []time.Duration{250 * time.Millisecond, time.Second, 3 * time.Second}

// Name is the work queue's name.
func (q Queue) Name() string { return q.Service + ".events" }

// DLQ is the dead-letter queue's name.
func (q Queue) DLQ() string { return q.Service + ".dlq" }

// RetryQueue is the name of the queue that holds a message for delay d before its
// retry: <service>.retry.250ms, <service>.retry.3s.
//
// Retry queues are named by their delay, not by their position, because a queue's
// x-message-ttl is fixed when it is declared (re-declaring it with another TTL is a
// channel error): when the lab changes amqp.retry.delays live, a new delay simply gets a
// queue of its own, declared on demand (see retryQueues), and a message already waiting
// in the old one still comes back after the delay it was given. A per-message TTL in one
// queue would not do: RabbitMQ expires messages only at the head of a queue, so a long
// delay would hold back a short one behind it.
func (q Queue) RetryQueue(d time.Duration) string {
	return q.Service + ".retry." + delayName(d)
}

// delayName is a delay as a queue name reads it: whole seconds as "3s", else "250ms".
func delayName(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func (q Queue) retries() []time.Duration {
	if q.Retries == nil {
		return DefaultRetries
	}
	return q.Retries
}

// Declare declares the work queue, its bindings, one retry queue per delay of
// q.Retries (others are declared when first used) and the DLQ.
//
// Retry queues have no consumer: a message waits there for the queue's TTL, then the
// broker dead-letters it back to the work queue through the default exchange. One queue
// per delay (rather than per-message TTLs in one queue) because RabbitMQ only expires
// messages at the head of a queue: a long delay would hold up a short one behind it.
func (q Queue) Declare(ch *amqp.Channel) error {
	if err := DeclareExchanges(ch); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(q.DLQ(), true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare %s: %w", q.DLQ(), err)
	}
	if err := ch.QueueBind(q.DLQ(), q.DLQ(), contracts.ExchangeDLX, false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", q.DLQ(), err)
	}
	// A message the consumer rejects (Nack, requeue=false) goes to the DLQ through shop.dlx.
	args := amqp.Table{"x-dead-letter-exchange": contracts.ExchangeDLX, "x-dead-letter-routing-key": q.DLQ()}
	if _, err := ch.QueueDeclare(q.Name(), true, false, false, false, args); err != nil {
		return fmt.Errorf("declare %s: %w", q.Name(), err)
	}
	for _, key := range q.Events {
		if err := ch.QueueBind(q.Name(), key, contracts.ExchangeEvents, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s: %w", q.Name(), key, err)
		}
	}
	for _, key := range q.Commands {
		if err := ch.QueueBind(q.Name(), key, contracts.ExchangeCommands, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s: %w", q.Name(), key, err)
		}
	}
	for _, d := range q.retries() {
		if err := q.declareRetry(ch, d); err != nil {
			return err
		}
	}
	return nil
}

// declareRetry declares the retry queue of delay d: no consumer, a queue-level TTL of
// d, after which the broker dead-letters the message back to the work queue.
func (q Queue) declareRetry(ch *amqp.Channel, d time.Duration) error {
	rargs := amqp.Table{
		"x-message-ttl":             d.Milliseconds(),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": q.Name(),
	}
	if _, err := ch.QueueDeclare(q.RetryQueue(d), true, false, false, false, rargs); err != nil {
		return fmt.Errorf("declare %s: %w", q.RetryQueue(d), err)
	}
	return nil
}
