package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// queryRecorder is a reverse proxy in front of the real orders that remembers the query
// of every GET /orders it passed on: which side of orders the gateway asked.
type queryRecorder struct {
	mu      sync.Mutex
	queries []url.Values
}

func (q *queryRecorder) last() url.Values {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queries) == 0 {
		return nil
	}
	return q.queries[len(q.queries)-1]
}

func recordingProxy(t *testing.T, target string) (string, *queryRecorder) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &queryRecorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/orders" {
			rec.mu.Lock()
			rec.queries = append(rec.queries, r.URL.Query())
			rec.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, rec
}

// ordersOf decodes a list of orders (of GET /api/v1/orders or /home) with every field.
// A list carries summaries in either read model: no steps (the step log is the write
// side's own, shown by GET /api/v1/orders/{id}).
func ordersOf(t *testing.T, raw json.RawMessage) []map[string]any {
	t.Helper()
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil {
		t.Fatalf("decode orders %s: %v", raw, err)
	}
	for _, it := range items {
		if _, ok := it["steps"]; ok {
			t.Fatalf("a listed order carries steps (a summary has none): %v", it)
		}
	}
	return items
}

// TestReadModelRouting: with read.model=cqrs the gateway asks orders' read model
// (GET /orders?view=history) for the order list and for /home's recent orders, and the
// answers equal composition's once the read model has caught up; with composition it
// asks the write side, as before. The setting applies to the next request.
func TestReadModelRouting(t *testing.T) {
	t.Parallel()
	up := startUpstreams(t)
	ordersURL, rec := recordingProxy(t, up.orders)
	ls := &liveSettings{cur: control.Defaults()}
	g := New(Config{UsersURL: up.users, CatalogURL: up.catalog, OrdersURL: ordersURL, UpstreamTimeout: time.Minute,
		BreakerFailures: 5, BreakerOpenFor: 10 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	g.Follow(ls.get)
	mux := http.NewServeMux()
	g.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	gw := srv.URL

	token, _ := newUser(t, gw, "Rita")
	for range 3 {
		placeOrder(t, gw, token, validOrder(), nil)
	}
	type view struct {
		list, home []map[string]any
		cursor     string
	}
	read := func(cqrs bool) view {
		t.Helper()
		a := do(t, "GET", gw+"/api/v1/orders?limit=2", token, nil, nil)
		var page struct {
			Items      json.RawMessage `json:"items"`
			NextCursor string          `json:"nextCursor"`
		}
		a.decode(t, &page)
		if a.Status != http.StatusOK {
			t.Fatalf("list: %d %s", a.Status, a.Body)
		}
		q := rec.last()
		if got := q.Get("view") == "history"; got != cqrs || q.Get("limit") != "2" {
			t.Fatalf("read.model cqrs=%v: the gateway asked orders for GET /orders?%s", cqrs, q.Encode())
		}
		h := do(t, "GET", gw+"/api/v1/home", token, nil, nil)
		var home struct {
			Orders   json.RawMessage `json:"orders"`
			Degraded []string        `json:"degraded"`
		}
		h.decode(t, &home)
		if h.Status != http.StatusOK || len(home.Degraded) != 0 {
			t.Fatalf("home: %d %s", h.Status, h.Body)
		}
		q = rec.last() // /home's other parts are not GET /orders

		if got := q.Get("view") == "history"; got != cqrs || q.Get("limit") != "5" {
			t.Fatalf("home, read.model cqrs=%v: the gateway asked orders for GET /orders?%s", cqrs, q.Encode())
		}
		return view{list: ordersOf(t, page.Items), home: ordersOf(t, home.Orders), cursor: page.NextCursor}
	}
	composed := read(false)
	if len(composed.list) != 2 || len(composed.home) != 3 || composed.cursor == "" {
		t.Fatalf("composition: %d listed, %d on home, cursor %q; want 2, 3 and a cursor", len(composed.list), len(composed.home), composed.cursor)
	}

	ls.set(t, control.ReadModel, control.ReadModelCQRS)
	deadline := time.Now().Add(patience)
	for {
		got := read(true)
		if reflect.DeepEqual(got, composed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the read model never caught up:\ncomposition %v\ncqrs        %v", composed, got)
		}
		time.Sleep(50 * time.Millisecond)
	}

	ls.set(t, control.ReadModel, control.ReadModelComposition)
	if got := read(false); !reflect.DeepEqual(got, composed) {
		t.Fatalf("back to composition: %v, want %v", got, composed)
	}
}
