package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/app"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// A service that consumes nothing (the gateway) follows lab.control on a connection of
// its own, so it applies changes as soon as they are announced (services/gateway's
// TestChangesApplyWhenAnnounced). The broker is only the fast way: with none to be
// reached, the service still starts at once and applies every change at its periodic
// re-read of the lab database.
func TestNoBrokerStillStartsAndAppliesChangesAtTheReRead(t *testing.T) {
	t.Parallel()
	env := testenv.ServiceEnv(t, "gateway", false)
	env["AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1/" // nothing listens there
	env["START_TIMEOUT"] = "10s"                        // a start that waited for the broker would fail
	opts := app.Options{Name: "gateway"}
	run := func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		var cfg struct{ app.Base }
		if err := app.LoadConfig(getenv, opts, &cfg, func() *app.Base { return &cfg.Base }); err != nil {
			return err
		}
		a, err := app.Start(ctx, opts, cfg.Base, cfg, stdout)
		if err != nil {
			return err
		}
		a.Settings.Resync = 100 * time.Millisecond
		return a.Run(ctx)
	}
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the service's logs:\n%s", logs)
		}
	})
	base := testenv.Run(t, run, env, logs)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := control.OpenStore(ctx, env["LAB_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	plane := &control.Plane{Store: store} // no broker: stored, not announced
	if _, err := plane.Set(ctx, control.GatewayRateLimitRPS, "7", "test"); err != nil {
		t.Fatal(err)
	}
	want := `lab_setting_info{key="gateway.rate_limit.rps",value="7"} 1`
	for {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if strings.Contains(string(b), want) {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("/metrics never showed %s: the re-read did not apply the change", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
