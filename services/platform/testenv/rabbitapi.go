package testenv

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/rabbitmgmt"
)

// Binding is one binding as the RabbitMQ management API lists it.
type Binding struct {
	Source          string `json:"source"`
	Destination     string `json:"destination"`
	DestinationType string `json:"destination_type"` // "queue" or "exchange"
	RoutingKey      string `json:"routing_key"`
}

// VHostOf returns the virtual host of an AMQP URL (such as VHost's).
func VHostOf(amqpURL string) (string, error) {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "", err
	}
	v := strings.TrimPrefix(u.Path, "/")
	if v == "" {
		return "/", nil
	}
	return v, nil
}

// ExchangeBindings lists the bindings whose source is exchange in amqpURL's vhost, read
// from the management API. Bindings live in the broker's metadata store, not in its
// (sampled) statistics, so a binding is listed as soon as the QueueBind that made it has
// returned. A missing exchange has no bindings.
func ExchangeBindings(amqpURL, exchange string) ([]Binding, error) {
	vhost, err := VHostOf(amqpURL)
	if err != nil {
		return nil, err
	}
	var out []Binding
	err = mgmtDo(http.MethodGet, "/api/exchanges/"+url.PathEscape(vhost)+"/"+url.PathEscape(exchange)+"/bindings/source", "", &out)
	if errors.Is(err, rabbitmgmt.ErrNotFound) {
		return nil, nil
	}
	return out, err
}

// AwaitQueueBinding waits up to within until exchange in amqpURL's vhost has a binding
// to a queue (any queue, any key) and returns it; it fails the test otherwise. It is how
// a test knows that a consumer's queue is in place before it publishes, instead of
// sleeping and hoping.
func AwaitQueueBinding(t testing.TB, amqpURL, exchange string, within time.Duration) Binding {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for {
		bs, err := ExchangeBindings(amqpURL, exchange)
		if err != nil {
			lastErr = err
		}
		for _, b := range bs {
			if b.DestinationType == "queue" {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no queue bound to exchange %s within %s (last error: %v)", exchange, within, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
