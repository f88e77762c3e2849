package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Files is what Write writes in its directory.
const (
	MarkdownFile = "benchmarks.md"
	JSONFile     = "benchmarks.json"
)

// Write renders r into dir as benchmarks.md and benchmarks.json (each replaced whole:
// written next to its place, then renamed).
func Write(dir string, r *Report) error {
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, body := range map[string][]byte{JSONFile: append(raw, '\n'), MarkdownFile: []byte(Markdown(r))} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, body, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	return nil
}

// md builds a Markdown document.
type md struct{ b strings.Builder }

func (m *md) p(format string, args ...any) { fmt.Fprintf(&m.b, format+"\n\n", args...) }
func (m *md) h(title string)               { fmt.Fprintf(&m.b, "## %s\n\n", title) }
func (m *md) table(head []string, rows [][]string) {
	m.b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		m.b.WriteString("---|")
	}
	m.b.WriteString("\n")
	for _, r := range rows {
		for i := range r {
			r[i] = strings.ReplaceAll(r[i], "|", "\\|")
		}
		m.b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	m.b.WriteString("\n")
}
func (m *md) bullets(items ...string) {
	for _, it := range items {
		m.b.WriteString("- " + it + "\n")
	}
	m.b.WriteString("\n")
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func pct(v float64) string {
	return fmt.Sprintf("%.1f %%", 100*v)
}
func lat(l Latency) string {
	if l.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s / %s", f0(l.P50), f0(l.P95), f0(l.P99))
}
func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

// Markdown renders the report: what was measured, where, the targets, each section's
// numbers and how each was measured.
func Markdown(r *Report) string {
	var m md
	m.b.WriteString("# microlab benchmarks\n\n")
	m.p("Written by `go run ./lab bench` on %s. Do not edit by hand: run it again (about %s here). The JSON twin, %s, holds the same numbers.",
		r.Date.Format("2006-01-02 15:04 MST"), dur(r.WallS), JSONFile)
	if r.Quick {
		m.p("> **Quick run** (`--quick`, a few seconds per phase, for tests): these numbers show that every measurement works, not what the lab does. Do not compare them.")
	}
	dirty := ""
	if r.Commit.Dirty {
		dirty = ", **with uncommitted changes**"
	}
	mc := r.Machine
	m.bullets(
		fmt.Sprintf("Commit `%s` (%s%s)", r.Commit.Hash, r.Commit.Branch, dirty),
		fmt.Sprintf("Machine: %d cores (%s), %.1f GiB memory, %s; %s", mc.Cores, mc.CPUModel, float64(mc.MemoryMB)/1024, mc.Kernel, mc.Go),
		fmt.Sprintf("PostgreSQL %s (%s); RabbitMQ %s (Erlang %s)", mc.PostgreSQL, mc.PGSettings, mc.RabbitMQ, mc.Erlang),
		fmt.Sprintf("Load average at the start %.2f / %.2f / %.2f, at the end %.2f / %.2f / %.2f: the machine is shared, and the \"other\" columns below say how much else ran meanwhile",
			mc.LoadStart[0], mc.LoadStart[1], mc.LoadStart[2], mc.LoadEnd[0], mc.LoadEnd[1], mc.LoadEnd[2]),
		fmt.Sprintf("Phases run: %s", strings.Join(r.Phases, ", ")),
	)

	m.h("Targets (issue 11)")
	var rows [][]string
	for _, t := range r.Targets {
		verdict := "**missed**"
		switch {
		case t.Measured == "":
			verdict = "–"
		case t.Met:
			verdict = "met"
		}
		measured := t.Measured
		if measured == "" {
			measured = "–"
		}
		rows = append(rows, []string{t.Name, t.Target, measured, verdict, t.By})
	}
	m.table([]string{"target", "goal", "measured", "verdict", "by how much"}, rows)
	if r.Profile != nil && slices.ContainsFunc(r.Targets, func(t Target) bool { return t.Measured != "" && !t.Met }) {
		m.p("Where a target is missed, [Where the CPU goes](#where-the-cpu-goes) below is the profile of the lab under load that explains it.")
	}

	s := r.Settings
	m.h("Settings")
	where := fmt.Sprintf("a lab of bench's own (databases `%s*`, vhost `%s`, ports +%d), built with %s", s.DBPrefix, s.VHost, s.PortOffset, s.Build)
	if s.UseRunning {
		where = fmt.Sprintf("the lab already running (--use-running; databases `%s*`, vhost `%s`, ports +%d)", s.DBPrefix, s.VHost, s.PortOffset)
	}
	m.bullets(
		"Lab: "+where,
		fmt.Sprintf("Services' extra environment: `%s`", strings.Join(s.Env, " ")),
		fmt.Sprintf("Traffic: lab/loadgen (the generator behind `lab load`), open loop, mix `%s`, %d browsing reads per order, %d shoppers; each order is polled until final", s.Mix, s.Browse, s.Shoppers),
		fmt.Sprintf("Completed: final as the mix meant within %.0f s of its POST (placement + saga by the shop's clock); a rate is held when %.0f %% of its scheduled orders completed", s.DeadlineS, 100*s.HoldFraction),
		fmt.Sprintf("Fixed rates %v/s for %s each; the max-rate search from %g/s, %s a step; the cost of a checkout at %g/s; CPU profiles over %s; %s at rest; soak %s at %g/s; ceilings %s each",
			s.FixedRates, dur(s.FixedS), s.SearchFrom, dur(s.StepS), s.CostRate, dur(s.ProfileS), dur(s.IdleS), dur(s.SoakS), s.SoakRate, dur(s.CeilingS)),
	)

	if c := r.Ceiling; c != nil {
		m.h("Infrastructure ceiling (same run)")
		var rows [][]string
		if q := c.RabbitMQ; q != nil {
			rows = append(rows, []string{"RabbitMQ", fmt.Sprintf("%d publishers, %d consumers (a queue each), %d-byte persistent messages, mandatory, publisher confirms pipelined %d deep, manual acks one by one, prefetch %d, private vhost",
				q.Publishers, q.Consumers, q.Bytes, q.InFlight, q.Prefetch),
				f0(q.Acked) + " msgs/s acked (" + f0(q.Published) + " confirmed)", fmt.Sprintf("confirm p50 %.1f ms, p99 %.1f ms", q.ConfirmP50, q.ConfirmP99)})
		}
		if p := c.PostgreSQL; p != nil {
			rows = append(rows, []string{"PostgreSQL", fmt.Sprintf("%d clients, `%s`, private database; %s", p.Clients, p.Transaction, p.Method),
				f0(p.TPS) + " transactions/s", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", p.P50, p.P99)})
		}
		m.table([]string{"", "workload", "throughput", "latency"}, rows)
	}

	if len(r.MaxRate) > 0 {
		m.h("Maximum sustained checkout rate")
		m.p("A step search: the rate grows until one is not held, then is bisected between the last held and the first not held. Messages and transactions per second are the highest rate held × what one checkout costs in that mode (below: at the highest fixed rate held up to the cost rate), and their share of the ceiling above.")
		var rows [][]string
		for _, x := range r.MaxRate {
			nh := "–"
			if x.Ceiling > 0 {
				nh = fmt.Sprintf("%g/s", x.Ceiling)
			}
			rows = append(rows, []string{x.Mode, samplingDesc(x.Sampling), fmt.Sprintf("**%g/s**", x.Rate), nh,
				share(x.MsgsPerS, x.MsgsShare, "msgs/s"), share(x.TxPerS, x.TxShare, "tx/s")})
		}
		m.table([]string{"mode", "tracing", "highest held", "first not held", "messages at that rate", "transactions at that rate"}, rows)
		for _, x := range r.MaxRate {
			m.p("Steps, %s, %s:", x.Mode, samplingDesc(x.Sampling))
			m.table(runHead(), runRows(x.Steps))
		}
	}

	if len(r.Latency) > 0 {
		m.h("Saga latency at fixed rates")
		m.p("Milliseconds, p50 / p95 / p99. Placement: POST /api/v1/orders → 202 at the generator. Saga: the order's first step to its last, by the shop's clock.")
		m.table(runHead(), runRows(r.Latency))
	}

	if len(r.Cost) > 0 {
		m.h("The cost of one checkout")
		m.p("Over one fixed-rate run per mode, divided by the orders that finished (every outcome of the mix). Messages: the lab vhost's message_stats (management API) before and after. Transactions: pg_stat_database.xact_commit over the lab's databases, which counts the generator's polls and the lab's background work too; both are measured apart (the background at rest, a poll by one shopper reading a final order 100 times) and taken out for the checkout's own. Spans: confirmed checkouts' traces read back from the lab's Jaeger. CPU: utime+stime from /proc/<pid>/stat of every process, from the first order to the last end.")
		head := []string{""}
		for _, c := range r.Cost {
			h := fmt.Sprintf("%s at %g/s", c.Mode, c.Rate)
			if !c.Held {
				h += " (not held)"
			}
			head = append(head, h)
		}
		row := func(name string, f func(Cost) string) []string {
			out := []string{name}
			for _, c := range r.Cost {
				out = append(out, f(c))
			}
			return out
		}
		spans := func(f func(*Spans) float64) func(Cost) string {
			return func(c Cost) string {
				if c.Spans == nil {
					return "–"
				}
				return f1(f(c.Spans))
			}
		}
		rows := [][]string{
			row("checkouts measured", func(c Cost) string { return fmt.Sprint(c.Checkouts) }),
			row("messages published", func(c Cost) string { return f1(c.Published) }),
			row("messages delivered (the dashboard's wiretap too)", func(c Cost) string { return f1(c.Delivered) }),
			row("messages acked", func(c Cost) string { return f1(c.Acked) }),
			row("transactions (xact_commit, everything)", func(c Cost) string { return f1(c.Transactions) }),
			row("  of which by database", func(c Cost) string { return byDB(c.TxByDatabase) }),
			row("  the lab's background transactions/s at rest", func(c Cost) string { return f1(c.IdleTxPerS) }),
			row("  generator's polls per checkout", func(c Cost) string { return f1(c.PollsPerOrder) }),
			row("  transactions per poll (measured apart)", func(c Cost) string { return f1(c.TxPerPoll) }),
			row("**transactions of the checkout itself** (less background and polls)", func(c Cost) string { return "**" + f1(c.TxOwn) + "**" }),
			row("traces read", func(c Cost) string {
				if c.Spans == nil {
					return "–"
				}
				return fmt.Sprintf("%d (spans %d–%d)", c.Spans.Traces, c.Spans.Min, c.Spans.Max)
			}),
			row("spans", spans(func(s *Spans) float64 { return s.Spans })),
			row("  SQL spans", spans(func(s *Spans) float64 { return s.SQL })),
			row("  SQL statements (SQL spans less prepares)", spans(func(s *Spans) float64 { return s.Statements })),
			row("  COMMITs traced (explicit transactions; a statement outside one commits on its own)", spans(func(s *Spans) float64 { return s.Commits })),
			row("  publish spans", spans(func(s *Spans) float64 { return s.Publishes })),
			row("  delivery spans", spans(func(s *Spans) float64 { return s.Deliveries })),
			row("  HTTP spans", spans(func(s *Spans) float64 { return s.HTTP })),
			row("**CPU ms, every process**", func(c Cost) string { return "**" + f1(c.CPUAll) + "**" }),
			row("CPU ms, the lab's own (shared PostgreSQL and RabbitMQ processes aside)", func(c Cost) string { return f1(c.CPULab) }),
		}
		m.table(head, rows)
		if len(r.Cost) > 0 && r.Cost[0].Spans != nil {
			m.p("Statements: %s.", r.Cost[0].Spans.Source)
		}
		m.p("CPU milliseconds per checkout, by process:")
		var names []string
		kinds := map[string]string{}
		for _, c := range r.Cost {
			for _, p := range c.CPU {
				if !slices.Contains(names, p.Name) {
					names = append(names, p.Name)
					kinds[p.Name] = p.Kind
				}
			}
		}
		sortGroups(names, func(n string) (string, string) { return kinds[n], n })
		rows = nil
		for _, n := range names {
			rows = append(rows, row(n, func(c Cost) string {
				for _, p := range c.CPU {
					if p.Name == n {
						return f1(p.Ms)
					}
				}
				return "–"
			}))
		}
		m.table(head, rows)
	}

	if r.Profile != nil || slices.Contains(r.Phases, PhaseProfile) {
		profileSection(&m, r)
	}

	if t := r.Tracing; t != nil {
		m.h("Tracing overhead")
		m.p("The services restarted with TRACES_SAMPLER_RATIO=0 and again with 1, in the same run, choreography.")
		rows := [][]string{}
		if t.Off != nil {
			rows = append(rows, []string{"highest rate held", fmt.Sprintf("%g/s", t.MaxOn), fmt.Sprintf("%g/s", t.MaxOff), pct(t.Overhead) + " less throughput"})
		} else {
			rows = append(rows, []string{fmt.Sprintf("completed/s at %g/s (no search in this run)", t.Rate), f1(t.MaxOn), f1(t.MaxOff), pct(t.Overhead) + " less throughput"})
		}
		rows = append(rows, []string{fmt.Sprintf("CPU ms per checkout at %g/s", t.Rate), f1(t.CPUOnMs), f1(t.CPUOffMs), fmt.Sprintf("%+.1f %% CPU", 100*t.CPUGrowth)})
		m.table([]string{"", "100 % sampled", "0 % sampled", "overhead"}, rows)
		if t.Off != nil {
			m.p("Steps without tracing:")
			m.table(runHead(), runRows(t.Off.Steps))
		}
	}

	if d := r.Dashboard; d != nil {
		m.h("Dashboard: span to browser")
		m.p("%d browser websocket on the dashboard while %g checkouts/s ran for %s: the time from the gateway's 202 (its root span has ended) to the first \"traces\" message with that trace, rooted at the gateway's span. %d of %d traces arrived.",
			d.Clients, d.Rate, dur(d.Seconds), d.Seen, d.Traces)
		m.table([]string{"p50", "p95", "p99", "max"}, [][]string{{f0(d.Delay.P50) + " ms", f0(d.Delay.P95) + " ms", f0(d.Delay.P99) + " ms", f0(d.Delay.Max) + " ms"}})
	}

	if r.Rest != nil || r.Soak != nil {
		m.h("CPU and memory at rest, and after the soak")
		rest, after := r.Rest, (*Snapshot)(nil)
		if r.Soak != nil {
			after = &r.Soak.After
			fresh := ""
			if r.Soak.Fresh {
				fresh = " (services, Jaeger and Prometheus restarted just before it)"
			}
			m.p("Soak: %g/s for %s%s: %.1f %% completed within the deadline, saga p50 / p95 / p99 %s ms.", r.Soak.Run.Rate, dur(r.Soak.Run.Seconds), fresh, 100*r.Soak.Run.Fraction, lat(r.Soak.Run.Saga))
		}
		m.p("CPU over a quiet window in %% of one core; RSS and PSS (/proc/<pid>/smaps_rollup) at its end, MiB. \"The lab\" is its own processes and the PostgreSQL backends serving its databases; PostgreSQL's own processes and RabbitMQ serve everyone on this machine and are shown apart.")
		var names []string
		kinds := map[string]string{}
		for _, sn := range []*Snapshot{rest, after} {
			if sn == nil {
				continue
			}
			for _, p := range sn.Procs {
				if !slices.Contains(names, p.Name) {
					names = append(names, p.Name)
					kinds[p.Name] = p.Kind
				}
			}
		}
		sortGroups(names, func(n string) (string, string) { return kinds[n], n })
		cell := func(sn *Snapshot, name string) []string {
			if sn == nil {
				return []string{"–", "–", "–"}
			}
			for _, p := range sn.Procs {
				if p.Name == name {
					return []string{f1(p.CPU), f0(p.RSSMB), f0(p.PSSMB)}
				}
			}
			return []string{"–", "–", "–"}
		}
		var rows [][]string
		for _, n := range names {
			rows = append(rows, append(append([]string{n}, cell(rest, n)...), cell(after, n)...))
		}
		tot := func(sn *Snapshot, lab bool) []string {
			if sn == nil {
				return []string{"–", "–", "–"}
			}
			if lab {
				return []string{"**" + f1(sn.LabCPU) + "**", f0(sn.LabRSSMB), "**" + f0(sn.LabPSSMB) + "**"}
			}
			return []string{f1(sn.SharedCPU), "–", f0(sn.SharedPSSMB)}
		}
		rows = append(rows, append(append([]string{"**the lab**"}, tot(rest, true)...), tot(after, true)...))
		rows = append(rows, append(append([]string{"shared infrastructure"}, tot(rest, false)...), tot(after, false)...))
		other := func(sn *Snapshot) []string {
			if sn == nil {
				return []string{"–", "", ""}
			}
			return []string{f1(100 * sn.OtherCores), "", ""}
		}
		rows = append(rows, append(append([]string{"everything else on the machine"}, other(rest)...), other(after)...))
		m.table([]string{"process", "CPU % at rest", "RSS", "PSS", "CPU % after soak", "RSS", "PSS"}, rows)
	}

	if st := r.Startup; st != nil {
		m.h("Start-up")
		var all []string
		for _, l := range st.Launches {
			all = append(all, fmt.Sprintf("%.2f s", l))
		}
		m.p("`lab up` to all-healthy with built binaries (stack.Launch until every one of %d instances answers /readyz; Jaeger and Prometheus already up): **%.2f s** the first time; every launch of the run: %s.",
			st.Instances, st.First, strings.Join(all, ", "))
	}

	m.h("How to read this")
	m.bullets(
		"Open loop: orders are sent on schedule whether or not the shop keeps up, so overload shows as latency, unfinished orders and skipped sends, never as a politely slower generator.",
		"Each run starts when no saga of the previous one is under way (no pending order in orders' database).",
		"The generator runs on the same machine and its CPU is shown apart (\"lab bench\"); it is not in the lab's totals.",
		"CPU per checkout includes everything the lab did meanwhile: the generator's polls, the outbox relays, the dashboard's streaming, Prometheus's scrapes.",
		"PostgreSQL backends that ended during a window lose their CPU from the account; RabbitMQ's figures include every other vhost's work on this broker.",
	)
	if len(r.Notes) > 0 {
		m.h("Notes from this run")
		m.bullets(r.Notes...)
	}
	return m.b.String()
}

func samplingDesc(s string) string {
	switch s {
	case "1":
		return "100 % sampled"
	case "0":
		return "no tracing"
	default:
		return s
	}
}

func share(v, sh float64, unit string) string {
	if v == 0 {
		return "–"
	}
	if sh == 0 {
		return f0(v) + " " + unit
	}
	return fmt.Sprintf("%s %s = %s of the ceiling", f0(v), unit, pct(sh))
}

func byDB(m map[string]float64) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		if m[k] >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

func refusedBy(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func runHead() []string {
	return []string{"mode", "tracing", "rate", "held", "completed", "placed / refused / skipped", "unfinished", "placement ms", "saga ms", "CPU ms/checkout", "other cores"}
}

func runRows(runs []LoadRun) [][]string {
	var rows [][]string
	for _, x := range runs {
		rows = append(rows, []string{x.Mode, samplingDesc(x.Sampling), fmt.Sprintf("%g/s", x.Rate), yes(x.Held),
			fmt.Sprintf("%d of %d (%s)", x.Completed, x.Scheduled, pct(x.Fraction)),
			fmt.Sprintf("%d / %d / %d%s", x.Placed, x.Refused, x.Skipped, refusedBy(x.RefusedBy)), fmt.Sprint(x.Unfinished),
			lat(x.Placement), lat(x.Saga), f1(x.CPUPerCheckoutMs), fmt.Sprintf("%.2f", x.OtherCores)})
	}
	return rows
}

// profileSection is "Where the CPU goes": each Go process's CPU profile under load,
// then the whole lab's samples by category.
func profileSection(m *md, r *Report) {
	m.h("Where the CPU goes")
	pr := r.Profile
	if pr == nil {
		m.p("The profile phase ran but no process gave a CPU profile: see the notes.")
		return
	}
	run := pr.Run
	m.p("A CPU profile of every Go process of the lab (`GET /debug/pprof/profile?seconds=%g`, all at once, the services run with PPROF=true) while %s ran at %g/s, %s, for %s: %.1f %% of its orders completed within the deadline, saga p50 / p95 / p99 %s ms. Together the processes sampled **%.0f ms of CPU, %.0f %% of one core**.",
		pr.Seconds, pr.Mode, pr.Rate, pr.RateFrom, dur(run.Seconds), 100*run.Fraction, lat(run.Saga), pr.TotalMs, pr.CorePct)
	var rows [][]string
	for _, p := range pr.Procs {
		var top []string
		for _, f := range p.Top {
			top = append(top, fmt.Sprintf("`%s` %.0f %%", shortFunc(f.Name), 100*f.Share))
		}
		if len(top) == 0 {
			top = []string{"no samples (the profiler takes one per 10 ms of CPU)"}
		}
		rows = append(rows, []string{p.Name, f0(p.Ms), f1(p.CorePct), strings.Join(top, ", ")})
	}
	m.table([]string{"process", "CPU sampled, ms", "% of one core", "top functions by flat time (share of the process)"}, rows)
	m.p("The whole lab's samples by category: %s.", pr.CategoryRule)
	rows = nil
	for _, c := range pr.Categories {
		pkgs := "–"
		if len(c.Packages) > 0 {
			pkgs = "`" + strings.Join(c.Packages, "`, `") + "`"
		}
		most := "–"
		if c.Most != "" && c.Ms > 0 {
			most = fmt.Sprintf("%s, %s ms (%.0f %% of the row)", c.Most, f0(c.MostMs), 100*c.MostMs/c.Ms)
		}
		rows = append(rows, []string{c.Name, pkgs, f0(c.Ms), pct(c.Share), most})
	}
	rows = append(rows, []string{"**all**", "", "**" + f0(pr.TotalMs) + "**", "100 %", ""})
	m.table([]string{"category", "packages", "CPU ms", "share", "most in"}, rows)
	m.p("How to read it: the category table puts every sample in exactly one row, so its rows add up to the whole; a target missed for want of CPU is explained by its largest rows, and the process table says where they are (flat time: the samples that ended in a function, as `go tool pprof -top` lists them; bench prints where it left the raw profiles).")
}
