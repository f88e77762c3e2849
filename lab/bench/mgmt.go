package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// mgmt is RabbitMQ's management HTTP API: private vhosts, and the per-vhost message
// counters the cost of a checkout is read from.
type mgmt struct {
	base       string // without credentials
	user, pass string
	http       *http.Client
}

func newMgmt(raw string) (*mgmt, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("RABBITMQ_MANAGEMENT_URL %q: want http://user:pass@host:15672", raw)
	}
	m := &mgmt{user: u.User.Username(), http: &http.Client{Timeout: 15 * time.Second}}
	m.pass, _ = u.User.Password()
	u.User = nil
	m.base = strings.TrimRight(u.String(), "/")
	return m, nil
}

func (m *mgmt) do(ctx context.Context, method, path, body string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, m.base+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(m.user, m.pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.http.Do(req)
	if err != nil {
		return fmt.Errorf("RabbitMQ management API (%s): %w", m.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("RabbitMQ management API: %s %s: %s %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// createVHost makes a vhost and lets the API's user do everything in it.
func (m *mgmt) createVHost(ctx context.Context, name string) error {
	p := "/api/vhosts/" + url.PathEscape(name)
	if err := m.do(ctx, http.MethodPut, p, "", nil); err != nil {
		return err
	}
	return m.do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(name)+"/"+url.PathEscape(m.user),
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
