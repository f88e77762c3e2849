package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"microlab/lab/bench"
	"microlab/services/platform/testenv"
)

// TestBenchQuickHasEveryNumber runs `lab bench --quick` — its own lab, every phase a
// few seconds long — and holds the report to having every section, with numbers where
// there must be some: the broker's and the database's ceiling, a rate held in each saga
// mode, latencies at every fixed rate, the cost of a checkout (messages, transactions,
// spans, CPU per process), the tracing comparison, the dashboard's delay, CPU and
// memory at rest and after the soak, and the start-up time. What the numbers are is
// not tested (a quick run on a shared machine says little); that they are there is.
func TestBenchQuickHasEveryNumber(t *testing.T) {
	// bench starts a lab of its own and loads it: nothing else runs beside it.
	testenv.HoldLab(t, testenv.Heavy)
	bin := labBinary(t)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--quick", "--out", out)
	cmd.Dir = repoRoot() // bench builds the services from the repository it is run in
	cmd.Env = os.Environ()
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	start := time.Now()
	err := cmd.Run()
	t.Logf("lab bench --quick took %s", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("lab bench --quick: %v\n%s", err, logs.Tail(20000))
	}
	progress := logs.Tail(1 << 20)
	for _, phase := range bench.Phases {
		// Progress lines say their phase: "bench   1m02s  [latency+cost choreography] …".
		if !regexp.MustCompile(`(?m)^bench +\S+ +\[[^\]]*\b` + phase + `\b`).MatchString(progress) {
			t.Errorf("no progress line of phase %s", phase)
		}
	}

	raw, err := os.ReadFile(filepath.Join(out, bench.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Report
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("report:\n%s\nprogress:\n%s", raw, logs.Tail(20000))
		}
	}()
	if strings.Join(r.Phases, ",") != strings.Join(bench.Phases, ",") {
		t.Errorf("phases run: %v, want %v", r.Phases, bench.Phases)
	}
	if !r.Quick || r.Machine.Cores == 0 || r.Machine.MemoryMB == 0 || r.Commit.Hash == "unknown" || r.Date.IsZero() {
		t.Errorf("machine, commit or date missing: quick %v, %+v, %+v, %s", r.Quick, r.Machine, r.Commit, r.Date)
	}
	if c := r.Ceiling; c == nil || c.RabbitMQ == nil || c.RabbitMQ.Acked <= 0 || c.RabbitMQ.Published <= 0 || c.PostgreSQL == nil || c.PostgreSQL.TPS <= 0 {
		t.Errorf("ceiling: %+v", r.Ceiling)
	}
	for _, mode := range bench.Modes {
		found := false
		for _, m := range r.MaxRate {
			if m.Mode == mode && m.Sampling == "1" {
				found = true
				if m.Rate <= 0 || len(m.Steps) == 0 {
					t.Errorf("max rate, %s: %+v", mode, m)
				}
			}
		}
		if !found {
			t.Errorf("no max rate for %s", mode)
		}
		rates := map[float64]bool{}
		for _, run := range r.Latency {
			if run.Mode != mode {
				continue
			}
			rates[run.Rate] = true
			if run.Scheduled == 0 || run.Saga.N == 0 || run.Saga.P50 <= 0 || run.Saga.P99 < run.Saga.P50 || run.Placement.P50 <= 0 || run.CPUPerCheckoutMs <= 0 {
				t.Errorf("latency, %s at %g/s: %+v", mode, run.Rate, run)
			}
		}
		for _, want := range []float64{10, 50, 100} {
			if !rates[want] {
				t.Errorf("latency, %s: no run at %g/s", mode, want)
			}
		}
		var cost *bench.Cost
		for i := range r.Cost {
			if r.Cost[i].Mode == mode {
				cost = &r.Cost[i]
			}
		}
		if cost == nil {
			t.Errorf("no cost of a checkout in %s", mode)
			continue
		}
		if cost.Checkouts == 0 || cost.Published <= 0 || cost.Transactions <= 0 || cost.TxPerPoll <= 0 || cost.CPUAll <= 0 || cost.CPULab <= 0 {
			t.Errorf("cost, %s: %+v", mode, cost)
		}
		if s := cost.Spans; s == nil || s.Traces == 0 || s.Spans <= 0 || s.SQL <= 0 || s.Publishes <= 0 || s.Deliveries <= 0 {
			t.Errorf("spans per checkout, %s: %+v", mode, cost.Spans)
		}
		cpu := map[string]float64{}
		for _, p := range cost.CPU {
			cpu[p.Name] = p.Ms
		}
		for _, svc := range []string{"gateway", "orders", "payments", "inventory", "shipping"} {
			if cpu[svc] <= 0 {
				t.Errorf("cost, %s: no CPU for %s (%v)", mode, svc, cpu)
			}
		}
	}
	if tr := r.Tracing; tr == nil || tr.CPUOnMs <= 0 || tr.CPUOffMs <= 0 || tr.MaxOn <= 0 || tr.MaxOff <= 0 || tr.OffRun == nil {
		t.Errorf("tracing: %+v", r.Tracing)
	}
	if d := r.Dashboard; d == nil || d.Seen == 0 || d.Delay.P50 <= 0 {
		t.Errorf("dashboard delay: %+v", r.Dashboard)
	}
	for name, snap := range map[string]*bench.Snapshot{"at rest": r.Rest, "after the soak": soakAfter(r.Soak)} {
		if snap == nil || snap.LabPSSMB <= 0 || snap.MaxServiceMB <= 0 {
			t.Errorf("%s: %+v", name, snap)
			continue
		}
		pss := map[string]float64{}
		for _, p := range snap.Procs {
			pss[p.Name] = p.PSSMB
		}
		for _, want := range []string{"dashboard", "gateway", "users", "catalog", "orders", "payments", "inventory", "shipping", "notifications", "jaeger"} {
			if pss[want] <= 0 {
				t.Errorf("%s: no memory for %s (%v)", name, want, pss)
			}
		}
	}
	if r.Soak != nil && r.Soak.Run.Finished == 0 {
		t.Errorf("the soak finished no order: %+v", r.Soak.Run)
	}
	if st := r.Startup; st == nil || st.First <= 0 || st.Instances != 9 {
		t.Errorf("start-up: %+v", r.Startup)
	}
	if len(r.Targets) != 11 {
		t.Errorf("%d targets, want 11", len(r.Targets))
	}
	for _, tg := range r.Targets {
		if tg.Measured == "" || tg.By == "" {
			t.Errorf("target %q not measured: %+v", tg.Name, tg)
		}
	}

	md, err := os.ReadFile(filepath.Join(out, bench.MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"## Targets (issue 11)", "## Infrastructure ceiling", "## Maximum sustained checkout rate",
		"## Saga latency at fixed rates", "## The cost of one checkout", "## Tracing overhead", "## Dashboard: span to browser",
		"## CPU and memory at rest, and after the soak", "## Start-up", "**Quick run**"} {
		if !strings.Contains(string(md), section) {
			t.Errorf("benchmarks.md lacks %q", section)
		}
	}
}

func soakAfter(s *bench.Soak) *bench.Snapshot {
	if s == nil {
		return nil
	}
	return &s.After
}
