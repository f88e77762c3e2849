package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"microlab/services/platform/testenv"
)

// run starts against a real lab database and broker, serves, answers ready, exposes
// its metrics, logs its config with passwords masked, and stops on cancel.
func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	env := testenv.Env{
		"HTTP_ADDR":        testenv.AnyAddr,
		"LAB_DATABASE_URL": testenv.DB(t, testenv.Name("t_dash_")),
		"AMQP_URL":         testenv.VHost(t),
		"PROMETHEUS_URL":   closedURL(t),
		"HEALTH_INTERVAL":  "1s",
	}
	var logs testenv.LogBuffer
	base, stop := testenv.Start(t, run, env, &logs)
	defer stop()
	for _, path := range []string{"/", "/metrics", "/static/ws.js"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
		if path == "/metrics" && !strings.Contains(string(b), "http_server_requests_total") {
			t.Error("/metrics lacks the RED metrics")
		}
	}
	stop()
	out := logs.String()
	if !strings.Contains(out, `"msg":"starting"`) || !strings.Contains(out, "guest:****@") || strings.Contains(out, "guest:guest@") {
		t.Errorf("config not logged once, masked:\n%s", out)
	}
}
