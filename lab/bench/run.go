package bench

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/stack"
)

// spec is one fixed-rate run.
type spec struct {
	mode     string
	sampling string // "" : what the services run with
	rate     float64
	dur      time.Duration
	follow   time.Duration // an order not final by then is unfinished
	cost     bool          // also measure the cost of a checkout
	started  func()        // if set, called as the first order is placed (the profiles start there)
}

// run waits for the lab to be quiet, runs lab/loadgen at the spec's rate and measures
// it: every order held to the deadline, CPU of every process between the first order
// and the last end; with cost, the broker's and the databases' counters and the
// checkouts' traces as well.
func (b *bench) run(ctx context.Context, sp spec) (LoadRun, *Cost, error) {
	p := b.p
	if sp.sampling == "" {
		sp.sampling = b.l.sampling
	}
	label := fmt.Sprintf("%s %g/s for %s", sp.mode, sp.rate, sp.dur)
	quietAt, ok := b.l.settle(ctx, p.quietWithin, p.quietExtra, func(m string) { b.say("%s", m) })
	if ctx.Err() != nil {
		return LoadRun{}, nil, ctx.Err()
	}
	if !ok {
		b.note("before %s the lab still had sagas under way after %s: that run starts loaded", label, p.quietWithin)
	}
	var before msgStats
	if sp.cost {
		b.say("waiting for the broker's counters to settle")
		var err error
		if before, err = b.m.settledStats(ctx, b.l.vhost, quietAt); err != nil {
			return LoadRun{}, nil, err
		}
	}
	var cpu0 cpuSample
	var x0 map[string]int64
	var xerr error
	var t0, tx0 time.Time
	gw, _ := stack.Find("gateway")
	last := time.Time{}
	b.say("%s: logging %d shoppers in", label, p.shoppers)
	s, err := loadgen.Run(ctx, loadgen.Config{
		Gateway: b.l.cfg.URL(gw), Rate: sp.rate, Duration: sp.dur, Mix: b.o.Mix, Shoppers: p.shoppers, Browse: b.o.Browse,
		Follow: sp.follow, Prefix: "bench",
		Started: func() {
			if sp.cost {
				x0, xerr = b.l.xacts(ctx)
				tx0 = time.Now()
			}
			cpu0 = sampleCPU(b.l.members())
			t0 = time.Now()
			if sp.started != nil {
				sp.started()
			}
		},
		Progress: func(pr loadgen.Progress) {
			if pr.Phase == "preparing" {
				return
			}
			if pr.Done || time.Since(last) >= p.progressEvery {
				last = time.Now()
				b.say("%s", pr.Line())
			}
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return LoadRun{}, nil, ctx.Err()
		}
		return LoadRun{}, nil, fmt.Errorf("%s: %w", label, err)
	}
	cpu1 := sampleCPU(b.l.members())
	window := time.Since(t0)
	groups, other := cpuBetween(cpu0, cpu1)
	run := b.summarise(sp, s)
	var all float64
	for _, g := range groups {
		if g.kind != kindGenerator {
			all += g.seconds
		}
	}
	if s.Finished > 0 {
		run.CPUPerCheckoutMs = 1000 * all / float64(s.Finished)
	}
	run.OtherCores = other / window.Seconds()
	if !sp.cost {
		return run, nil, nil
	}

	c := &Cost{Mode: sp.mode, Sampling: sp.sampling, Rate: sp.rate, Checkouts: s.Finished, Held: run.Held, Seconds: window.Seconds(),
		TxByDatabase: map[string]float64{}, IdleTxPerS: b.idleTx}
	if s.Finished == 0 {
		b.note("%s: no checkout finished, so nothing to divide its cost by", label)
		return run, nil, nil
	}
	n := float64(s.Finished)
	if s.Placed > 0 {
		c.PollsPerOrder = float64(s.Polls) / float64(s.Placed)
	}
	var labAll float64
	for _, g := range groups {
		c.CPU = append(c.CPU, ProcCPU{Name: g.name, Kind: g.kind, Ms: 1000 * g.seconds / n})
		if g.lab {
			labAll += g.seconds
		}
	}
	c.CPUAll, c.CPULab = run.CPUPerCheckoutMs, 1000*labAll/n
	var txBackground float64 // the lab's background transactions during the window
	// Backends report their counters within a second of a transaction's end.
	_ = sleep(ctx, 1500*time.Millisecond)
	x1, err := b.l.xacts(ctx)
	switch {
	case xerr != nil || err != nil:
		b.note("%s: transactions not counted: %v", label, firstErr(xerr, err))
	default:
		xwin := time.Since(tx0).Seconds()
		var total int64
		for db, v := range x1 {
			d := v - x0[db]
			total += d
			c.TxByDatabase[db] = float64(d) / n
		}
		c.Transactions = float64(total) / n
		txBackground = b.idleTx * xwin
	}
	quietAt, _ = b.l.settle(ctx, p.quietWithin, 0, func(m string) { b.say("%s", m) })
	if c.Transactions > 0 {
		// Measured once the run's sagas are over: every order of the shopper is final,
		// and nothing else runs but the lab's background.
		if c.TxPerPoll, err = b.pollCost(ctx); err != nil {
			b.note("%s: the transactions of a poll were not measured: %v", label, err)
		} else {
			c.TxOwn = max(0, c.Transactions-txBackground/n-c.PollsPerOrder*c.TxPerPoll)
		}
		quietAt = time.Now()
	}
	after, err := b.m.settledStats(ctx, b.l.vhost, quietAt)
	if err != nil {
		b.note("%s: messages not counted: %v", label, err)
	} else {
		c.Published = float64(after.Publish-before.Publish) / n
		c.Delivered = float64(after.DeliverGet-before.DeliverGet) / n
		c.Acked = float64(after.Ack-before.Ack) / n
	}
	if b.l.jaegerURL != "" && sp.sampling != "0" {
		var ids []string
		for _, o := range s.Orders {
			if o.Outcome == loadgen.OK && o.Status == "confirmed" && o.TraceID != "" && len(ids) < p.traces {
				ids = append(ids, o.TraceID)
			}
		}
		b.say("reading %d confirmed checkouts' traces back from Jaeger", len(ids))
		if c.Spans, err = traceSpans(ctx, b.l.jaegerURL, ids); err != nil {
			b.note("%s: spans not counted: %v", label, err)
		}
	}
	b.say("one checkout (%s): %.1f publishes, %.1f transactions (%.1f its own), %.1f ms CPU (lab %.1f ms)%s",
		sp.mode, c.Published, c.Transactions, c.TxOwn, c.CPUAll, c.CPULab, spansLine(c.Spans))
	return run, c, nil
}

// pollCost measures what one of the generator's polls costs the databases: a shopper
// of the run reads one of its final orders through the gateway 100 times, one after
// the other; xact_commit before and after, less the lab's background rate meanwhile.
func (b *bench) pollCost(ctx context.Context) (float64, error) {
	gw, _ := stack.Find("gateway")
	api := loadgen.NewClient(b.l.cfg.URL(gw), nil)
	callJSON := func(ctx context.Context, method, path, token string, body, out any) error {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return api.Do(ctx, method, path, token, body, nil, out)
	}
	var login struct {
		Token string `json:"token"`
	}
	// The generator's first shopper (loadgen names them <prefix>-NNN@example.com).
	if err := callJSON(ctx, http.MethodPost, "/api/v1/auth/login", "",
		map[string]string{"email": "bench-001@example.com", "password": "bench-shopper-001"}, &login); err != nil {
		return 0, fmt.Errorf("log in: %w", err)
	}
	var list struct {
		Items []struct {
			OrderID string `json:"orderId"`
			Status  string `json:"status"`
		} `json:"items"`
	}
	if err := callJSON(ctx, http.MethodGet, "/api/v1/orders", login.Token, nil, &list); err != nil {
		return 0, fmt.Errorf("list orders: %w", err)
	}
	id := ""
	for _, o := range list.Items {
		if o.Status != "pending" {
			id = o.OrderID
			break
		}
	}
	if id == "" {
		return 0, fmt.Errorf("the shopper has no final order to poll")
	}
	const polls = 100
	x0, err := b.l.xacts(ctx)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	for range polls {
		if err := callJSON(ctx, http.MethodGet, "/api/v1/orders/"+id, login.Token, nil, nil); err != nil {
			return 0, fmt.Errorf("poll: %w", err)
		}
	}
	_ = sleep(ctx, 1500*time.Millisecond)
	x1, err := b.l.xacts(ctx)
	if err != nil {
		return 0, err
	}
	var d int64
	for db, v := range x1 {
		d += v - x0[db]
	}
	return max(0, float64(d)-b.idleTx*time.Since(t0).Seconds()) / polls, nil
}

func spansLine(s *Spans) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf(", %.0f spans (%.0f SQL)", s.Spans, s.SQL)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// summarise holds every order of a run to the deadline: completed means final, as the
// mix meant, within the deadline of its POST (placement + saga by the shop's clock).
func (b *bench) summarise(sp spec, s loadgen.Summary) LoadRun {
	r := LoadRun{Mode: sp.mode, Sampling: sp.sampling, Rate: sp.rate, Seconds: sp.dur.Seconds(),
		Scheduled: s.Scheduled, Placed: s.Placed, Refused: s.Rejected, Skipped: s.Skipped, Finished: s.Finished,
		Unexpected: s.Unexpected, Unfinished: s.Unfinished,
		Placement: latencyOf(s.Placement), Saga: latencyOf(s.Saga)}
	for code, n := range s.Refused {
		if r.RefusedBy == nil {
			r.RefusedBy = map[string]int64{}
		}
		what := fmt.Sprint(code)
		if code == 0 {
			what = "no answer"
		}
		r.RefusedBy[what] = n
	}
	for _, o := range s.Orders {
		if o.Status == "" {
			continue
		}
		st, reason := o.Outcome.Expected()
		if o.Status == st && o.Reason == reason && o.Placement+o.Saga <= b.p.deadline {
			r.Completed++
		}
	}
	if r.Scheduled > 0 {
		r.Fraction = float64(r.Completed) / float64(r.Scheduled)
	}
	r.Throughput = float64(r.Completed) / r.Seconds
	r.Held = r.Fraction >= b.p.hold
	return r
}

// snapshot measures every process over a quiet window: CPU as % of one core, and RSS
// and PSS at its end. At rest (rest set) it also notes the lab's background rate of
// transactions.
func (b *bench) snapshot(ctx context.Context, window time.Duration, rest bool) (*Snapshot, error) {
	b.say("measuring the lab at rest for %s", window)
	var x0 map[string]int64
	if rest {
		x0, _ = b.l.xacts(ctx)
	}
	s0 := sampleCPU(b.l.members())
	if err := sleep(ctx, window); err != nil {
		return nil, err
	}
	ms := b.l.members()
	s1 := sampleCPU(ms)
	secs := window.Seconds()
	groups, other := cpuBetween(s0, s1)
	if rest && x0 != nil {
		if x1, err := b.l.xacts(ctx); err == nil {
			var d int64
			for db, v := range x1 {
				d += v - x0[db]
			}
			b.idleTx = float64(d) / secs
		}
	}
	type mem struct{ rss, pss uint64 }
	mems := map[string]mem{}
	for _, m := range ms {
		rss, pss, err := memory(m.pid)
		if err != nil {
			continue
		}
		x := mems[m.group]
		x.rss += rss
		x.pss += pss
		mems[m.group] = x
	}
	snap := &Snapshot{WindowS: secs, OtherCores: other / secs}
	for _, g := range groups {
		pm := ProcMem{Name: g.name, Kind: g.kind, Count: g.count, CPU: 100 * g.seconds / secs,
			RSSMB: float64(mems[g.name].rss) / 1024, PSSMB: float64(mems[g.name].pss) / 1024}
		snap.Procs = append(snap.Procs, pm)
		switch {
		case g.kind == kindGenerator:
		case g.lab:
			snap.LabCPU += pm.CPU
			snap.LabPSSMB += pm.PSSMB
			snap.LabRSSMB += pm.RSSMB
		default:
			snap.SharedCPU += pm.CPU
			snap.SharedPSSMB += pm.PSSMB
		}
		if (g.kind == kindService || g.kind == kindDashboard) && pm.PSSMB > snap.MaxServiceMB {
			snap.MaxServiceMB, snap.MaxService = pm.PSSMB, g.name
		}
	}
	b.say("at rest: the lab %.1f %% of a core, %.0f MB PSS; shared infrastructure %.1f %%, %.0f MB", snap.LabCPU, snap.LabPSSMB, snap.SharedCPU, snap.SharedPSSMB)
	return snap, nil
}

func mkdirTemp(pattern string) (string, error) { return os.MkdirTemp("", pattern) }

func randTag() string { return crand.Text()[:8] }

// lookJaeger returns binDir/jaeger if it is there.
func lookJaeger(binDir string) (string, error) {
	p := filepath.Join(binDir, "jaeger")
	_, err := os.Stat(p)
	return p, err
}
