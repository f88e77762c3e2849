package e2e

import (
	"context"
	"encoding/json"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"microlab/lab/bench"
	"microlab/lab/stack"
	"microlab/services/platform/testenv"
)

// TestBenchQuickHasEveryNumber runs `lab bench --quick` — its own lab, every phase a
// few seconds long — and holds the report to having every section, with numbers where
// there must be some: the broker's and the database's ceiling, a rate held in each saga
// mode, latencies at every fixed rate, the cost of a checkout (messages, transactions,
// spans, CPU per process), a CPU profile of every Go process under load, the tracing
// comparison, the dashboard's delay, CPU and memory at rest and after the soak, and the
// start-up time. What the numbers are is not tested (a quick run on a shared machine
// says little); that they are there is.
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
	// The raw CPU profiles are left for `go tool pprof`, outside the report: read them
	// here, then remove them.
	var rawProfiles map[string]*profile.Profile
	if m := regexp.MustCompile(`(?m)\] \d+ CPU profiles in (\S+) `).FindStringSubmatch(progress); m == nil {
		t.Error("the progress does not say where the CPU profiles are")
	} else {
		t.Cleanup(func() { _ = os.RemoveAll(m[1]) })
		rawProfiles = readProfiles(t, m[1])
	}
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
	checkProfile(t, r.Profile, rawProfiles)
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
		for _, want := range append(stack.Names(), "jaeger") {
			if pss[want] <= 0 {
				t.Errorf("%s: no memory for %s (%v)", name, want, pss)
			}
		}
	}
	if r.Soak != nil && r.Soak.Run.Finished == 0 {
		t.Errorf("the soak finished no order: %+v", r.Soak.Run)
	}
	if st := r.Startup; st == nil || st.First <= 0 || st.Instances != len(stack.Services) { // one of each
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
		"## Saga latency at fixed rates", "## The cost of one checkout", "## Where the CPU goes", "## Tracing overhead", "## Dashboard: span to browser",
		"## CPU and memory at rest, and after the soak", "## Start-up", "**Quick run**"} {
		if !strings.Contains(string(md), section) {
			t.Errorf("benchmarks.md lacks %q", section)
		}
	}
}

// checkProfile holds the profile phase to a profile of every Go process of the lab,
// whose categories add up to what was sampled, with samples in every process a
// checkout goes through, and to the raw profiles bench left behind. users (shoppers log
// in before the run) and catalog may rightly be idle for a quick run's 3 s: 100
// samples a second of CPU see nothing of a process using less than 10 ms.
func checkProfile(t *testing.T, pr *bench.Profile, raw map[string]*profile.Profile) {
	t.Helper()
	if pr == nil {
		t.Error("no profile")
		return
	}
	if pr.Mode != "choreography" || pr.Rate <= 0 || pr.Seconds <= 0 || pr.Run.Scheduled == 0 || pr.CategoryRule == "" {
		t.Errorf("profile run: %+v", pr)
	}
	busy := []string{"dashboard", "gateway", "orders", "payments", "inventory", "shipping"}
	got := map[string]bench.ProcProfile{}
	var sum float64
	for _, p := range pr.Procs {
		got[p.Service] = p
		sum += p.Ms
		var cats float64
		for _, c := range p.Categories {
			cats += c.Ms
		}
		if math.Abs(cats-p.Ms) > 0.01 || (p.Samples > 0) != (p.Ms > 0 && p.CorePct > 0 && len(p.Top) > 0) {
			t.Errorf("profile of %s: %d samples, %.1f ms, %.1f %% of a core, %d top functions, categories %.2f ms", p.Name, p.Samples, p.Ms, p.CorePct, len(p.Top), cats)
		}
		if slices.Contains(busy, p.Service) && p.Samples <= 0 {
			t.Errorf("profile of %s: no samples, but a checkout goes through it", p.Name)
		}
		if rp := raw[p.Name]; rp == nil || int64(len(rp.Sample)) > p.Samples {
			t.Errorf("the raw profile of %s is missing or not the one summarised (%d samples)", p.Name, p.Samples)
		}
	}
	for _, svc := range stack.Names() {
		if _, ok := got[svc]; !ok {
			t.Errorf("no profile of %s (have %v)", svc, slices.Collect(maps.Keys(got)))
		}
	}
	var cats, shares float64
	for _, c := range pr.Categories {
		cats += c.Ms
		shares += c.Share
	}
	if pr.TotalMs <= 0 || math.Abs(pr.TotalMs-sum) > 0.01 || math.Abs(cats-pr.TotalMs) > 0.01 || math.Abs(shares-1) > 1e-6 {
		t.Errorf("the lab's profile: %.2f ms sampled, processes %.2f ms, categories %.2f ms (shares %.4f)", pr.TotalMs, sum, cats, shares)
	}
}

// readProfiles parses every NAME.pprof in dir.
func readProfiles(t *testing.T, dir string) map[string]*profile.Profile {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.pprof"))
	if err != nil || len(files) == 0 {
		t.Errorf("no profiles in %s (%v)", dir, err)
		return nil
	}
	out := map[string]*profile.Profile{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		p, err := profile.ParseData(raw)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		out[strings.TrimSuffix(filepath.Base(f), ".pprof")] = p
	}
	return out
}

func soakAfter(s *bench.Soak) *bench.Snapshot {
	if s == nil {
		return nil
	}
	return &s.After
}
