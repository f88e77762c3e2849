package testenv_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/testenv"
)

// The private node lists its queues with their exact depth.
func TestPrivateBrokerListsQueues(t *testing.T) {
	t.Parallel()
	b := testenv.PrivateBroker(t)
	conn, err := amqp.Dial(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for q, n := range map[string]int{"a.dlq": 2, "a.events": 0} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for range n {
			if err := ch.PublishWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Publishes on one channel are ordered: after this declare, both are in the queue.
	if _, err := ch.QueueDeclarePassive("a.dlq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	qs, err := b.Queues(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs["a.dlq"] != 2 || qs["a.events"] != 0 {
		t.Fatalf("queues %v, want a.dlq 2 and a.events 0", qs)
	}
}
