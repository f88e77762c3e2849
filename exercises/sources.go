package exercises

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"microlab/lab/loadgen"
)

// The real Shop and Prometheus of a Lab: what the dashboard wires in.

// Gateway is the Shop through the gateway's public API (loadgen.Client: a real client,
// as a learner's browser is) as the demo users, plus payments' internal ledger API.
type Gateway struct {
	API *loadgen.Client
	// Accounts are the demo accounts (alice@example.com, bob@example.com). Orders are
	// placed as the first; an order is read as whichever of them owns it (a learner may
	// shop as either in the Shop view, and the gateway shows an order only to its owner).
	Accounts []loadgen.Account
	// Payments calls payments' internal API (its base URL, http://127.0.0.1:8104), for
	// ledger checks; nil: they report what is missing.
	Payments *loadgen.Client
	// Catalog calls catalog's internal API (http://127.0.0.1:8102), for price actions;
	// nil: they report what is missing.
	Catalog *loadgen.Client
	// Orders calls orders' internal API (http://127.0.0.1:8103), for rebuild actions;
	// nil: they report what is missing.
	Orders *loadgen.Client

	mu     sync.Mutex
	tokens map[string]string // email → session token
}

// login returns a session token of account i, logging in when there is none (or fresh).
func (g *Gateway) login(ctx context.Context, i int, fresh bool) (string, error) {
	a := g.Accounts[i]
	g.mu.Lock()
	defer g.mu.Unlock()
	if tok := g.tokens[a.Email]; tok != "" && !fresh {
		return tok, nil
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := g.API.Do(ctx, http.MethodPost, "/api/v1/auth/login", "",
		map[string]string{"email": a.Email, "password": a.Password}, nil, &out); err != nil {
		return "", fmt.Errorf("log in as %s: %w", a.Email, err)
	}
	if g.tokens == nil {
		g.tokens = map[string]string{}
	}
	g.tokens[a.Email] = out.Token
	return out.Token, nil
}

// call is one call as account i, logging in again once when the token has expired.
func (g *Gateway) call(ctx context.Context, i int, method, path string, body any, headers map[string]string, out any) error {
	tok, err := g.login(ctx, i, false)
	if err != nil {
		return err
	}
	err = g.API.Do(ctx, method, path, tok, body, headers, out)
	if loadgen.StatusOf(err) == http.StatusUnauthorized {
		if tok, err = g.login(ctx, i, true); err != nil {
			return err
		}
		err = g.API.Do(ctx, method, path, tok, body, headers, out)
	}
	return err
}

// PlaceOrder checks out o as the first demo user, with an Idempotency-Key of its own
// (a retried request is the same order, never a second one).
func (g *Gateway) PlaceOrder(ctx context.Context, o Order) (string, string, error) {
	if len(g.Accounts) == 0 {
		return "", "", unavailable("a demo account")
	}
	qty, country := o.Qty, o.Country
	if qty == 0 {
		qty = 1
	}
	if country == "" {
		country = "DE"
	}
	body := map[string]any{
		"items":   []map[string]any{{"sku": o.SKU, "qty": qty}},
		"payment": map[string]string{"card": o.Card},
		"shippingAddress": map[string]string{"name": "Exercise Shopper", "street": "1 Main St", "city": "Berlin",
			"postalCode": "10115", "country": country},
	}
	var out struct {
		OrderID string `json:"orderId"`
		TraceID string `json:"traceId"`
	}
	if err := g.call(ctx, 0, http.MethodPost, "/api/v1/orders", body, map[string]string{"Idempotency-Key": "exercise-" + uuid.NewString()}, &out); err != nil {
		return "", "", fmt.Errorf("place order: %w", err)
	}
	return out.OrderID, out.TraceID, nil
}

// GetOrder reads an order through the gateway as the demo user who owns it (another
// user's order is a 404, as for any customer; an order of none of them is one too).
func (g *Gateway) GetOrder(ctx context.Context, id string) (ShopOrder, error) {
	var err error
	for i := range g.Accounts {
		var o ShopOrder
		if err = g.call(ctx, i, http.MethodGet, "/api/v1/orders/"+url.PathEscape(id), nil, nil, &o); err == nil {
			return o, nil
		}
		if loadgen.StatusOf(err) != http.StatusNotFound {
			break
		}
	}
	if err == nil {
		err = unavailable("a demo account")
	}
	return ShopOrder{}, fmt.Errorf("read order %s: %w", id, err)
}

// Ledger reads payments' ledger of an order.
func (g *Gateway) Ledger(ctx context.Context, id string) (Ledger, error) {
	if g.Payments == nil {
		return Ledger{}, unavailable("payments' ledger")
	}
	var l Ledger
	if err := g.Payments.Do(ctx, http.MethodGet, "/payments/"+url.PathEscape(id), "", nil, nil, &l); err != nil {
		return Ledger{}, fmt.Errorf("read the ledger of %s: %w", id, err)
	}
	return l, nil
}

// SetPrice changes a product's price on catalog's internal API.
func (g *Gateway) SetPrice(ctx context.Context, sku string, cents int) error {
	if g.Catalog == nil {
		return unavailable("catalog's internal API")
	}
	if err := g.Catalog.Do(ctx, http.MethodPut, "/products/"+url.PathEscape(sku)+"/price", "",
		map[string]int{"priceCents": cents}, nil, nil); err != nil {
		return fmt.Errorf("set the price of %s: %w", sku, err)
	}
	return nil
}

// Rebuild starts a rebuild of projection on orders' internal API and polls its job until
// it has ended.
func (g *Gateway) Rebuild(ctx context.Context, projection string) error {
	if g.Orders == nil {
		return unavailable("orders' internal API")
	}
	path := "/projections/" + url.PathEscape(projection) + "/rebuild"
	var job struct {
		JobID  string `json:"jobId"`
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := g.Orders.Do(ctx, http.MethodPost, path, "", nil, nil, &job); err != nil {
		return fmt.Errorf("rebuild %s: %w", projection, err)
	}
	for job.Status == "running" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("rebuild %s: job %s still running: %w", projection, job.JobID, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		if err := g.Orders.Do(ctx, http.MethodGet, path+"/"+url.PathEscape(job.JobID), "", nil, nil, &job); err != nil {
			return fmt.Errorf("rebuild %s: %w", projection, err)
		}
	}
	if job.Status != "completed" {
		return fmt.Errorf("rebuild %s: job %s %s: %s", projection, job.JobID, job.Status, job.Error)
	}
	return nil
}

// PrometheusAPI is Prometheus' HTTP API (GET /api/v1/query).
type PrometheusAPI struct {
	URL  string       // http://127.0.0.1:9090
	HTTP *http.Client // nil: a client with a 10 s timeout
}

// Query evaluates expr now. A scalar result is one sample without labels; NaN samples
// (a ratio over no traffic) are left out: they hold nothing.
func (p PrometheusAPI) Query(ctx context.Context, expr string) ([]Sample, error) {
	hc := p.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimRight(p.URL, "/")+"/api/v1/query?"+url.Values{"query": {expr}}.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("prometheus: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&body); err != nil || body.Status == "" {
		return nil, fmt.Errorf("prometheus: HTTP %d, not Prometheus' API", resp.StatusCode)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("prometheus: query %q: %s", expr, body.Error)
	}
	var out []Sample
	switch body.Data.ResultType {
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(body.Data.Result, &vec); err != nil {
			return nil, fmt.Errorf("prometheus: %w", err)
		}
		for _, s := range vec {
			if v, ok := sampleValue(s.Value); ok {
				out = append(out, Sample{Labels: s.Metric, Value: v})
			}
		}
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(body.Data.Result, &v); err != nil {
			return nil, fmt.Errorf("prometheus: %w", err)
		}
		if f, ok := sampleValue(v); ok {
			out = append(out, Sample{Value: f})
		}
	default:
		return nil, errors.New("prometheus: want an instant vector or a scalar, got a " + body.Data.ResultType)
	}
	return out, nil
}

func sampleValue(v [2]any) (float64, bool) {
	s, ok := v[1].(string)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != f {
		return 0, false
	}
	return f, true
}
