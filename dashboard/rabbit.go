package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/dashboard/views"
	"microlab/services/contracts"
	"microlab/services/platform/httpx"
	"microlab/services/platform/rabbitmgmt"
)

// rabbitAdmin reads queues through RabbitMQ's management HTTP API.
type rabbitAdmin struct {
	api   *rabbitmgmt.Client
	vhost string
	shown string // for messages: the URL with its password masked
}

// newRabbitAdmin takes the management URL (credentials in it) and the AMQP URL (whose
// path is the vhost: "amqp://h/" and "amqp://h" are "/", "amqp://h/lab" is "lab").
func newRabbitAdmin(mgmtURL, amqpURL string, c *http.Client) (*rabbitAdmin, error) {
	api, err := rabbitmgmt.New(mgmtURL, c)
	if err != nil {
		return nil, fmt.Errorf("RABBITMQ_MANAGEMENT_URL: want http://user:pass@host:15672")
	}
	a, err := url.Parse(amqpURL)
	if err != nil {
		return nil, fmt.Errorf("AMQP_URL: %w", err)
	}
	vhost := strings.TrimPrefix(a.Path, "/")
	if vhost == "" {
		vhost = "/"
	}
	return &rabbitAdmin{api: api, vhost: vhost, shown: api.Shown()}, nil
}

// do calls the API, with the errors the dashboard's pages show: a missing queue is
// the API's 404 not_found, and a broker that does not answer is named, not explained.
func (r *rabbitAdmin) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	err := r.api.Do(ctx, method, path, rd, out)
	var unreachable *rabbitmgmt.UnreachableError
	var status *rabbitmgmt.StatusError
	switch {
	case errors.As(err, &unreachable):
		return fmt.Errorf("RabbitMQ management API unreachable at %s", r.shown)
	case errors.Is(err, rabbitmgmt.ErrNotFound):
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such queue")
	case errors.As(err, &status):
		return fmt.Errorf("RabbitMQ management API at %s: HTTP %d: %s", r.shown, status.Code, status.Body)
	}
	return err
}

type queueInfo struct {
	Name     string `json:"name"`
	Messages int    `json:"messages"`
	Ready    int    `json:"messages_ready"`
}

func (r *rabbitAdmin) queuePath(q string) string {
	return "/api/queues/" + url.PathEscape(r.vhost) + "/" + url.PathEscape(q)
}

// queues lists the vhost's queues.
func (r *rabbitAdmin) queues(ctx context.Context) ([]queueInfo, error) {
	var out []queueInfo
	err := r.do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(r.vhost)+"?columns=name,messages,messages_ready", nil, &out)
	return out, err
}

// connectionNames lists the names clients gave their connections to the vhost
// (bus.Dial names each one: "payments-2/consume", "payments-2/publish", "dashboard").
func (r *rabbitAdmin) connectionNames(ctx context.Context) ([]string, error) {
	var got []struct {
		UserProvidedName string `json:"user_provided_name"`
		ClientProperties struct {
			ConnectionName string `json:"connection_name"`
		} `json:"client_properties"`
	}
	err := r.do(ctx, http.MethodGet, "/api/vhosts/"+url.PathEscape(r.vhost)+"/connections?columns=user_provided_name,client_properties", nil, &got)
	out := make([]string, 0, len(got))
	for _, c := range got {
		if n := cmp.Or(c.UserProvidedName, c.ClientProperties.ConnectionName); n != "" {
			out = append(out, n)
		}
	}
	return out, err
}

// peek returns up to n messages from the head of a queue and leaves them there
// (ackmode ack_requeue_true: the broker hands them out and takes them back).
func (r *rabbitAdmin) peek(ctx context.Context, queue string, n int) ([]views.DLQMessage, error) {
	var got []struct {
		Payload         string `json:"payload"`
		PayloadEncoding string `json:"payload_encoding"`
		Exchange        string `json:"exchange"`
		RoutingKey      string `json:"routing_key"`
		Properties      struct {
			MessageID     string         `json:"message_id"`
			Type          string         `json:"type"`
			CorrelationID string         `json:"correlation_id"`
			Headers       map[string]any `json:"headers"`
		} `json:"properties"`
	}
	err := r.do(ctx, http.MethodPost, r.queuePath(queue)+"/get",
		map[string]any{"count": n, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 20000}, &got)
	if err != nil {
		return nil, err
	}
	out := make([]views.DLQMessage, 0, len(got))
	for _, g := range got {
		payload := g.Payload
		if g.PayloadEncoding == "base64" {
			if b, err := base64.StdEncoding.DecodeString(payload); err == nil {
				payload = string(b)
			}
		}
		h := g.Properties.Headers
		m := views.DLQMessage{MessageID: g.Properties.MessageID, Type: g.Properties.Type, CorrelationID: g.Properties.CorrelationID,
			Exchange: str(h["x-original-exchange"]), RoutingKey: str(h["x-original-routing-key"]), LastError: str(h["x-last-error"]),
			Payload: payload}
		if f, ok := h[contracts.HeaderAttempt].(float64); ok {
			m.Attempt = int(f)
		}
		out = append(out, m)
	}
	return out, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// purge deletes every message of a queue.
func (r *rabbitAdmin) purge(ctx context.Context, queue string) error {
	return r.do(ctx, http.MethodDelete, r.queuePath(queue)+"/contents", nil, nil)
}

// isDLQ: only dead-letter queues can be replayed or discarded from the dashboard.
func isDLQ(name string) bool { return strings.HasSuffix(name, ".dlq") && len(name) > len(".dlq") }

// peekPerQueue is how many messages of each DLQ the page shows.
const peekPerQueue = 10

func (s *server) dlqModel(ctx context.Context) views.DLQModel {
	if s.rabbit == nil {
		return views.DLQModel{Error: "RabbitMQ management API not configured (RABBITMQ_MANAGEMENT_URL)"}
	}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	m := views.DLQModel{Source: s.rabbit.shown}
	qs, err := s.rabbit.queues(ctx)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	for _, q := range qs {
		if !isDLQ(q.Name) {
			continue
		}
		d := views.DLQQueue{Name: q.Name, Messages: q.Messages}
		if q.Messages > 0 {
			if d.Peek, err = s.rabbit.peek(ctx, q.Name, peekPerQueue); err != nil {
				m.Error = err.Error()
			}
		}
		m.Queues = append(m.Queues, d)
	}
	slices.SortFunc(m.Queues, func(a, b views.DLQQueue) int { return strings.Compare(a.Name, b.Name) })
	return m
}

// getDLQ: GET /api/dlq → the DLQ section's data.
func (s *server) getDLQ(w http.ResponseWriter, r *http.Request) error {
	m := s.dlqModel(r.Context())
	if m.Error != "" && m.Queues == nil {
		return httpx.Errorf(http.StatusBadGateway, "rabbitmq_unavailable", "%s", m.Error)
	}
	httpx.WriteJSON(w, http.StatusOK, m)
	return nil
}

func dlqName(r *http.Request) (string, error) {
	q := r.PathValue("queue")
	if !isDLQ(q) {
		return "", httpx.Errorf(http.StatusBadRequest, "not_a_dlq", "%q is not a dead-letter queue (<service>.dlq)", q)
	}
	return q, nil
}

// discardDLQ: POST /api/dlq/{queue}/discard → purge it.
func (s *server) discardDLQ(w http.ResponseWriter, r *http.Request) error {
	q, err := dlqName(r)
	if err != nil {
		return err
	}
	if s.rabbit == nil {
		return httpx.Errorf(http.StatusServiceUnavailable, "rabbitmq_unavailable", "RabbitMQ management API not configured")
	}
	if err := s.rabbit.purge(r.Context(), q); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "DLQ discarded", "queue", q)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"queue": q, "discarded": true})
	return nil
}

// replayDLQ: POST /api/dlq/{queue}/replay, optional body {"messageId"} → move the
// queue's messages (or that one) back to where they were going.
func (s *server) replayDLQ(w http.ResponseWriter, r *http.Request) error {
	q, err := dlqName(r)
	if err != nil {
		return err
	}
	var in struct {
		MessageID string `json:"messageId"`
	}
	if r.ContentLength != 0 {
		if err := httpx.Decode(w, r, &in, 1<<10); err != nil {
			return err
		}
	}
	if s.amqp == nil {
		return httpx.Errorf(http.StatusServiceUnavailable, "rabbitmq_unavailable", "no AMQP connection")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	n, err := replay(ctx, s.amqp, q, in.MessageID, 1000)
	if err != nil {
		return err
	}
	if in.MessageID != "" && n == 0 {
		return httpx.Errorf(http.StatusNotFound, "not_found", "message %q is not in %s", in.MessageID, q)
	}
	s.log.InfoContext(r.Context(), "DLQ replayed", "queue", q, "messages", n)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"queue": q, "replayed": n})
	return nil
}

// errUnroutable: the broker had nowhere to put a replayed message.
var errUnroutable = errors.New("unroutable")

// replay takes up to most messages from a DLQ (only the one with messageID, if given)
// and republishes each to the work queue of the service that dead-lettered it (<svc>.dlq
// → <svc>.events, through the default exchange), and to no other: persistent, mandatory,
// with a publisher confirm; a message is acked off the DLQ only once the broker has
// confirmed its copy, so a failure midway loses nothing (the rest stay in the DLQ).
// It stops after the number of messages the queue held when it started, so a message
// that fails again and comes straight back is not replayed in a loop.
//
// The copy gets x-attempt=1 (a fresh set of retries) and x-replayed-from.
func replay(ctx context.Context, chans channels, queue, messageID string, most int) (int, error) {
	get, err := chans.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer get.Close() // anything still unacked goes back to the queue
	q, err := get.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return 0, httpx.Errorf(http.StatusNotFound, "not_found", "no queue %s", queue)
		}
		return 0, fmt.Errorf("replay %s: %w", queue, err)
	}
	pub, err := chans.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	if err := pub.Confirm(false); err != nil {
		return 0, fmt.Errorf("replay: confirm mode: %w", err)
	}
	returns := pub.NotifyReturn(make(chan amqp.Return, 1))
	var held []amqp.Delivery
	defer func() {
		for _, d := range held {
			_ = d.Nack(false, true)
		}
	}()
	n := 0
	for range min(q.Messages, most) {
		d, ok, err := get.Get(queue, false)
		if err != nil {
			return n, fmt.Errorf("replay %s: get: %w", queue, err)
		}
		if !ok {
			break
		}
		if messageID != "" && d.MessageId != messageID {
			held = append(held, d)
			continue
		}
		// Not to the message's original exchange: an event dead-lettered at its first
		// attempt (malformed, a permanent failure) was published on shop.events, and
		// republishing it there would deliver it again to every other service bound to
		// it — a second order.placed for payments because the read model failed on it.
		exchange, key := "", workQueue(queue)
		msg := amqp.Publishing{Headers: amqp.Table{}, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
			MessageId: d.MessageId, CorrelationId: d.CorrelationId, Timestamp: d.Timestamp, Type: d.Type,
			AppId: d.AppId, Body: d.Body}
		for k, v := range d.Headers {
			if k != "x-death" && k != "x-last-error" {
				msg.Headers[k] = v
			}
		}
		msg.Headers[contracts.HeaderAttempt] = int32(1)
		msg.Headers["x-replayed-from"] = queue
		dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
		if err == nil {
			var acked bool
			acked, err = dc.WaitContext(ctx)
			if err == nil && !acked {
				err = errors.New("broker nacked the copy")
			}
		}
		if err == nil {
			select {
			case ret := <-returns:
				err = fmt.Errorf("%w: exchange %q has no queue for routing key %q (%s)", errUnroutable, ret.Exchange, ret.RoutingKey, ret.ReplyText)
			default:
			}
		}
		if err != nil {
			_ = d.Nack(false, true)
			if errors.Is(err, errUnroutable) {
				return n, httpx.Errorf(http.StatusConflict, "unroutable", "replay %s: %v", queue, err)
			}
			return n, fmt.Errorf("replay %s: publish: %w", queue, err)
		}
		if err := d.Ack(false); err != nil {
			return n, fmt.Errorf("replay %s: ack (the message may now be in both places): %w", queue, err)
		}
		n++
		if messageID != "" {
			break
		}
	}
	return n, nil
}

// workQueue is the work queue a DLQ's messages came from: one per service (bus.Queue).
func workQueue(dlq string) string { return strings.TrimSuffix(dlq, ".dlq") + ".events" }
