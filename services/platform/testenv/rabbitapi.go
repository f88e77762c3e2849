package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Binding is one binding as the RabbitMQ management API lists it.
type Binding struct {
	Source          string `json:"source"`
	Destination     string `json:"destination"`
	DestinationType string `json:"destination_type"` // "queue" or "exchange"
	RoutingKey      string `json:"routing_key"`
}

// errNotFound is a 404 from the management API (an exchange or queue not declared yet).
var errNotFound = errors.New("not found")

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
	err = mgmtGet("/api/exchanges/"+url.PathEscape(vhost)+"/"+url.PathEscape(exchange)+"/bindings/source", &out)
	if errors.Is(err, errNotFound) {
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

// mgmtGet GETs path from the management API and decodes its JSON answer into out.
func mgmtGet(path string, out any) error {
	u, err := url.Parse(mgmtURL())
	if err != nil {
		return err
	}
	pass, _ := u.User.Password()
	user := u.User.Username()
	u.User = nil
	req, err := http.NewRequest(http.MethodGet, strings.TrimRight(u.String(), "/")+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, pass)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("GET %s: %w", path, errNotFound)
	}
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
