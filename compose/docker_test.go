package compose_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"microlab/lab/loadgen"
)

// TestDockerComposeUp is the compose lab for real, where a Docker engine is available
// (MICROLAB_DOCKER=1; this machine has none, so everything else here proves compose
// without one): `docker compose up --build --wait` on a project of its own, an order
// through the gateway, its trace in Jaeger's API and its metrics in Prometheus', then
// `down -v`. It uses the compose file's published ports (8000, 8080, 16686, 9090, …):
// stop any other lab first.
func TestDockerComposeUp(t *testing.T) {
	if os.Getenv("MICROLAB_DOCKER") != "1" {
		t.Skip("set MICROLAB_DOCKER=1 to run the compose lab in Docker (needs a Docker engine with compose v2)")
	}
	project := "microlab-test"
	compose := func(ctx context.Context, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "docker", append([]string{"compose", "-p", project, "-f", "docker-compose.yml"}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // builds take minutes: show progress
		if err := cmd.Run(); err != nil {
			t.Fatalf("docker compose %s: %v", strings.Join(args, " "), err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		down := exec.Command("docker", "compose", "-p", project, "-f", "docker-compose.yml", "down", "-v", "--remove-orphans")
		down.Stdout, down.Stderr = os.Stdout, os.Stderr
		_ = down.Run()
	})
	compose(ctx, "up", "--build", "--detach", "--wait", "--wait-timeout", "600")

	gw := loadgen.NewClient("http://127.0.0.1:8000", nil)
	var login struct{ Token string }
	if err := gw.Do(ctx, http.MethodPost, "/api/v1/auth/login", "",
		map[string]string{"email": "alice@example.com", "password": "alice-secret"}, nil, &login); err != nil {
		t.Fatalf("log in: %v", err)
	}
	var placed struct{ OrderID, TraceID string }
	if err := gw.Do(ctx, http.MethodPost, "/api/v1/orders", login.Token, map[string]any{
		"items":   []map[string]any{{"sku": "LAB-MUG", "qty": 1}},
		"payment": map[string]string{"card": "4242 4242 4242 4242"},
		"shippingAddress": map[string]string{"name": "Alice", "street": "1 Lab Street", "city": "Berlin",
			"postalCode": "10115", "country": "DE"},
	}, map[string]string{"Idempotency-Key": fmt.Sprint("docker-", time.Now().UnixNano())}, &placed); err != nil {
		t.Fatalf("place an order: %v", err)
	}
	eventually(ctx, t, "the order confirmed", func() (bool, string) {
		var o struct{ Status string }
		err := gw.Do(ctx, http.MethodGet, "/api/v1/orders/"+placed.OrderID, login.Token, nil, nil, &o)
		return err == nil && o.Status == "confirmed", fmt.Sprint(o.Status, err)
	})
	eventually(ctx, t, "its trace in Jaeger with spans of every saga service", func() (bool, string) {
		var tr struct {
			Data []struct {
				Processes map[string]struct{ ServiceName string }
			}
		}
		if err := getJSON(ctx, "http://127.0.0.1:16686/api/traces/"+placed.TraceID, &tr); err != nil || len(tr.Data) == 0 {
			return false, fmt.Sprint(err)
		}
		seen := map[string]bool{}
		for _, p := range tr.Data[0].Processes {
			seen[p.ServiceName] = true
		}
		for _, s := range []string{"gateway", "orders", "payments", "inventory", "shipping"} {
			if !seen[s] {
				return false, fmt.Sprintf("services in the trace: %v", seen)
			}
		}
		return true, ""
	})
	eventually(ctx, t, "its saga in Prometheus", func() (bool, string) {
		var r struct {
			Data struct {
				Result []struct {
					Value []any
				}
			}
		}
		q := url.QueryEscape(`sum(saga_completed_total{outcome="confirmed"})`)
		if err := getJSON(ctx, "http://127.0.0.1:9090/api/v1/query?query="+q, &r); err != nil || len(r.Data.Result) == 0 {
			return false, fmt.Sprint(err)
		}
		v, _ := r.Data.Result[0].Value[1].(string)
		return v != "" && v != "0", "saga_completed_total = " + v
	})
}

func getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// eventually polls cond every second until it holds, for at most two minutes.
func eventually(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		select {
		case <-ctx.Done():
			t.Fatalf("never saw %s (last: %s)", what, last)
		case <-time.After(time.Second):
		}
	}
}
