package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// catalogRPC is the operation name of orders' and catalog's spans of the gRPC price lookup.
const catalogRPC = "microlab.catalog.v1.Catalog/GetProduct"

// grpcSpans are the spans of the trace with rpc.system=grpc, by service.
func grpcSpans(tr *jaegerTrace) map[string][]jaegerSpan {
	out := map[string][]jaegerSpan{}
	for _, s := range tr.Spans {
		if s.tag("rpc.system") == "grpc" {
			out[tr.service(s)] = append(out[tr.service(s)], s)
		}
	}
	return out
}

// TestCatalogTransport: with catalog.transport=grpc a checkout's trace, read back from
// Jaeger, holds orders' client span and catalog's server span of GetProduct, both
// rpc.system=grpc and the server's a child of the client's; with http it holds none,
// and orders' HTTP call instead. Switching back and forth while orders are placed loses
// none of them.
func TestCatalogTransport(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{tracing: true})
	token := l.api.login(t, "alice@example.com", "alice-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	checkout := func(transport string) *jaegerTrace {
		t.Helper()
		id, traceID, _ := l.api.placeTraced(t, token, newOrder(cardOK, skuOK, "DE"))
		if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" {
			t.Fatalf("%s: order %s: %+v %v (want confirmed)", transport, id, o, err)
		}
		// orders' call and catalog's answer are exported by two processes in batches of
		// their own: wait for both sides of the lookup, then judge.
		return awaitTrace(t, l.jaeger, traceID, func(tr *jaegerTrace) bool {
			if transport == control.TransportGRPC {
				return len(tr.find("orders", catalogRPC)) > 0 && len(tr.find("catalog", catalogRPC)) > 0
			}
			return len(tr.find("orders", "GET /products/"+skuOK)) > 0 && len(tr.find("catalog", "GET /products/{sku}")) > 0
		})
	}

	l.set(control.CatalogTransport, control.TransportGRPC)
	tr := checkout(control.TransportGRPC)
	spans := grpcSpans(tr)
	if len(spans["orders"]) != 1 || len(spans["catalog"]) != 1 {
		t.Fatalf("grpc: rpc.system=grpc spans by service %v, want one of orders and one of catalog in %s", spans, describe(tr))
	}
	client, server := spans["orders"][0], spans["catalog"][0]
	if client.OperationName != catalogRPC || client.tag("span.kind") != "client" || server.tag("span.kind") != "server" ||
		server.parent() != client.SpanID || client.tag("rpc.grpc.status_code")+client.tag("rpc.response.status_code") == "" {
		t.Errorf("grpc: client %+v, server %+v: want orders' client span as the parent of catalog's server span, with a status code", client, server)
	}
	if n := len(tr.find("orders", "GET /products/"+skuOK)); n != 0 {
		t.Errorf("grpc: orders also called catalog over HTTP (%d spans)", n)
	}

	l.set(control.CatalogTransport, control.TransportHTTP)
	tr = checkout(control.TransportHTTP)
	if spans := grpcSpans(tr); len(spans) != 0 {
		t.Errorf("http: the trace has rpc.system=grpc spans %v", spans)
	}
	if c := tr.find("orders", "GET /products/"+skuOK); len(c) != 1 || c[0].tag("http.request.method") != "GET" {
		t.Errorf("http: orders' call to catalog: %+v", c)
	}

	// Under traffic: orders placed one after another while the transport flips; every
	// one is accepted and confirmed.
	var (
		mu     sync.Mutex
		placed []string
		failed []error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
			mu.Lock()
			if err != nil {
				failed = append(failed, err)
			} else {
				placed = append(placed, id)
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond) // a steady trickle, far under the gateway's rate limit
		}
	}()
	for _, tr := range []string{control.TransportGRPC, control.TransportHTTP, control.TransportGRPC, control.TransportHTTP} {
		l.set(control.CatalogTransport, tr)
		time.Sleep(time.Second)
	}
	close(stop)
	wg.Wait()
	if len(failed) != 0 {
		t.Fatalf("%d orders refused while the transport switched (of %d): %v", len(failed), len(failed)+len(placed), failed[0])
	}
	if len(placed) < 4 {
		t.Fatalf("only %d orders placed while switching: no traffic to judge", len(placed))
	}
	for _, id := range placed {
		if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" {
			t.Fatalf("order %s placed while switching: %+v %v (want confirmed)", id, o, err)
		}
	}
	if n := l.metric(t, "orders", "rpc_client_duration_seconds_count", `code="OK"`); n < 1 {
		t.Errorf("orders counted %v successful gRPC calls after switching: the traffic never went over gRPC", n)
	}
}
