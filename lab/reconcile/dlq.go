package reconcile

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/platform/rabbitmgmt"
)

// DLQSuffix ends the name of every dead-letter queue (bus.Queue.DLQ: <consumer>.dlq).
const DLQSuffix = ".dlq"

// DLQs returns the depth of every dead-letter queue in amqpURL's virtual host. The
// management API (mgmtURL) lists them — every consumer's, whatever its name, the read
// model's orders-history.dlq too — and each is then counted over AMQP (amqpURL) with a
// passive declare, which is exact: the management API's counts are statistics, sampled
// every few seconds, and a message dead-lettered a moment ago may not show in them yet.
// Where AMQP cannot be reached, the API's counts are used.
func DLQs(ctx context.Context, amqpURL, mgmtURL string) (map[string]int, error) {
	vhost, err := vhostOf(amqpURL)
	if err != nil {
		return nil, err
	}
	var queues []struct {
		Name     string `json:"name"`
		Messages int    `json:"messages"`
	}
	if err := mgmtGet(ctx, mgmtURL, "/api/queues/"+url.PathEscape(vhost)+"?columns=name,messages", &queues); err != nil {
		return nil, fmt.Errorf("reconcile: list the DLQs of vhost %s: %w", vhost, err)
	}
	all := make(map[string]int, len(queues))
	for _, q := range queues {
		all[q.Name] = q.Messages
	}
	out := onlyDLQs(all)
	if len(out) == 0 {
		return out, nil
	}
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return out, nil // the API's figures, then
	}
	defer conn.Close()
	for name := range out {
		// A failed passive declare closes the channel: one channel per queue.
		ch, err := conn.Channel()
		if err != nil {
			break
		}
		if q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err == nil {
			out[name] = q.Messages
		}
		_ = ch.Close()
	}
	return out, nil
}

// onlyDLQs keeps the dead-letter queues of qs (never nil).
func onlyDLQs(qs map[string]int) map[string]int {
	out := map[string]int{}
	for name, n := range qs {
		if strings.HasSuffix(name, DLQSuffix) {
			out[name] = n
		}
	}
	return out
}

// vhostOf returns the virtual host an AMQP URL names ("/" when it names none).
func vhostOf(amqpURL string) (string, error) {
	u, err := amqp.ParseURI(amqpURL)
	if err != nil {
		return "", fmt.Errorf("reconcile: amqp url: %w", err)
	}
	if u.Vhost == "" {
		return "/", nil
	}
	return u.Vhost, nil
}

// mgmtGet GETs path from the management API into out.
func mgmtGet(ctx context.Context, mgmtURL, path string, out any) error {
	api, err := rabbitmgmt.New(mgmtURL, http.DefaultClient)
	if err != nil {
		return fmt.Errorf("management url: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return api.Do(ctx, http.MethodGet, path, nil, out)
}
