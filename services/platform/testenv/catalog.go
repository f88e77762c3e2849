package testenv

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Helpers for the tests that run catalog: its own, and those of the services that
// depend on it (orders' prices, the gateway's cache), end to end included. Catalog is a
// package main, so they talk to it the way its callers do: HTTP and its log lines.

// PutPrice changes a price on catalog's internal API: PUT {catalog}/products/{sku}/price
// with body sent as it is (JSON, or something that is not, to see it refused), bounded
// by 30 s. It returns the answer's status and body; SetPrice is the call that must
// succeed.
func PutPrice(t testing.TB, catalog, sku, body string) (status int, answer []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, catalog+"/products/"+sku+"/price", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("PUT %s price %s: read the answer: %v", sku, body, err)
	}
	return resp.StatusCode, answer
}

// SetPrice sets sku's price to cents on catalog, failing the test unless catalog
// answers 200; catalog then announces product.price_changed (through its outbox).
func SetPrice(t testing.TB, catalog, sku string, cents int64) {
	t.Helper()
	body, _ := json.Marshal(map[string]int64{"priceCents": cents})
	if status, answer := PutPrice(t, catalog, sku, string(body)); status != http.StatusOK {
		t.Fatalf("PUT %s price %d: %d %s", sku, cents, status, answer)
	}
}

// GRPCAddr is the address in catalog's last "grpc listening" log line in logs: started
// with GRPC_ADDR=AnyAddr (ServiceEnv's), it binds a port of its own choosing and says
// which. The last line, because a retried start (see Start) logs one per attempt.
func GRPCAddr(t testing.TB, logs *LogBuffer) string {
	t.Helper()
	var addr string
	for _, line := range strings.Split(logs.String(), "\n") {
		var l struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "grpc listening" {
			addr = l.Addr
		}
	}
	if addr == "" {
		out := logs.String()
		if len(out) > 3000 {
			out = out[len(out)-3000:]
		}
		t.Fatalf("catalog logged no \"grpc listening\" line:\n%s", out)
	}
	return addr
}
