package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"microlab/services/platform/rabbitmgmt"
)

// mgmt is RabbitMQ's management HTTP API: private vhosts, and the per-vhost message
// counters the cost of a checkout is read from.
type mgmt struct{ api *rabbitmgmt.Client }

func newMgmt(raw string) (*mgmt, error) {
	api, err := rabbitmgmt.New(raw, &http.Client{Timeout: 15 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("RABBITMQ_MANAGEMENT_URL %q: want http://user:pass@host:15672", raw)
	}
	return &mgmt{api: api}, nil
}

func (m *mgmt) do(ctx context.Context, method, path, body string, out any) error {
	err := m.api.Do(ctx, method, path, strings.NewReader(body), out)
	var unreachable *rabbitmgmt.UnreachableError
	if errors.As(err, &unreachable) {
		return fmt.Errorf("RabbitMQ management API (%s): %w", m.api.Base(), unreachable.Err)
	}
	return err // a *rabbitmgmt.StatusError says method, path, status and why
}

// createVHost makes a vhost and lets the API's user do everything in it.
func (m *mgmt) createVHost(ctx context.Context, name string) error {
	p := "/api/vhosts/" + url.PathEscape(name)
	if err := m.do(ctx, http.MethodPut, p, "", nil); err != nil {
		return err
	}
	return m.do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(name)+"/"+url.PathEscape(m.api.User()),
		`{"configure":".*","write":".*","read":".*"}`, nil)
}

func (m *mgmt) deleteVHost(ctx context.Context, name string) error {
	return m.do(ctx, http.MethodDelete, "/api/vhosts/"+url.PathEscape(name), "", nil)
}

// versions returns RabbitMQ's and Erlang's versions.
func (m *mgmt) versions(ctx context.Context) (rabbit, erlang string, err error) {
	var o struct {
		RabbitMQ string `json:"rabbitmq_version"`
		Erlang   string `json:"erlang_version"`
	}
	err = m.do(ctx, http.MethodGet, "/api/overview", "", &o)
	return o.RabbitMQ, o.Erlang, err
}

// msgStats are a vhost's cumulative message counters. The broker updates them every
// statistics interval (5 s by default), so they are read once traffic has stopped and
// they have settled.
type msgStats struct {
	Publish, DeliverGet, Ack int64
	Messages                 int64 // queued now (ready + unacked)
}

func (m *mgmt) vhostStats(ctx context.Context, vhost string) (msgStats, error) {
	var v struct {
		Messages     int64 `json:"messages"`
		MessageStats struct {
			Publish    int64 `json:"publish"`
			DeliverGet int64 `json:"deliver_get"`
			Ack        int64 `json:"ack"`
		} `json:"message_stats"`
	}
	if err := m.do(ctx, http.MethodGet, "/api/vhosts/"+url.PathEscape(vhost), "", &v); err != nil {
		return msgStats{}, err
	}
	return msgStats{Publish: v.MessageStats.Publish, DeliverGet: v.MessageStats.DeliverGet, Ack: v.MessageStats.Ack, Messages: v.Messages}, nil
}

// statsInterval is how often the broker refreshes the counters (collect_statistics_interval).
const statsInterval = 5 * time.Second

// settledStats reads the counters once they stopped moving: at least one statistics
// interval after the traffic ended, then until two reads a second apart agree.
func (m *mgmt) settledStats(ctx context.Context, vhost string, quietSince time.Time) (msgStats, error) {
	if d := time.Until(quietSince.Add(statsInterval + 500*time.Millisecond)); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return msgStats{}, err
		}
	}
	prev, err := m.vhostStats(ctx, vhost)
	if err != nil {
		return msgStats{}, err
	}
	for range 2 * int(statsInterval/time.Second) {
		if err := sleep(ctx, time.Second); err != nil {
			return msgStats{}, err
		}
		cur, err := m.vhostStats(ctx, vhost)
		if err != nil {
			return msgStats{}, err
		}
		if cur.Publish == prev.Publish && cur.DeliverGet == prev.DeliverGet && cur.Ack == prev.Ack {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil // still moving: the lab's background traffic; close enough
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
