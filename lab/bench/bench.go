// Package bench is `lab bench`: it brings a lab of its own up (or measures the one
// running), drives it with lab/loadgen — the generator behind `lab load` — and measures,
// in one run, what issue 11 and DESIGN.md §12 ask of the lab: the infrastructure's
// ceiling, the highest checkout rate held in each saga mode, saga latency at fixed
// rates, the cost of one checkout (messages, transactions, statements, spans, CPU per
// process), where the Go processes' CPU goes (their CPU profiles under load), the price
// of tracing, the dashboard's span-to-browser delay, the lab's CPU
// and memory at rest and after a soak, and the time to all-healthy. Run returns a
// Report; Write renders it to docs/benchmarks.md and its JSON twin.
//
// Every number comes from this machine in this run, with the settings it was measured
// under, so a reader can repeat it; where a phase could not measure something the
// report says so instead of printing a zero.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/lab/loadgen"
	"microlab/lab/stack"
	"microlab/services/platform/pg"
)

// The phases, in the order they run.
const (
	PhaseCeiling   = "ceiling"   // RabbitMQ and PostgreSQL on their own
	PhaseUp        = "up"        // lab up to all-healthy
	PhaseIdle      = "idle"      // CPU and memory at rest
	PhaseLatency   = "latency"   // saga latency at fixed rates, each mode
	PhaseCost      = "cost"      // the cost of one checkout, each mode
	PhaseMaxRate   = "maxrate"   // the highest rate held, each mode
	PhaseProfile   = "profile"   // CPU profiles of the Go processes under load
	PhaseDashboard = "dashboard" // span-to-browser delay
	PhaseTracing   = "tracing"   // 100 % vs 0 % sampling
	PhaseSoak      = "soak"      // a long steady run, then CPU and memory again
)

// Phases lists every phase in running order.
var Phases = []string{PhaseCeiling, PhaseUp, PhaseIdle, PhaseLatency, PhaseCost, PhaseMaxRate, PhaseProfile, PhaseDashboard, PhaseTracing, PhaseSoak}

// Modes are the saga modes measured.
var Modes = []string{"choreography", "orchestration"}

// Options is one bench run.
type Options struct {
	Root          string       // the module's root: the services are built from it; its commit is reported
	Stack         stack.Config // the infrastructure (AdminDatabaseURL, AMQPURL); with UseRunning, the running lab
	ManagementURL string       // RabbitMQ's management API
	// BinDir is where `lab up` builds the services and Jaeger (plain builds, no -race):
	// bench builds into it too, relinking only what changed ("": a temporary directory).
	BinDir     string
	UseRunning bool // measure the lab already running instead of starting one
	Quick      bool // a few seconds per phase: for tests, not for reading
	Soak       time.Duration
	Phases     []string // nil: all
	Mix        loadgen.Mix
	Browse     int
	Shoppers   int      // 0: 20 (quick: 4)
	Env        []string // extra environment for every service of bench's own lab
	Progress   io.Writer
}

// plan is how long and how hard each phase runs.
type plan struct {
	ceiling, ceilingWarm    time.Duration
	pgClients               int
	settleLaunch, idle      time.Duration
	fixed, fixedFollow      time.Duration
	rates                   []int
	profile, profileLoad    time.Duration // each CPU profile's window, and the run it is taken in
	costRate                float64
	step, stepFollow        time.Duration
	from, factor            float64
	maxSteps                int
	bisect                  bool
	dashboard               time.Duration
	dashRate                float64
	soak                    time.Duration
	soakRate                float64
	quietWithin, quietExtra time.Duration
	progressEvery           time.Duration
	shoppers, traces        int
	deadline                time.Duration
	hold                    float64
	tracingSearch           bool
	searchLimit             float64
}

func newPlan(o *Options) plan {
	p := plan{
		ceiling: 15 * time.Second, ceilingWarm: 2 * time.Second, pgClients: 8,
		settleLaunch: 10 * time.Second, idle: 30 * time.Second,
		fixed: 30 * time.Second, fixedFollow: 30 * time.Second, rates: []int{10, 50, 100}, costRate: 50,
		profile: 15 * time.Second, profileLoad: 20 * time.Second,
		step: 20 * time.Second, stepFollow: 10 * time.Second, from: 25, factor: 1.5, maxSteps: 10, bisect: true,
		dashboard: 20 * time.Second, dashRate: 50,
		soak: 10 * time.Minute, soakRate: 50,
		quietWithin: 3 * time.Minute, quietExtra: time.Second,
		progressEvery: 5 * time.Second, shoppers: 20, traces: 20,
		deadline: 5 * time.Second, hold: 0.99, tracingSearch: true, searchLimit: 1000,
	}
	if o.Quick {
		// Every measurement once, as briefly as it still yields numbers: for tests.
		p.ceiling, p.ceilingWarm = 2*time.Second, 500*time.Millisecond
		p.settleLaunch, p.idle = time.Second, 2*time.Second
		p.fixed, p.fixedFollow, p.costRate = time.Second, 6*time.Second, 10
		p.profile, p.profileLoad = 3*time.Second, 5*time.Second
		p.step, p.stepFollow, p.from, p.factor, p.maxSteps, p.bisect = 2*time.Second, 6*time.Second, 5, 2, 2, false
		p.dashboard, p.dashRate = 2*time.Second, 10
		p.soak, p.soakRate = 3*time.Second, 10
		p.quietWithin, p.quietExtra = time.Minute, 200*time.Millisecond
		p.progressEvery, p.shoppers, p.traces = 2*time.Second, 4, 5
		p.tracingSearch = false
	}
	if o.Soak > 0 {
		p.soak = o.Soak
	}
	if o.Shoppers > 0 {
		p.shoppers = o.Shoppers
	}
	return p
}

// bench is one run under way.
type bench struct {
	o      *Options
	p      plan
	r      *Report
	m      *mgmt
	l      *labRun
	start  time.Time
	phase  string
	mu     sync.Mutex
	idleTx float64 // the lab's transactions per second at rest
	// cleanup are directories to remove at the end (the services' binaries) unless the
	// lab took them over.
	cleanup []string
	costOf  map[string]*Cost
}

func (b *bench) say(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	el := time.Since(b.start).Round(time.Second)
	fmt.Fprintf(b.o.Progress, "bench %8s  [%s] %s\n", el, b.phase, fmt.Sprintf(format, args...))
}

func (b *bench) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.r.Notes = append(b.r.Notes, msg)
	b.say("note: %s", msg)
}

func (b *bench) wants(phase string) bool {
	return len(b.o.Phases) == 0 || slices.Contains(b.o.Phases, phase)
}

// CheckPhases refuses a phase name that does not exist.
func CheckPhases(names []string) error {
	for _, n := range names {
		if !slices.Contains(Phases, n) {
			return fmt.Errorf("unknown phase %q (phases: %s)", n, strings.Join(Phases, ","))
		}
	}
	return nil
}

// Run measures the lab as o says and returns the report. It fails only when the run
// cannot go on (no broker, no database, a lab that does not start, an interruption);
// a measurement that fails on its own is a note in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if err := CheckPhases(o.Phases); err != nil {
		return nil, err
	}
	if o.Mix == nil {
		o.Mix = loadgen.DefaultMix
	}
	b := &bench{o: &o, p: newPlan(&o), start: time.Now(), phase: "start", costOf: map[string]*Cost{}}
	b.r = &Report{Quick: o.Quick, Date: b.start.UTC().Truncate(time.Second), Machine: machine(), Commit: commit(o.Root)}
	var err error
	if b.m, err = newMgmt(o.ManagementURL); err != nil {
		return nil, err
	}
	if err := b.describe(ctx); err != nil {
		return nil, err
	}
	err = b.phases(ctx)
	for _, d := range b.cleanup {
		_ = os.RemoveAll(d)
	}
	if b.l != nil {
		b.phase = "stop"
		if b.l.own {
			b.say("stopping the lab, dropping its databases and vhost")
		}
		if cerr := b.l.close(ctx, b.m, func(s string) { b.say("%s", s) }); cerr != nil {
			b.note("cleaning up: %v", cerr)
		}
	}
	if err != nil {
		return nil, err
	}
	b.r.Machine.LoadEnd = loadAvg()
	b.r.Targets = targets(b.r)
	b.r.WallS = time.Since(b.start).Seconds()
	b.phase = "done"
	b.say("done in %s", time.Since(b.start).Round(time.Second))
	return b.r, nil
}

// describe fills in the versions of the infrastructure and the settings of the run.
func (b *bench) describe(ctx context.Context) error {
	r := b.r
	var err error
	if r.Machine.RabbitMQ, r.Machine.Erlang, err = b.m.versions(ctx); err != nil {
		return fmt.Errorf("%w (is the management plugin on? rabbitmq-plugins enable rabbitmq_management)", err)
	}
	conn, err := pgx.Connect(ctx, b.o.Stack.AdminDatabaseURL)
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var fsync, sc, sb, spl string
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'),
		current_setting('shared_buffers'), current_setting('shared_preload_libraries')`).Scan(&r.Machine.PostgreSQL, &fsync, &sc, &sb, &spl); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	r.Machine.PGSettings = fmt.Sprintf("fsync=%s synchronous_commit=%s shared_buffers=%s shared_preload_libraries=%q", fsync, sc, sb, spl)
	p := b.p
	r.Settings = Settings{UseRunning: b.o.UseRunning, Build: "go build, no -race (stack.Build)", Mix: b.o.Mix.String(),
		Browse: b.o.Browse, Shoppers: p.shoppers, DeadlineS: p.deadline.Seconds(), HoldFraction: p.hold,
		FixedRates: p.rates, FixedS: p.fixed.Seconds(), StepS: p.step.Seconds(), SearchFrom: p.from, CostRate: p.costRate,
		IdleS: p.idle.Seconds(), SoakRate: p.soakRate, SoakS: p.soak.Seconds(), CeilingS: p.ceiling.Seconds(),
		ProfileS: p.profile.Seconds()}
	return nil
}

// needsLab reports whether any phase chosen runs against the lab.
func (b *bench) needsLab() bool {
	for _, ph := range Phases[1:] {
		if b.wants(ph) {
			return true
		}
	}
	return false
}

func (b *bench) enter(phase string) {
	b.phase = phase
	b.r.Phases = append(b.r.Phases, phase)
}

func (b *bench) phases(ctx context.Context) error {
	var bins string
	if b.needsLab() && !b.o.UseRunning {
		b.phase = "build"
		var err error
		if bins, err = b.build(ctx); err != nil {
			return err
		}
	}
	if b.wants(PhaseCeiling) {
		b.enter(PhaseCeiling)
		if err := b.ceiling(ctx); err != nil {
			return err
		}
	}
	if !b.needsLab() {
		return nil
	}
	b.phase = PhaseUp
	if err := b.up(ctx, bins); err != nil {
		return err
	}
	if b.wants(PhaseUp) {
		b.r.Phases = append(b.r.Phases, PhaseUp)
	}
	if b.wants(PhaseIdle) {
		b.enter(PhaseIdle)
		if err := sleep(ctx, b.p.settleLaunch); err != nil {
			return err
		}
		snap, err := b.snapshot(ctx, b.p.idle, true)
		if err != nil {
			return err
		}
		b.r.Rest = snap
	}
	modal := b.wants(PhaseLatency) || b.wants(PhaseCost) || b.wants(PhaseMaxRate)
	for _, mode := range Modes {
		if !modal {
			break
		}
		b.phase = mode
		if err := b.mode(ctx, mode); err != nil {
			return err
		}
		if err := b.modal(ctx, mode); err != nil {
			return err
		}
	}
	if b.wants(PhaseProfile) {
		// After the max-rate search, whose highest rate held it runs near.
		b.enter(PhaseProfile)
		if err := b.profile(ctx); err != nil {
			return err
		}
	}
	if b.wants(PhaseDashboard) {
		b.enter(PhaseDashboard)
		if err := b.mode(ctx, Modes[0]); err != nil {
			return err
		}
		if err := b.dashboard(ctx); err != nil {
			return err
		}
	}
	if b.wants(PhaseTracing) {
		b.enter(PhaseTracing)
		if err := b.tracing(ctx); err != nil {
			return err
		}
	}
	if b.wants(PhaseSoak) {
		b.enter(PhaseSoak)
		if err := b.soak(ctx); err != nil {
			return err
		}
	}
	if !b.l.own {
		return nil
	}
	if b.wants(PhaseUp) || len(b.l.launches) > 0 {
		insts, _ := b.l.cfg.Instances(nil)
		st := &Startup{Instances: len(insts)}
		for _, d := range b.l.launches {
			st.Launches = append(st.Launches, d.Seconds())
		}
		if len(st.Launches) > 0 {
			st.First = st.Launches[0]
		}
		b.r.Startup = st
	}
	return nil
}

// build compiles the services without -race, and Jaeger when it is missing or stale,
// into BinDir: lab up's binaries, the same plain builds, so that a build either of them
// made is reused by the other (go build relinks only what changed).
func (b *bench) build(ctx context.Context) (string, error) {
	if b.o.Root == "" {
		return "", errors.New("not inside the microlab repository: the services cannot be built (use --use-running)")
	}
	dir := b.o.BinDir
	if dir == "" {
		var err error
		if dir, err = mkdirTemp("microlab-bench-bin-"); err != nil {
			return "", err
		}
		b.cleanup = append(b.cleanup, dir)
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	w := prefixWriter{b: b}
	if err := stack.Build(bctx, b.o.Root, dir, w); err != nil {
		return "", err
	}
	if err := stack.BuildJaeger(bctx, b.o.Root, dir, w); err != nil {
		b.note("Jaeger could not be built (%v): spans per checkout and the dashboard delay are not measured", err)
	}
	return dir, nil
}

// prefixWriter turns the build's progress lines into bench's.
type prefixWriter struct{ b *bench }

func (w prefixWriter) Write(p []byte) (int, error) {
	for line := range strings.Lines(string(p)) {
		if s := strings.TrimSpace(line); s != "" {
			w.b.say("%s", s)
		}
	}
	return len(p), nil
}

// ceiling measures the broker and the database on their own.
func (b *bench) ceiling(ctx context.Context) error {
	c := &Ceiling{}
	rc, err := rabbitCeiling(ctx, b.m, rabbitConfig{AMQPURL: b.o.Stack.AMQPURL, Publishers: 2, Consumers: 2, Bytes: 512,
		InFlight: 256, Prefetch: 256, Warmup: b.p.ceilingWarm, Duration: b.p.ceiling}, func(s string) { b.say("%s", s) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.note("the RabbitMQ ceiling failed: %v", err)
	} else {
		c.RabbitMQ = rc
		b.say("RabbitMQ: %.0f msgs/s confirmed, %.0f msgs/s acked (confirm p50 %.1f ms, p99 %.1f ms)", rc.Published, rc.Acked, rc.ConfirmP50, rc.ConfirmP99)
	}
	db := "mlbench_ceiling_" + strings.ToLower(randTag())
	if err := pg.Provision(ctx, b.o.Stack.AdminDatabaseURL, db, db); err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = pg.Drop(dctx, b.o.Stack.AdminDatabaseURL, db)
	}()
	u, err := pg.URLFor(b.o.Stack.AdminDatabaseURL, db, db, db)
	if err != nil {
		return err
	}
	pc, err := postgresCeiling(ctx, u, b.p.pgClients, b.p.ceilingWarm, b.p.ceiling, func(s string) { b.say("%s", s) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.note("the PostgreSQL ceiling failed: %v", err)
	} else {
		c.PostgreSQL = pc
		b.say("PostgreSQL: %.0f transactions/s (p50 %.1f ms, p99 %.1f ms)", pc.TPS, pc.P50, pc.P99)
	}
	b.r.Ceiling = c
	return nil
}

// up brings the lab up (or finds the running one).
func (b *bench) up(ctx context.Context, bins string) error {
	var err error
	if b.o.UseRunning {
		b.l, err = runningLab(ctx, b.o.Stack, func(s string) { b.say("%s", s) })
		if err != nil {
			return err
		}
		b.r.Settings.PortOffset, b.r.Settings.DBPrefix, b.r.Settings.VHost = b.l.cfg.PortOffset, b.l.cfg.DBPrefix, b.l.vhost
		b.note("--use-running: the lab was not started by bench, so start-up time and the tracing comparison (which restart the services) are not measured, and the gateway's rate limit is as the lab has it")
		return nil
	}
	jaegerBin, err := lookJaeger(bins)
	if err != nil {
		jaegerBin = ""
		b.note("no Jaeger binary in %s: spans per checkout and the dashboard delay are not measured", bins)
	}
	b.l, err = ownLab(ctx, b.o, b.m, bins, jaegerBin, func(s string) { b.say("%s", s) })
	if err != nil {
		return err
	}
	b.l.cleanupDirs = append(b.l.cleanupDirs, b.cleanup...)
	b.cleanup = nil
	b.r.Settings.PortOffset, b.r.Settings.DBPrefix, b.r.Settings.VHost = b.l.cfg.PortOffset, b.l.cfg.DBPrefix, b.l.vhost
	b.r.Settings.Env = append(append([]string{}, b.l.baseEnv...), "TRACES_SAMPLER_RATIO=1 (0 in the tracing comparison)")
	if !b.l.prom {
		b.note("Prometheus is not installed: the lab ran without it (its CPU and memory are missing from the totals)")
	}
	b.say("starting %d services", len(stack.Services))
	took, err := b.l.launch(ctx, "1")
	if err != nil {
		return err
	}
	b.say("every service healthy in %.2fs", took.Seconds())
	return nil
}

// mode switches saga.mode (for new checkouts) and waits until every instance has it.
func (b *bench) mode(ctx context.Context, mode string) error {
	cur, err := b.l.current(ctx, "saga.mode")
	if err != nil {
		return err
	}
	if cur == mode {
		return nil
	}
	b.say("saga.mode %s → %s", cur, mode)
	if !b.l.own && b.l.restoreMode == "" {
		b.l.restoreMode = cur
	}
	return b.l.setting(ctx, "saga.mode", mode)
}

// modal runs the per-mode phases: fixed rates (those up to the cost rate measuring
// the cost of a checkout too), then the search for the highest rate held.
func (b *bench) modal(ctx context.Context, mode string) error {
	p := b.p
	var costs []*Cost
	if b.wants(PhaseLatency) {
		addPhase(b.r, PhaseLatency)
		for _, rate := range p.rates {
			measure := b.wants(PhaseCost) && float64(rate) <= p.costRate
			b.phase = PhaseLatency + " " + mode
			if measure {
				b.phase = PhaseLatency + "+" + PhaseCost + " " + mode
				addPhase(b.r, PhaseCost)
			}
			run, cost, err := b.run(ctx, spec{mode: mode, rate: float64(rate), dur: p.fixed, follow: p.fixedFollow, cost: measure})
			if err != nil {
				return err
			}
			b.r.Latency = append(b.r.Latency, run)
			if cost != nil {
				costs = append(costs, cost)
			}
			if !run.Held {
				b.say("%g/s not held: %.1f %% completed within %s", float64(rate), 100*run.Fraction, p.deadline)
			}
		}
	}
	if b.wants(PhaseCost) && len(costs) == 0 {
		b.phase = PhaseCost + " " + mode
		addPhase(b.r, PhaseCost)
		_, cost, err := b.run(ctx, spec{mode: mode, rate: p.costRate, dur: p.fixed, follow: p.fixedFollow, cost: true})
		if err != nil {
			return err
		}
		if cost != nil {
			costs = append(costs, cost)
		}
	}
	// The cost of a checkout in this mode: at the highest rate measured that was held
	// (a rate not held divides a backlog's work by the few that finished), else at the
	// lowest.
	var chosen *Cost
	for _, c := range costs {
		b.r.Cost = append(b.r.Cost, *c)
		if c.Held {
			chosen = c
		}
	}
	if chosen == nil && len(costs) > 0 {
		chosen = costs[0]
		b.note("%s: no rate up to %g/s was held, so the cost of a checkout is from a run that fell behind", mode, p.costRate)
	}
	if chosen != nil {
		b.costOf[mode] = chosen
	}
	if b.wants(PhaseMaxRate) {
		b.phase = PhaseMaxRate + " " + mode
		addPhase(b.r, PhaseMaxRate)
		mr, err := b.search(ctx, mode, "1")
		if err != nil {
			return err
		}
		b.ratios(&mr, b.costOf[mode])
		b.r.MaxRate = append(b.r.MaxRate, mr)
	}
	return nil
}

func addPhase(r *Report, ph string) {
	if !slices.Contains(r.Phases, ph) {
		r.Phases = append(r.Phases, ph)
	}
}

// ratios states a max rate in messages and transactions per second, and as shares of
// the ceilings.
func (b *bench) ratios(mr *MaxRate, c *Cost) {
	if c == nil || mr.Rate == 0 {
		return
	}
	mr.CostRate = c.Rate
	mr.MsgsPerS = c.Published * mr.Rate
	mr.TxPerS = c.Transactions * mr.Rate
	if b.r.Ceiling != nil && b.r.Ceiling.RabbitMQ != nil && b.r.Ceiling.RabbitMQ.Acked > 0 {
		mr.MsgsShare = mr.MsgsPerS / b.r.Ceiling.RabbitMQ.Acked
	}
	if b.r.Ceiling != nil && b.r.Ceiling.PostgreSQL != nil && b.r.Ceiling.PostgreSQL.TPS > 0 {
		mr.TxShare = mr.TxPerS / b.r.Ceiling.PostgreSQL.TPS
	}
}

// search steps the rate up (×factor) until one is not held, then bisects between the
// last held and the first not held, to within 10 % (or 5/s).
func (b *bench) search(ctx context.Context, mode, sampling string) (MaxRate, error) {
	p := b.p
	mr := MaxRate{Mode: mode, Sampling: sampling}
	step := func(rate float64) (bool, error) {
		run, _, err := b.run(ctx, spec{mode: mode, sampling: sampling, rate: rate, dur: p.step, follow: p.stepFollow})
		if err != nil {
			return false, err
		}
		mr.Steps = append(mr.Steps, run)
		verdict := "held"
		if !run.Held {
			verdict = "not held"
		}
		b.say("%g/s %s: %.1f %% completed within %s, saga p99 %.0f ms", rate, verdict, 100*run.Fraction, p.deadline, run.Saga.P99)
		return run.Held, nil
	}
	ok, fail := 0.0, 0.0
	for rate := p.from; len(mr.Steps) < p.maxSteps; rate = roundRate(rate * p.factor) {
		if rate > p.searchLimit {
			mr.Capped = true
			break
		}
		held, err := step(rate)
		if err != nil {
			return mr, err
		}
		if !held {
			fail = rate
			break
		}
		ok = rate
	}
	for p.bisect && fail > 0 && len(mr.Steps) < p.maxSteps && fail-ok > max(5, 0.1*ok) {
		mid := roundRate((ok + fail) / 2)
		if mid <= ok || mid >= fail {
			break
		}
		held, err := step(mid)
		if err != nil {
			return mr, err
		}
		if held {
			ok = mid
		} else {
			fail = mid
		}
	}
	mr.Rate, mr.Ceiling = ok, fail
	if fail == 0 {
		mr.Capped = true
	}
	b.say("the highest rate held in %s (sampling %s): %g/s", mode, sampling, ok)
	return mr, nil
}

func roundRate(r float64) float64 {
	if r < 10 {
		return max(1, float64(int(r+0.5)))
	}
	return float64(int(r/5+0.5) * 5)
}

// tracing compares every trace sampled with none: the highest rate held (choreography)
// and the CPU a checkout costs at the cost rate, the services restarted in between.
func (b *bench) tracing(ctx context.Context) error {
	if !b.l.own {
		b.note("the tracing comparison restarts the services: not done with --use-running")
		return nil
	}
	p := b.p
	mode := Modes[0]
	if err := b.mode(ctx, mode); err != nil {
		return err
	}
	t := &Tracing{Rate: p.costRate}
	on, _, err := b.run(ctx, spec{mode: mode, rate: p.costRate, dur: p.fixed, follow: p.fixedFollow})
	if err != nil {
		return err
	}
	var maxOn *MaxRate
	for i := range b.r.MaxRate {
		if m := &b.r.MaxRate[i]; m.Mode == mode && m.Sampling == "1" {
			maxOn = m
		}
	}
	if p.tracingSearch && maxOn == nil {
		m, err := b.search(ctx, mode, "1")
		if err != nil {
			return err
		}
		maxOn = &m
	}
	b.say("restarting the services with TRACES_SAMPLER_RATIO=0")
	if err := b.l.stopServices(ctx); err != nil {
		b.note("stopping the services: %v", err)
	}
	if _, err := b.l.launch(ctx, "0"); err != nil {
		return err
	}
	off, _, err := b.run(ctx, spec{mode: mode, sampling: "0", rate: p.costRate, dur: p.fixed, follow: p.fixedFollow})
	if err != nil {
		return err
	}
	t.OffRun = &off
	t.CPUOnMs, t.CPUOffMs = on.CPUPerCheckoutMs, off.CPUPerCheckoutMs
	if off.CPUPerCheckoutMs > 0 {
		t.CPUGrowth = on.CPUPerCheckoutMs/off.CPUPerCheckoutMs - 1
	}
	if p.tracingSearch {
		m, err := b.search(ctx, mode, "0")
		if err != nil {
			return err
		}
		t.Off = &m
		t.MaxOn, t.MaxOff = maxOn.Rate, m.Rate
	} else {
		// Quick: no search, the fixed-rate runs' completed checkouts per second stand in.
		t.MaxOn, t.MaxOff = on.Throughput, off.Throughput
		b.note("quick: tracing overhead is the fixed-rate runs' throughput at %g/s, not the highest rates held", p.costRate)
	}
	if t.MaxOff > 0 {
		t.Overhead = 1 - t.MaxOn/t.MaxOff
	}
	b.say("restarting the services with TRACES_SAMPLER_RATIO=1")
	if err := b.l.stopServices(ctx); err != nil {
		b.note("stopping the services: %v", err)
	}
	if _, err := b.l.launch(ctx, "1"); err != nil {
		return err
	}
	b.r.Tracing = t
	return nil
}

// soak runs the lab at the soak rate for a while (fresh: services, Jaeger and
// Prometheus restarted first, so that what it holds afterwards is the soak's), then
// measures it at rest again.
func (b *bench) soak(ctx context.Context) error {
	p := b.p
	s := &Soak{}
	if b.l.own {
		b.say("restarting Jaeger, Prometheus and the services, so the soak starts from a fresh lab")
		if err := b.l.stopServices(ctx); err != nil {
			b.note("stopping the services: %v", err)
		}
		for _, name := range []string{"jaeger", "prometheus"} {
			if b.l.obs.PID(name) != 0 {
				if err := b.l.obs.Restart(name); err != nil {
					return err
				}
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				err := b.l.obs.WaitHealthy(wctx, name)
				cancel()
				if err != nil {
					return err
				}
			}
		}
		if _, err := b.l.launch(ctx, "1"); err != nil {
			return err
		}
		s.Fresh = true
	}
	if err := b.mode(ctx, Modes[0]); err != nil {
		return err
	}
	run, _, err := b.run(ctx, spec{mode: Modes[0], rate: p.soakRate, dur: p.soak, follow: p.fixedFollow})
	if err != nil {
		return err
	}
	s.Run = run
	if _, ok := b.l.settle(ctx, p.quietWithin, p.settleLaunch, func(m string) { b.say("%s", m) }); !ok {
		b.note("after the soak the lab did not go quiet within %s", p.quietWithin)
	}
	snap, err := b.snapshot(ctx, p.idle, false)
	if err != nil {
		return err
	}
	s.After = *snap
	b.r.Soak = s
	return nil
}

// commit is the repository's HEAD and whether the tree is dirty (the report files
// aside: bench writes them).
func commit(root string) Commit {
	if root == "" {
		return Commit{Hash: "unknown"}
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	c := Commit{Hash: git("rev-parse", "HEAD"), Branch: git("rev-parse", "--abbrev-ref", "HEAD")}
	if c.Hash == "" {
		c.Hash = "unknown"
	}
	for line := range strings.Lines(git("status", "--porcelain")) {
		if f := strings.TrimSpace(line); f != "" && !strings.Contains(f, "docs/benchmarks.") {
			c.Dirty = true
		}
	}
	return c
}
