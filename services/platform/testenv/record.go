package testenv

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
)

// Recorder keeps, in arrival order, the messages one service published, read from a
// tap. Tests assert on what a service emitted by looking here.
type Recorder struct {
	mu   sync.Mutex
	msgs []contracts.Envelope
}

// Record reads deliveries (a Tap's) until they end and keeps those source published;
// the test's own messages come back through the tap too and are left out. A message
// whose AMQP properties disagree with its envelope (MessageId with eventId, Type with
// eventType) fails the test: consumers route and deduplicate on the properties.
func Record(t testing.TB, deliveries <-chan amqp.Delivery, source string) *Recorder {
	r := &Recorder{}
	go func() {
		for d := range deliveries {
			if d.AppId != source {
				continue
			}
			var e contracts.Envelope
			if err := json.Unmarshal(d.Body, &e); err != nil || d.MessageId != e.EventID || d.Type != e.EventType {
				t.Errorf("emitted message %s: body and properties disagree (%v)", d.MessageId, err)
				continue
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, e)
			r.mu.Unlock()
		}
	}()
	return r
}

// Find returns the messages kept so far that match, oldest first.
func (r *Recorder) Find(match func(contracts.Envelope) bool) []contracts.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []contracts.Envelope
	for _, e := range r.msgs {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// Await waits up to within until at least n kept messages match and returns Find's
// answer: fewer than n if they did not come in time.
func (r *Recorder) Await(within time.Duration, n int, match func(contracts.Envelope) bool) []contracts.Envelope {
	deadline := time.Now().Add(within)
	for {
		got := r.Find(match)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}
