package main

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// TestChangesApplyWhenAnnounced: the gateway consumes no messages, yet it applies a
// change the moment control.Plane announces it on lab.control, as every other instance
// does, not at its periodic re-read of the lab database. The re-read is pushed out to an
// hour here, so only the announcement can apply anything within the test: a setting
// (gateway.rate_limit.rps: the next request over the burst is refused) and a fault
// (down: the next request answers 503), each through the real store, broker and
// gateway.
func TestChangesApplyWhenAnnounced(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "gateway", false)
	env["INSTANCE_ID"] = "gateway-1"
	env["LOG_LEVEL"] = "info"
	// Never called: the test asks only for the OpenAPI document, which the gateway
	// serves itself (through the rate limiter and the lab's faults, like every route).
	env["USERS_URL"], env["CATALOG_URL"], env["ORDERS_URL"] = "http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"
	env["RATE_LIMIT_RPS"] = "0" // off until the lab says otherwise
	runAnnounced := func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		a, err := start(ctx, getenv, stdout)
		if err != nil {
			return err
		}
		a.Settings.Resync = time.Hour // only an announcement can apply a change
		return a.Run(ctx)
	}
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs)
		}
	})
	gw := testenv.Run(t, runAnnounced, env, logs)
	// The gateway's own exclusive queue is the only thing bound to lab.control in this
	// vhost: once it is bound, an announcement reaches the gateway.
	testenv.AwaitQueueBinding(t, env["AMQP_URL"], contracts.ExchangeControl, patience)

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	store, err := control.OpenStore(ctx, env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	plane := &control.Plane{Store: store, Pub: testenv.Dial(t, env["AMQP_URL"]).Pub}

	openapi := func() int {
		t.Helper()
		resp, err := http.Get(gw + "/api/v1/openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	// change makes a change through the control plane and waits until a request answers
	// code, logging how long that took from the change being stored and announced.
	change := func(what string, code int, do func() error) {
		t.Helper()
		at := time.Now()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for {
			if got := openapi(); got == code {
				t.Logf("%s applied %s after it was stored and announced", what, time.Since(at).Round(time.Millisecond))
				return
			}
			if time.Since(at) > patience {
				t.Fatalf("%s never applied (no %d within %s); the re-read is an hour away, so the announcement did nothing", what, code, patience)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	set := func(key, value string) func() error {
		return func() error { _, err := plane.Set(ctx, key, value, "test"); return err }
	}

	for i := range 5 {
		if code := openapi(); code != http.StatusOK {
			t.Fatalf("RATE_LIMIT_RPS=0, request %d: %d", i+1, code)
		}
	}
	// One token per 100 s and a burst of one: no refill during the test, so once the
	// rate applies, every request after the first is refused.
	if err := set(control.GatewayRateLimitBurst, "1")(); err != nil {
		t.Fatal(err)
	}
	change(control.GatewayRateLimitRPS+"=0.01", http.StatusTooManyRequests, set(control.GatewayRateLimitRPS, "0.01"))
	change(control.GatewayRateLimitRPS+"=0", http.StatusOK, set(control.GatewayRateLimitRPS, "0"))
	change("fault down on gateway", http.StatusServiceUnavailable, func() error {
		_, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "gateway", Kind: control.FaultDown}, "test")
		return err
	})
	change("clearing the fault", http.StatusOK, func() error {
		_, err := plane.ClearFaults(ctx, "gateway", "test")
		return err
	})
}
