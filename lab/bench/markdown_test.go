package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sample is a report as a full run fills it, with numbers chosen so that some targets
// are met and some missed.
func sample() *Report {
	run := func(mode string, rate float64, held bool, p50, p99 float64) LoadRun {
		frac := 1.0
		if !held {
			frac = 0.8
		}
		return LoadRun{Mode: mode, Sampling: "1", Rate: rate, Seconds: 30, Scheduled: int64(rate * 30), Placed: int64(rate * 30),
			Finished: int64(rate * 30), Completed: int64(frac * rate * 30), Fraction: frac, Throughput: frac * rate, Held: held,
			Placement: Latency{N: 10, P50: 8, P95: 15, P99: 20, Max: 30}, Saga: Latency{N: 10, P50: p50, P95: p99 - 10, P99: p99, Max: p99 + 50},
			CPUPerCheckoutMs: 31.5, OtherCores: 0.12}
	}
	snap := func(pss float64) Snapshot {
		return Snapshot{WindowS: 30, LabCPU: 3.2, LabPSSMB: pss, LabRSSMB: pss * 1.4, SharedCPU: 2.5, SharedPSSMB: 180,
			MaxServiceMB: 42, MaxService: "orders", OtherCores: 0.05,
			Procs: []ProcMem{
				{Name: "orders", Kind: kindService, Count: 1, CPU: 0.4, RSSMB: 60, PSSMB: 42},
				{Name: "dashboard", Kind: kindDashboard, Count: 1, CPU: 0.6, RSSMB: 70, PSSMB: 40},
				{Name: "jaeger", Kind: kindObs, Count: 1, CPU: 0.3, RSSMB: 90, PSSMB: 85},
				{Name: groupPGLab, Kind: kindPostgres, Count: 14, CPU: 0.1, RSSMB: 200, PSSMB: 60},
				{Name: groupRabbit, Kind: kindRabbit, Count: 2, CPU: 2.3, RSSMB: 150, PSSMB: 140},
				{Name: groupGenerator, Kind: kindGenerator, Count: 1, CPU: 0.1, RSSMB: 30, PSSMB: 28},
			}}
	}
	cost := func(mode string) Cost {
		return Cost{Mode: mode, Sampling: "1", Rate: 50, Checkouts: 1500, Held: mode == "choreography", Published: 9.1, Delivered: 20.2, Acked: 20.2,
			Transactions: 17.4, TxByDatabase: map[string]float64{"orders": 9.3, "payments": 2.1, "users": 0.01}, IdleTxPerS: 0.5,
			PollsPerOrder: 2.4, CPUAll: 36.7, CPULab: 24.1, Seconds: 31,
			Spans: &Spans{Traces: 20, Spans: 179, SQL: 140, Statements: 110, Commits: 12, Publishes: 9, Deliveries: 11, HTTP: 4, Min: 170, Max: 190, Source: "the SQL spans"},
			CPU:   []ProcCPU{{Name: "orders", Kind: kindService, Ms: 7.5}, {Name: groupPGShared, Kind: kindPostgres, Ms: 1.2}, {Name: groupRabbit, Kind: kindRabbit, Ms: 6.1}}}
	}
	r := &Report{
		Date:    time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		WallS:   2100,
		Commit:  Commit{Hash: "0123456789abcdef", Branch: "bench", Dirty: true},
		Machine: Machine{Cores: 2, CPUModel: "Test CPU @ 3GHz", MemoryMB: 24105, Kernel: "linux 6.1", Go: "go1.26", PostgreSQL: "15.20", RabbitMQ: "3.12.1", Erlang: "25.2", LoadStart: [3]float64{1, 2, 3}},
		Settings: Settings{DBPrefix: "mlbench_abc_", VHost: "microlab-bench-abc", PortOffset: 4242, Build: "go build", Env: []string{"RATE_LIMIT_RPS=0"},
			Mix: "ok=80,declined=10,oos=5,xx=5", Shoppers: 20, DeadlineS: 5, HoldFraction: 0.99, FixedRates: []int{10, 50, 100}, FixedS: 30, StepS: 20,
			SearchFrom: 25, CostRate: 50, IdleS: 30, SoakRate: 50, SoakS: 600, CeilingS: 15, ProfileS: 15},
		Phases: Phases,
		Ceiling: &Ceiling{
			RabbitMQ:   &RabbitCeiling{Publishers: 2, Consumers: 2, Bytes: 512, InFlight: 256, Prefetch: 256, Seconds: 15, Published: 12000, Acked: 11800, ConfirmP50: 9.5, ConfirmP99: 40},
			PostgreSQL: &PostgresCeiling{Method: "Go", Clients: 8, Transaction: postgresTx, Seconds: 15, TPS: 4100, P50: 1.8, P99: 7},
		},
		Startup: &Startup{Instances: 9, First: 3.21, Launches: []float64{3.21, 2.9}},
		Latency: []LoadRun{run("choreography", 10, true, 40, 90), run("choreography", 50, true, 45, 180), run("choreography", 100, false, 900, 4800),
			run("orchestration", 50, true, 60, 140)},
		Cost: []Cost{cost("choreography"), cost("orchestration")},
		MaxRate: []MaxRate{
			{Mode: "choreography", Sampling: "1", Rate: 60, Ceiling: 70, Steps: []LoadRun{run("choreography", 25, true, 40, 90), run("choreography", 70, false, 2000, 6000)},
				MsgsPerS: 546, MsgsShare: 0.046, TxPerS: 1044, TxShare: 0.25},
			{Mode: "orchestration", Sampling: "1", Rate: 45, Ceiling: 50, Steps: []LoadRun{run("orchestration", 45, true, 50, 120)}},
		},
		Tracing:   &Tracing{MaxOn: 60, MaxOff: 70, Overhead: 1 - 60.0/70, CPUOnMs: 36, CPUOffMs: 28, CPUGrowth: 36.0/28 - 1, Rate: 50, Off: &MaxRate{Mode: "choreography", Sampling: "0", Rate: 70}},
		Dashboard: &Dashboard{Rate: 50, Seconds: 20, Clients: 1, Traces: 1000, Seen: 998, Delay: Latency{N: 998, P50: 210, P95: 480, P99: 700, Max: 900}},
		Notes:     []string{"a note | with a pipe"},
	}
	orders := ProcProfile{Name: "orders-1", Service: "orders", Samples: 420, Ms: 4200, CorePct: 28,
		Top:        []FuncCPU{{Name: "runtime.mallocgc", Ms: 420, Share: 0.1}, {Name: "github.com/jackc/pgx/v5/pgconn.(*PgConn).Exec", Ms: 210, Share: 0.05}},
		Categories: []CategoryCPU{{Name: "PostgreSQL client (pgx)", Ms: 2200, Share: 0.52}, {Name: catRuntime, Ms: 2000, Share: 0.48}}}
	gateway := ProcProfile{Name: "gateway-1", Service: "gateway", Samples: 180, Ms: 1800, CorePct: 12,
		Top:        []FuncCPU{{Name: "internal/runtime/syscall.Syscall6", Ms: 540, Share: 0.3}},
		Categories: []CategoryCPU{{Name: "syscalls (network reads and writes)", Ms: 1800, Share: 1}}}
	procs := []ProcProfile{orders, gateway, {Name: "users-1", Service: "users"}}
	r.Profile = &Profile{Mode: "choreography", Rate: 55, RateFrom: "90 % of the highest rate held in choreography (60/s)", Seconds: 15,
		Run: run("choreography", 55, true, 45, 130), Procs: procs, CategoryRule: categoryRule}
	r.Profile.TotalMs, r.Profile.CorePct, r.Profile.Categories = whole(procs, 15*time.Second)
	r.Latency[2].Refused, r.Latency[2].RefusedBy = 5, map[string]int64{"no answer": 2, "503": 3}
	rest := snap(700)
	r.Rest = &rest
	r.Soak = &Soak{Run: run("choreography", 50, true, 45, 120), After: snap(1100), Fresh: true}
	r.Soak.Run.Seconds = 600
	r.Targets = targets(r)
	return r
}

func TestMarkdownHasEverySection(t *testing.T) {
	out := Markdown(sample())
	for _, want := range []string{
		"# microlab benchmarks",
		"Commit `0123456789abcdef` (bench, **with uncommitted changes**)",
		"2 cores (Test CPU @ 3GHz), 23.5 GiB memory",
		"## Targets (issue 11)",
		"## Settings", "the cost of a checkout at 50/s; CPU profiles over 15 s;",
		"## Infrastructure ceiling (same run)",
		"11800 msgs/s acked", "4100 transactions/s",
		"## Maximum sustained checkout rate",
		"**60/s**", "546 msgs/s = 4.6 % of the ceiling", "1044 tx/s = 25.0 % of the ceiling",
		"## Saga latency at fixed rates",
		"| choreography | 100 % sampled | 100/s | **no** |",
		"## The cost of one checkout", "| choreography at 50/s | orchestration at 50/s (not held) |", "/ 5 / 0 (503 ×3, no answer ×2) |",
		"| messages published | 9.1 | 9.1 |", "orders 9.3, payments 2.1 |", "| spans | 179.0 | 179.0 |",
		"| rabbitmq (shared: beam.smp) | 6.1 | 6.1 |",
		"[Where the CPU goes](#where-the-cpu-goes) below is the profile",
		"## Where the CPU goes", "while choreography ran at 55/s, 90 % of the highest rate held in choreography (60/s), for 30 s",
		"**6000 ms of CPU, 40 % of one core**",
		"| orders-1 | 4200 | 28.0 | `runtime.mallocgc` 10 %, `pgconn.(*PgConn).Exec` 5 % |",
		"| gateway-1 | 1800 | 12.0 | `syscall.Syscall6` 30 % |",
		"| users-1 | 0 | 0.0 | no samples (the profiler takes one per 10 ms of CPU) |",
		"| PostgreSQL client (pgx) | `github.com/jackc` | 2200 | 36.7 % | orders-1, 2200 ms (100 % of the row) |",
		"| " + catRuntime + " | – | 2000 | 33.3 % |",
		"| JSON (encoding/json) | `encoding/json` | 0 | 0.0 % | – |",
		"| **all** |  | **6000** | 100 % |  |",
		"walking its stack from the leaf", "How to read it: the category table puts every sample in exactly one row",
		"## Tracing overhead", "14.3 % less throughput", "+28.6 % CPU",
		"## Dashboard: span to browser", "| 210 ms | 480 ms | 700 ms | 900 ms |",
		"## CPU and memory at rest, and after the soak", "| **the lab** | **3.2** | 980 | **700** | **3.2** | 1540 | **1100** |",
		"## Start-up", "**3.21 s** the first time",
		"## Notes from this run", "- a note | with a pipe",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(out, "Quick run") {
		t.Error("a full run's report says it is a quick one")
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	}
}

func TestTargetsSayByHowMuch(t *testing.T) {
	r := sample()
	got := map[string]Target{}
	for _, tg := range r.Targets {
		got[tg.Name] = tg
	}
	for name, want := range map[string]struct {
		met bool
		by  string
	}{
		"sustained checkouts/s (choreography, 100 % tracing)":  {false, "missed by 90.0/s (60 %)"},
		"orchestration within 20 % of choreography":            {false, "missed by 5.0 points"},
		"saga p50 at 50/s (choreography)":                      {true, "met, by 5.0 ms (10 %)"},
		"saga p99 at 50/s (choreography)":                      {false, "missed by 30.0 ms (20 %)"},
		"saga p99 at 50/s (orchestration)":                     {true, "met, by 10.0 ms (7 %)"},
		"tracing overhead (throughput, 100 % vs 0 % sampling)": {false, "missed by 4.3 points"},
		"whole lab PSS after the soak":                         {false, "missed by 76.0 MiB (7 %)"},
		"every Go service's PSS after the soak":                {true, "met, by 58.0 MiB (58 %)"},
		"idle CPU of the whole lab":                            {true, "met, by 1.8 points"},
		"lab up to all-healthy (built binaries)":               {true, "met, by 6.8 s (68 %)"},
	} {
		tg, ok := got[name]
		if !ok {
			t.Errorf("no target %q (have %v)", name, got)
			continue
		}
		if tg.Met != want.met || tg.By != want.by || tg.Measured == "" {
			t.Errorf("%s: met %v by %q (measured %q); want met %v by %q", name, tg.Met, tg.By, tg.Measured, want.met, want.by)
		}
	}
	if len(r.Targets) != 11 {
		t.Errorf("%d targets, want 11 (p50 and p99 in each mode)", len(r.Targets))
	}
}

func TestMissingPhasesAreSaidNotZero(t *testing.T) {
	r := &Report{Quick: true, Date: time.Now(), Phases: []string{PhaseCeiling}}
	r.Targets = targets(r)
	out := Markdown(r)
	if !strings.Contains(out, "Quick run") {
		t.Error("a quick report does not say so")
	}
	for _, tg := range r.Targets {
		if tg.Met || tg.Measured != "" || !strings.Contains(tg.By, "did not run") {
			t.Errorf("target %q without its phase: %+v", tg.Name, tg)
		}
	}
	for _, absent := range []string{"## Maximum sustained", "## The cost of one checkout", "## Start-up", "## Where the CPU goes", "#where-the-cpu-goes"} {
		if strings.Contains(out, absent) {
			t.Errorf("a section without data: %q", absent)
		}
	}
}

// A profile phase that ran without a profile (every process refused) says so.
func TestProfilePhaseWithoutProfileIsSaid(t *testing.T) {
	r := &Report{Quick: true, Date: time.Now(), Phases: []string{PhaseCeiling, PhaseUp, PhaseProfile},
		Notes: []string{"no CPU profile from 9 of 9 processes: …"}}
	r.Targets = targets(r)
	out := Markdown(r)
	if !strings.Contains(out, "## Where the CPU goes\n\nThe profile phase ran but no process gave a CPU profile: see the notes.") {
		t.Errorf("a profile phase without profiles is not said:\n%s", out)
	}
}

func TestWriteReplacesBothFiles(t *testing.T) {
	dir := t.TempDir()
	r := sample()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.MaxRate[0].Rate != 60 || back.Cost[1].Spans.Spans != 179 || back.Soak.After.LabPSSMB != 1100 ||
		back.Profile == nil || len(back.Profile.Procs) != 3 || back.Profile.Procs[0].Top[1].Name != "github.com/jackc/pgx/v5/pgconn.(*PgConn).Exec" ||
		back.Profile.Categories[0].Name != "PostgreSQL client (pgx)" {
		t.Errorf("the JSON twin does not hold the report: %+v", back)
	}
	md, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
	if err != nil || string(md) != Markdown(r) {
		t.Errorf("benchmarks.md is not the rendering (%v)", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("%d files in the directory, want the two", len(ents))
	}
}

func TestPGBackendDB(t *testing.T) {
	for title, want := range map[string]string{
		"postgres: 15/main: mlbench_x_orders mlbench_x_orders 127.0.0.1(51234) idle": "mlbench_x_orders",
		"postgres: alice shop [local] SELECT":                                        "shop",
		"postgres: 15/main: checkpointer":                                            "",
		"postgres: 15/main: autovacuum launcher":                                     "",
		"/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main":         "",
	} {
		if got := pgBackendDB(title); got != want {
			t.Errorf("pgBackendDB(%q) = %q, want %q", title, got, want)
		}
	}
}

func TestProcReaders(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if st.comm == "" || st.start == 0 {
		t.Errorf("own stat: %+v", st)
	}
	if rss, pss, err := memory(os.Getpid()); err != nil || rss == 0 || pss == 0 {
		t.Errorf("own memory: rss %d pss %d (%v)", rss, pss, err)
	}
	a := sampleCPU([]member{{pid: os.Getpid(), group: "me", kind: kindGenerator}})
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); { // burn a little CPU
	}
	b := sampleCPU([]member{{pid: os.Getpid(), group: "me", kind: kindGenerator}})
	groups, _ := cpuBetween(a, b)
	if len(groups) != 1 || groups[0].seconds <= 0 || groups[0].count != 1 {
		t.Errorf("own CPU between two samples: %+v", groups)
	}
}
