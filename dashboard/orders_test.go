package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"microlab/services/platform/testenv"
)

// The Sagas page's event stream and rebuild button against the REAL orders service
// (built once from ./services/orders, on a database and vhost of its own). Its stream
// is written into orders' database as orders writes one (the order row and its events),
// so the test needs no catalog, payments or broker traffic to have an order to show.

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// ordersUnderTest is one orders process and its database.
type ordersUnderTest struct {
	URL string
	db  *pgx.Conn
}

func startOrders(t *testing.T) *ordersUnderTest {
	t.Helper()
	bin := filepath.Join(testenv.Build(t, "./services/orders"), "orders")
	env := testenv.ServiceEnv(t, "orders", true)
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			out := logs.String()
			t.Logf("orders log tail:\n%s", out[max(0, len(out)-3000):])
		}
	})
	p := testenv.Exec(t, bin, env, logs)
	conn, err := pgx.Connect(context.Background(), env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return &ordersUnderTest{URL: p.URL, db: conn}
}

// seedOrder writes a confirmed choreography order into orders' tables and its stream
// of three events (placed, payment authorized, confirmed), as Store would have, and
// returns its id.
func (o *ordersUnderTest) seedOrder(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	id := uuid.NewString()
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	placed := map[string]any{"name": "order", "status": "placed", "detail": "", "order": map[string]any{
		"userId": "alice", "sagaMode": "choreography", "totalCents": 2400, "currency": "EUR",
		"shippingAddress": map[string]string{"name": "A", "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
		"cardLast4":       "4242", "traceId": "", "createdAt": at,
		"items": []map[string]any{{"sku": "LAB-MUG", "qty": 2, "priceCents": 1200}}}}
	events := []struct {
		typ  string
		data any
	}{
		{"order.placed", placed},
		{"payment.authorized", map[string]string{"name": "payment", "status": "authorized", "detail": "auth-1"}},
		{"order.confirmed", map[string]string{"name": "order", "status": "confirmed", "detail": ""}},
	}
	if _, err := o.db.Exec(ctx, `INSERT INTO orders (order_id, user_id, status, saga_mode, total_cents, currency,
		shipping_address, card_last4, created_at) VALUES ($1, 'alice', 'confirmed', 'choreography', 2400, 'EUR', '{}', '4242', $2)`,
		id, at); err != nil {
		t.Fatal(err)
	}
	for i, e := range events {
		raw, _ := json.Marshal(e.data)
		if _, err := o.db.Exec(ctx, `INSERT INTO order_events (order_id, version, type, data, occurred_at) VALUES ($1, $2, $3, $4, $5)`,
			id, i+1, e.typ, raw, at.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// The event stream panel: one row per event, the state at the latest version by
// default and at any version picked; the section alone for a version; an order without
// a stream and orders not answering said inline; bad input refused with a JSON 400.
func TestEventStreamPanel(t *testing.T) {
	t.Parallel()
	orders := startOrders(t)
	id := orders.seedOrder(t)
	f := newFixture(t, map[string]string{"ORDERS_URL": orders.URL, "GATEWAY_URL": closedURL(t)}, Sources{}, nil)

	resp, page := f.do(t, "GET", "/sagas?order="+id, "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("saga page: %d %s", resp.StatusCode, page)
	}
	ids := testIDs(t, page)
	rows := ids["stream-event"]
	if len(rows) != 3 {
		t.Fatalf("want 3 stream rows, got %d:\n%s", len(rows), page)
	}
	for i, want := range []string{"order.placed", "payment.authorized", "order.confirmed"} {
		if got := attr(rows[i], "data-type"); got != want {
			t.Errorf("row %d: type %q, want %q", i+1, got, want)
		}
	}
	if got := nodeText(rows[0]); !strings.Contains(got, "2 item(s), 24.00 EUR") {
		t.Errorf("placed row shows no key data: %q", got)
	}
	if got := nodeText(rows[1]); !strings.Contains(got, "payment authorized: auth-1") {
		t.Errorf("payment row shows no key data: %q", got)
	}
	st := ids["stream-state"]
	if len(st) != 1 || attr(st[0], "data-version") != "3" || attr(st[0], "data-status") != "confirmed" {
		t.Fatalf("default state: want version 3 confirmed, got %v", page)
	}
	if n := len(ids["state-step"]); n != 3 {
		t.Errorf("state at version 3: %d steps, want 3", n)
	}

	// Version 1: the order as placed, pending, with one step.
	resp, page = f.do(t, "GET", "/sagas?order="+id+"&version=1", "", nil)
	ids = testIDs(t, page)
	if st := ids["stream-state"]; resp.StatusCode != 200 || len(st) != 1 || attr(st[0], "data-status") != "pending" || attr(st[0], "data-version") != "1" {
		t.Fatalf("version 1: want pending, got %d %s", resp.StatusCode, page)
	}
	if n := len(ids["state-step"]); n != 1 {
		t.Errorf("state at version 1: %d steps, want 1", n)
	}
	if got := nodeText(ids["state-items"][0]); got != "2 × LAB-MUG at 12.00 EUR" {
		t.Errorf("items at version 1: %q", got)
	}

	// The fragment sagas.js swaps in: the section alone, no layout.
	resp, frag := f.do(t, "GET", "/sagas/"+id+"/events?version=2", "", nil)
	ids = testIDs(t, frag)
	if resp.StatusCode != 200 || strings.Contains(frag, "<nav") || len(ids["event-stream"]) != 1 {
		t.Fatalf("fragment: %d %s", resp.StatusCode, frag)
	}
	if st := ids["stream-state"]; attr(st[0], "data-version") != "2" || attr(st[0], "data-status") != "pending" || len(ids["state-step"]) != 2 {
		t.Errorf("fragment at version 2: %s", frag)
	}

	// An order orders has no stream of.
	_, frag = f.do(t, "GET", "/sagas/"+uuid.NewString()+"/events", "", nil)
	if ids := testIDs(t, frag); len(ids["stream-none"]) != 1 || len(ids["stream-event"]) != 0 {
		t.Errorf("unknown order: want stream-none, got %s", frag)
	}

	// Bad input: 400 with a JSON error.
	for path, code := range map[string]string{
		"/sagas/not-an-order/events":           "invalid_order_id",
		"/sagas/" + id + "/events?version=abc": "invalid_version",
		"/sagas/" + id + "/events?version=0":   "invalid_version",
		"/sagas?order=" + id + "&version=-1":   "invalid_version",
	} {
		resp, body := f.do(t, "GET", path, "", nil)
		if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			!strings.Contains(body, `"code":"`+code+`"`) {
			t.Errorf("GET %s: want 400 %s as JSON, got %d %s %s", path, code, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}

	// orders not answering: said in the section, the page itself is fine.
	down := newFixture(t, map[string]string{"ORDERS_URL": closedURL(t), "GATEWAY_URL": closedURL(t)}, Sources{}, nil)
	resp, page = down.do(t, "GET", "/sagas?order="+id, "", nil)
	ids = testIDs(t, page)
	if resp.StatusCode != 200 || len(ids["stream-error"]) != 1 ||
		!strings.HasPrefix(nodeText(ids["stream-error"][0]), "orders' event store is not answering: ") {
		t.Errorf("orders down: want the stream error inline, got %d %s", resp.StatusCode, page)
	}
}

// The rebuild action: refused without this dashboard's Origin, refused for an unknown
// projection or job id, 409 (orders' own) while a rebuild runs, and otherwise a job
// whose progress is read until it has completed with every stream replayed, the read
// model refilled.
func TestRebuildAction(t *testing.T) {
	t.Parallel()
	orders := startOrders(t)
	id := orders.seedOrder(t)
	f := newFixture(t, map[string]string{"ORDERS_URL": orders.URL, "GATEWAY_URL": closedURL(t)}, Sources{}, nil)
	origin := map[string]string{"Origin": f.ts.URL}
	const path = "/api/lab/projections/order-history/rebuild"

	for name, hdr := range map[string]map[string]string{"no Origin": nil, "another site": {"Origin": "http://evil.example"}} {
		if resp, body := f.do(t, "POST", path, "", hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: want 403, got %d %s", name, resp.StatusCode, body)
		}
	}
	var started int
	if err := orders.db.QueryRow(context.Background(), `SELECT count(*) FROM projection_rebuilds`).Scan(&started); err != nil || started != 0 {
		t.Fatalf("a refused POST started a rebuild (%d jobs, %v)", started, err)
	}
	for p, want := range map[string]int{
		"/api/lab/projections/orders/rebuild":                            400,
		"/api/lab/projections/order-history/rebuild/not-a-job":           400,
		"/api/lab/projections/order-history/rebuild/" + uuid.NewString(): 404,
	} {
		method := "GET"
		if strings.HasSuffix(p, "/rebuild") {
			method = "POST"
		}
		resp, body := f.do(t, method, p, "", origin)
		if resp.StatusCode != want || !strings.Contains(body, `"error"`) {
			t.Errorf("%s %s: want %d with a JSON error, got %d %s", method, p, want, resp.StatusCode, body)
		}
	}

	// A rebuild running (as another instance's job would be): orders' 409, passed on.
	busy := uuid.NewString()
	if _, err := orders.db.Exec(context.Background(), `INSERT INTO projection_rebuilds (job_id, projection) VALUES ($1, 'order-history')`, busy); err != nil {
		t.Fatal(err)
	}
	if resp, body := f.do(t, "POST", path, "", origin); resp.StatusCode != http.StatusConflict || !strings.Contains(body, `"code":"rebuild_running"`) {
		t.Errorf("while a rebuild runs: want 409 rebuild_running, got %d %s", resp.StatusCode, body)
	}
	if _, err := orders.db.Exec(context.Background(), `UPDATE projection_rebuilds SET status = 'completed' WHERE job_id = $1`, busy); err != nil {
		t.Fatal(err)
	}

	resp, body := f.do(t, "POST", path, "", origin)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start: want 202, got %d %s", resp.StatusCode, body)
	}
	job := decode[rebuildJob](t, body)
	if uuid.Validate(job.JobID) != nil || job.Projection != "order-history" {
		t.Fatalf("start: not a job: %s", body)
	}
	for end := time.Now().Add(30 * time.Second); job.Status == "running"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("rebuild still running after 30s: %+v", job)
		}
		resp, body := f.do(t, "GET", path+"/"+job.JobID, "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("progress: %d %s", resp.StatusCode, body)
		}
		job = decode[rebuildJob](t, body)
	}
	if job.Status != "completed" || job.Done != 1 || job.Total != 1 {
		t.Fatalf("rebuild: want completed 1 of 1, got %+v", job)
	}
	var status string
	if err := orders.db.QueryRow(context.Background(), `SELECT status FROM order_history WHERE order_id = $1`, id).Scan(&status); err != nil || status != "confirmed" {
		t.Errorf("order_history after the rebuild: %q %v, want confirmed", status, err)
	}
}
