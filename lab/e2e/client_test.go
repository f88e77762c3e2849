package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// Test cards and triggers (DESIGN §5).
const (
	cardOK       = "4242 4242 4242 4242"
	cardDeclined = "4000 0000 0000 0002"
	skuOK        = "LAB-MUG"
	skuOOS       = "LAB-UNICORN"
)

type item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

type address struct {
	Name       string `json:"name"`
	Street     string `json:"street"`
	City       string `json:"city"`
	PostalCode string `json:"postalCode"`
	Country    string `json:"country"`
}

type orderRequest struct {
	Items           []item            `json:"items"`
	Payment         map[string]string `json:"payment"`
	ShippingAddress address           `json:"shippingAddress"`
}

type step struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	At     string `json:"at"`
}

type order struct {
	OrderID      string `json:"orderId"`
	Status       string `json:"status"`
	CancelReason string `json:"cancelReason"`
	TotalCents   int64  `json:"totalCents"`
	Items        []item `json:"items"`
	SagaMode     string `json:"sagaMode"`
	Steps        []step `json:"steps"`
	TraceID      string `json:"traceId"`
}

func newOrder(card, sku, country string) orderRequest {
	return orderRequest{
		Items:   []item{{SKU: sku, Qty: 2}},
		Payment: map[string]string{"card": card},
		ShippingAddress: address{Name: "Ada Lovelace", Street: "1 Analytical St", City: "London",
			PostalCode: "N1 1AA", Country: country},
	}
}

// client is a thin client of the public API: what a learner's script would write.
type client struct {
	base string
	http *http.Client
}

func (c *client) do(ctx context.Context, method, path, token string, body any, hdr map[string]string, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s (%d): %w: %s", method, path, resp.StatusCode, err, raw)
		}
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, nil
}

// login logs in, retrying what is safe to retry (a login changes nothing): a gateway
// or users slowed down by a loaded machine may answer 502/503 or not at all, and that is
// not what any test here is about.
func (c *client) login(t testing.TB, email, password string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	err := retrySetup(func(ctx context.Context) (int, error) {
		return c.do(ctx, http.MethodPost, "/api/v1/auth/login", "", map[string]string{"email": email, "password": password}, nil, &out)
	})
	if err != nil {
		t.Fatalf("log in %s: %v", email, err)
	}
	if out.Token == "" {
		t.Fatal("login returned no token")
	}
	return out.Token
}

// register creates a fresh user (so tests never share one user's rate limit or history)
// and logs in. A registration whose answer was lost is retried: a 409 on the retry means
// the first attempt created the user, which is what was asked for.
func (c *client) register(t testing.TB, name string) string {
	t.Helper()
	email := fmt.Sprintf("%s-%d@example.com", name, time.Now().UnixNano())
	attempts := 0
	err := retrySetup(func(ctx context.Context) (int, error) {
		attempts++
		code, err := c.do(ctx, http.MethodPost, "/api/v1/users", "",
			map[string]string{"email": email, "name": name, "password": "correct horse battery"}, nil, nil)
		if code == http.StatusConflict && attempts > 1 {
			return code, nil
		}
		return code, err
	})
	if err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	return c.login(t, email, "correct horse battery")
}

// retrySetup runs a set-up call until it succeeds, for up to two minutes: again after a
// transport error, a 429 or a 5xx (the machine was busy), never after another 4xx (the
// request itself is wrong). Each attempt has its own 30 s deadline.
func retrySetup(call func(ctx context.Context) (int, error)) error {
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code, err := call(ctx)
		cancel()
		retryable := code == 0 || code == http.StatusTooManyRequests || code >= 500
		if err == nil || !retryable || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("after %d attempt(s): %w", attempt, err)
			}
			return nil
		}
		time.Sleep(min(time.Duration(attempt)*250*time.Millisecond, 2*time.Second))
	}
}

func (c *client) place(ctx context.Context, token string, req orderRequest) (string, error) {
	var out struct {
		OrderID string `json:"orderId"`
		Status  string `json:"status"`
	}
	code, err := c.do(ctx, http.MethodPost, "/api/v1/orders", token, req, nil, &out)
	if err != nil {
		return "", err
	}
	if code != http.StatusAccepted || out.OrderID == "" || out.Status != "pending" {
		return "", fmt.Errorf("place order: %d %+v", code, out)
	}
	return out.OrderID, nil
}

func (c *client) get(ctx context.Context, token, id string) (order, error) {
	var o order
	_, err := c.do(ctx, http.MethodGet, "/api/v1/orders/"+id, token, nil, nil, &o)
	return o, err
}

// waitFinal polls an order until it is confirmed or cancelled.
func (c *client) waitFinal(ctx context.Context, token, id string) (order, error) {
	for {
		o, err := c.get(ctx, token, id)
		if err == nil && (o.Status == "confirmed" || o.Status == "cancelled") {
			return o, nil
		}
		select {
		case <-ctx.Done():
			return o, fmt.Errorf("order %s still %q (%v): %w", id, o.Status, err, ctx.Err())
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// ledgers as the services report them on their internal APIs.
type payments struct {
	AuthorizedCents int64 `json:"authorizedCents"`
	CapturedCents   int64 `json:"capturedCents"`
	RefundedCents   int64 `json:"refundedCents"`
	Authorizations  int   `json:"authorizations"`
	Captures        int   `json:"captures"`
	Refunds         int   `json:"refunds"`
	Declines        int   `json:"declines"`
}

type reservations struct {
	Reserved int `json:"reserved"`
	Released int `json:"released"`
	Lines    []struct {
		SKU    string `json:"sku"`
		Status string `json:"status"`
	} `json:"lines"`
}

func getJSON(ctx context.Context, url string, out any) error {
	c := &client{base: "", http: http.DefaultClient}
	_, err := c.do(ctx, http.MethodGet, url, "", nil, nil, out)
	return err
}
