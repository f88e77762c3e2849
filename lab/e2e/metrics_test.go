package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/dashboard/views"
	"microlab/lab/stack"
	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/testenv"
)

// promResult is one series of an instant query.
type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promQuery runs an instant query against Prometheus' HTTP API.
func promQuery(ctx context.Context, base, expr string) ([]promResult, error) {
	u := base + "/api/v1/query?query=" + url.QueryEscape(expr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("decode answer to %s: %w", expr, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s", expr, body.Error)
	}
	if body.Data.ResultType == "scalar" {
		var v [2]any
		if err := json.Unmarshal(body.Data.Result, &v); err != nil {
			return nil, err
		}
		return []promResult{{Value: v}}, nil
	}
	var out []promResult
	if err := json.Unmarshal(body.Data.Result, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", expr, err)
	}
	return out, nil
}

// hasNumber reports whether some series has a real (not NaN) value: a p95 over a
// window without observations is NaN, which a panel shows as no data.
func hasNumber(rs []promResult) bool {
	for _, r := range rs {
		s, _ := r.Value[1].(string)
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) {
			return true
		}
	}
	return false
}

// TestMetricsDashboardsAndRules runs the lab under a little load with a real
// Prometheus scraping it, then checks what a learner will look at: every service's
// /metrics is valid exposition format (promtool), every target is up, every rule is
// loaded and healthy, and every query of every Grafana panel and every recording rule
// returns data. A panel that would stay empty fails here.
func TestMetricsDashboardsAndRules(t *testing.T) {
	t.Parallel()
	promtool := requireTool(t, "promtool", "apt-get install -y prometheus")
	// Spans are sampled: the dashboard's panels chart what it receives.
	l := startLab(t, labOptions{sampling: "1"})
	prom := startPrometheus(t, l)
	token := l.api.login(t, "alice@example.com", "alice-secret")

	// Every outcome in both modes, then a trickle of orders and product reads so rates
	// are not zero.
	for _, mode := range []string{contracts.ModeChoreography, contracts.ModeOrchestration} {
		l.set("saga.mode", mode)
		batch := mixedBatch(8)
		ids := placeBatch(t, l, batch, 4, []string{token})
		awaitBatch(t, l, batch, ids, []string{token}, time.Minute)
	}
	// A malformed message, so the retry and DLQ series have something to show too.
	l.republish(t, amqp.Delivery{Exchange: contracts.ExchangeEvents, RoutingKey: contracts.OrderPlaced,
		MessageId: "poison-1", Type: contracts.OrderPlaced, Body: []byte(`{not json`)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		batch := mixedBatch(4)
		for i := 0; ctx.Err() == nil; i++ {
			_, _ = placeOne(l, token, batch[i%len(batch)].req)
			// A product read too, as a shopper browses: the gateway's own catalog calls
			// (its answers by version, the canary's chart) have a rate as well.
			_, _ = l.api.do(ctx, http.MethodGet, "/api/v1/products", "", nil, nil, nil)
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	t.Run("promtool check metrics", func(t *testing.T) {
		for _, s := range stack.Services {
			body := get(t, l.cfg.URL(s)+"/metrics")
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = bytes.NewReader(body)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s /metrics: promtool check metrics: %v\n%s", s.Name, err, out)
			}
		}
	})

	qctx, qcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer qcancel()
	// Wait until Prometheus has scraped the outcome of the load. Rates need two samples
	// and recording rules an evaluation over them: every check below waits for its own
	// condition, within the same generous deadline, rather than a fixed time.
	waitProm(t, qctx, prom, `sum(saga_completed_total) >= 16`)

	t.Run("targets up", func(t *testing.T) {
		var problems []string
		eventually(qctx, func() bool {
			problems = nil
			rs, err := promQuery(qctx, prom, `up`)
			if err != nil {
				problems = append(problems, err.Error())
				return false
			}
			jobs := map[string]bool{}
			for _, r := range rs {
				if r.Value[1] != "1" {
					problems = append(problems, fmt.Sprintf("target %v is down", r.Metric))
				}
				jobs[r.Metric["job"]] = true
			}
			for _, s := range stack.Services {
				if !jobs[s.Name] {
					problems = append(problems, fmt.Sprintf("no scrape target for %s (jobs: %v)", s.Name, jobs))
				}
			}
			if !jobs["rabbitmq"] {
				problems = append(problems, fmt.Sprintf("RabbitMQ's Prometheus plugin is not scraped (jobs: %v)", jobs))
			}
			return len(problems) == 0
		})
		for _, p := range problems {
			t.Error(p)
		}
	})

	t.Run("rules loaded and healthy", func(t *testing.T) {
		want, err := observability.RuleExprs(observability.Assets())
		if err != nil {
			t.Fatal(err)
		}
		// A rule's health is "unknown" until its group's first evaluation.
		var problems []string
		eventually(qctx, func() bool {
			problems = nil
			var body struct {
				Data struct {
					Groups []struct {
						Name  string `json:"name"`
						Rules []struct {
							Name      string `json:"name"`
							Health    string `json:"health"`
							LastError string `json:"lastError"`
						} `json:"rules"`
					} `json:"groups"`
				} `json:"data"`
			}
			if err := json.Unmarshal(get(t, prom+"/api/v1/rules"), &body); err != nil {
				problems = append(problems, err.Error())
				return false
			}
			loaded := 0
			for _, g := range body.Data.Groups {
				for _, r := range g.Rules {
					loaded++
					if r.Health != "ok" {
						problems = append(problems, fmt.Sprintf("rule %s/%s: health %s: %s", g.Name, r.Name, r.Health, r.LastError))
					}
				}
			}
			if loaded != len(want) {
				problems = append(problems, fmt.Sprintf("Prometheus loaded %d rules; the rule files have %d", loaded, len(want)))
			}
			return len(problems) == 0
		})
		for _, p := range problems {
			t.Error(p)
		}
	})

	t.Run("recording rules return data", func(t *testing.T) {
		rules, err := observability.RuleExprs(observability.Assets())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if r.Kind != "record" {
				// An alert's expression must parse and run; whether it returns series
				// depends on whether it fires.
				if _, err := promQuery(qctx, prom, r.Expr); err != nil {
					t.Errorf("%s %s: %v", r.Kind, r.Name, err)
				}
				continue
			}
			if err := awaitData(qctx, prom, r.Expr); err != nil {
				t.Errorf("recording rule %s returns no data in a lab under load: %s (%v)", r.Name, r.Expr, err)
			}
		}
	})

	// The map shows a message-driven service at work: payments answers almost no HTTP,
	// but handles every order's messages, and its label says so.
	t.Run("the map shows message rates", func(t *testing.T) {
		d, _ := stack.Find(stack.Dashboard)
		var h views.Health
		eventually(qctx, func() bool {
			h = views.Health{}
			_ = json.Unmarshal(get(t, l.cfg.URL(d)+"/api/health"), &h)
			p := h.Services["payments"]
			return p.Consumes && p.MsgRate > 0
		})
		p := h.Services["payments"]
		if !p.Consumes || p.MsgRate <= 0 || !strings.Contains(p.Label(), " msg/s") {
			t.Fatalf("payments on the map: %+v, label %q: want its message rate", p, p.Label())
		}
		if gw := h.Services["gateway"]; gw.Consumes {
			t.Errorf("gateway consumes no queue, yet the map gives it a message rate: %+v", gw)
		}
	})

	t.Run("every Grafana panel has data", func(t *testing.T) {
		panels, err := observability.PanelQueries(observability.Assets())
		if err != nil {
			t.Fatal(err)
		}
		if len(panels) < 10 {
			t.Fatalf("only %d panel queries found", len(panels))
		}
		for _, p := range panels {
			expr := observability.ExpandGrafanaVars(p.Expr)
			if err := awaitData(qctx, prom, expr); err != nil {
				t.Errorf("%s / %s [%s]: no data: %s (%v)", p.Dashboard, p.Panel, p.RefID, expr, err)
			}
		}
	})
}

// eventually calls cond every second until it is true or ctx ends.
func eventually(ctx context.Context, cond func() bool) {
	for !cond() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// awaitData waits until an instant query returns a real number. A query Prometheus
// refuses fails at once: waiting cannot fix it.
func awaitData(ctx context.Context, prom, expr string) error {
	var last error
	eventually(ctx, func() bool {
		rs, err := promQuery(ctx, prom, expr)
		switch {
		case err != nil && ctx.Err() == nil:
			last = err
			return true
		case hasNumber(rs):
			last = nil
			return true
		}
		last = fmt.Errorf("no number yet")
		return false
	})
	if last == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return last
}

func waitProm(t *testing.T, ctx context.Context, prom, expr string) {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		rs, err := promQuery(ctx, prom, expr)
		if err == nil && len(rs) > 0 {
			return
		}
		last = err
		time.Sleep(time.Second)
	}
	t.Fatalf("Prometheus never answered %s (last error: %v)", expr, last)
}

func get(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", u, resp.Status, err)
	}
	return b
}

// requireTool finds a command on PATH (missing: fails under CI=true, skips otherwise).
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Missing(t, name, install, err)
	}
	return p
}
