package main

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestUpstreamTimeoutFromConfig: every upstream call is bounded by UPSTREAM_TIMEOUT —
// the client of each upstream is built with exactly that timeout. (TestGateway's
// "upstream timeout" shows the bound at work against a frozen orders; this pins its
// value without timing anything.)
func TestUpstreamTimeoutFromConfig(t *testing.T) {
	t.Parallel()
	cfg := Config{UsersURL: "http://127.0.0.1:1", CatalogURL: "http://127.0.0.1:1", OrdersURL: "http://127.0.0.1:1",
		UpstreamTimeout: 300 * time.Millisecond, BreakerFailures: 1, BreakerOpenFor: time.Second}
	g := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for _, u := range []*upstream{g.users, g.catalog, g.orders} {
		if u.client.Timeout != cfg.UpstreamTimeout {
			t.Errorf("%s: client timeout %s, want UPSTREAM_TIMEOUT %s", u.name, u.client.Timeout, cfg.UpstreamTimeout)
		}
	}
}
