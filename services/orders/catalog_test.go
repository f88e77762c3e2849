package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// grpcCalls is how many GetProduct calls orders has made over gRPC with status code,
// read from its rpc_client_duration_seconds histogram (0 before the first).
func (l *lab) grpcCalls(code string) int {
	l.t.Helper()
	resp, err := http.Get(l.base + "/metrics")
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	re := regexp.MustCompile(fmt.Sprintf(`rpc_client_duration_seconds_count\{code=%q,method="/microlab.catalog.v1.Catalog/GetProduct"\} (\d+)`, code))
	m := re.FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestCatalogTransport: at catalog.transport=grpc orders prices an order over gRPC from
// the real catalog (same prices, unknown SKU still 422), and switching back to http
// live takes effect on the next call.
func TestCatalogTransport(t *testing.T) {
	t.Parallel()
	l := newLab(t, map[string]string{control.CatalogTransport: control.TransportGRPC})
	const user = "u-grpc"

	id := l.place(user, order(cardOK, "LAB-TEE", 2, "DE"), nil)
	if o := l.get(user, id); o.TotalCents != 2*2500 || len(o.Items) != 1 || o.Items[0].PriceCents != 2500 {
		t.Fatalf("grpc: order priced %+v", o)
	}
	if n := l.grpcCalls("OK"); n != 1 {
		t.Fatalf("grpc: %d GetProduct calls answered OK, want 1 (was the order priced over http?)", n)
	}
	var e errorAnswer
	if code := l.do(http.MethodPost, "/orders", user, nil, order(cardOK, "LAB-NOPE", 1, "DE"), &e); code != http.StatusUnprocessableEntity ||
		e.Error.Code != "unknown_sku" {
		t.Fatalf("grpc, unknown sku: %d %+v", code, e)
	}
	if n := l.grpcCalls("NotFound"); n != 1 {
		t.Fatalf("grpc: %d GetProduct calls answered NotFound, want 1", n)
	}

	testenv.SetLab(t, l.env["LAB_DATABASE_URL"], l.pub, control.CatalogTransport, control.TransportHTTP)
	l.awaitSetting(control.CatalogTransport, control.TransportHTTP)
	id2 := l.place(user, order(cardOK, "LAB-MUG", 1, "DE"), nil)
	if o := l.get(user, id2); o.TotalCents != 1200 {
		t.Fatalf("http: order priced %+v", o)
	}
	if n := l.grpcCalls("OK"); n != 1 {
		t.Fatalf("http: %d GetProduct calls over gRPC, want still 1", n)
	}
}

// TestCatalogGRPCUnavailable: at catalog.transport=grpc with no gRPC server where
// CATALOG_GRPC_ADDR points (catalog's HTTP is fine), prices cannot be read: 503, no order.
func TestCatalogGRPCUnavailable(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "orders", true)
	testenv.SetLab(t, env["LAB_DATABASE_URL"], nil, control.CatalogTransport, control.TransportGRPC)
	env["CATALOG_URL"] = startCatalog(t, env)
	env["CATALOG_GRPC_ADDR"] = deadCatalog(t)[len("http://"):] // accepts and drops connections
	env["CATALOG_TIMEOUT"] = "500ms"
	l := startLab(t, env)
	var e errorAnswer
	if code := l.do(http.MethodPost, "/orders", "u1", nil, order(cardOK, "LAB-MUG", 1, "DE"), &e); code != http.StatusServiceUnavailable ||
		e.Error.Code != "catalog_unavailable" {
		t.Fatalf("%d %+v", code, e)
	}
	var p OrderPage
	if l.do(http.MethodGet, "/orders", "u1", nil, nil, &p); len(p.Items) != 0 {
		t.Fatalf("an order was created: %+v", p.Items)
	}
}
