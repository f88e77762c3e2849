package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client is a shopper's view of the gateway's public API (/api/v1), nothing more: the
// generator is a client like any other, so what it measures is what a customer sees.
// lab bench uses it too.
type Client struct {
	base string
	http *http.Client
}

// NewClient calls the gateway at base (http://127.0.0.1:8000) with hc
// (nil: http.DefaultClient).
func NewClient(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: base, http: hc}
}

// APIError is a non-2xx answer: the status, and the error code and message of the
// answer's {"error": {"code", "message"}} (Msg: the body itself, cut, when it has none).
type APIError struct {
	Status int
	Code   string
	Msg    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Msg)
}

// StatusOf returns err's HTTP status, 0 when it is not an answer (a timeout, a refused
// connection).
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// Do sends body (JSON, when not nil) to method path with token as the bearer and the
// extra headers, and decodes a 2xx answer into out (when not nil). Any other answer is
// an error carrying its status and the gateway's error code (StatusOf).
func (c *Client) Do(ctx context.Context, method, path, token string, body any, headers map[string]string, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		msg := e.Error.Message
		if msg == "" {
			msg = string(bytes.TrimSpace(raw[:min(len(raw), 200)]))
		}
		return &APIError{Status: resp.StatusCode, Code: e.Error.Code, Msg: msg}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// order is what GET /api/v1/orders/{id} answers, as far as the generator reads it.
type order struct {
	OrderID      string    `json:"orderId"`
	Status       string    `json:"status"`
	CancelReason string    `json:"cancelReason"`
	CreatedAt    time.Time `json:"createdAt"`
	Steps        []struct {
		Name string    `json:"name"`
		At   time.Time `json:"at"`
	} `json:"steps"`
}

// sagaTime is how long the order's saga took, by the shop's own clock: from its first
// step (order/placed) to its last (order/confirmed or order/cancelled). Polling decides
// only when the generator learns it, not what it measures.
func (o order) sagaTime() time.Duration {
	if len(o.Steps) == 0 {
		return 0
	}
	start := o.Steps[0].At
	if !o.CreatedAt.IsZero() && o.CreatedAt.Before(start) {
		start = o.CreatedAt
	}
	return max(0, o.Steps[len(o.Steps)-1].At.Sub(start))
}

// CheckLocal refuses a gateway that is not on this machine: the generator is for the
// learner's own lab, never someone else's server.
func CheckLocal(ctx context.Context, gateway string) error {
	u, err := url.Parse(gateway)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return fmt.Errorf("gateway %q: want an http URL such as http://127.0.0.1:8000", gateway)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("gateway %s is not on this machine: load targets only a local lab (127.0.0.1, ::1, localhost)", host)
		}
		return nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("gateway %s: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Errorf("gateway %s resolves to %s, not this machine: load targets only a local lab", host, ip.IP)
		}
	}
	return nil
}
