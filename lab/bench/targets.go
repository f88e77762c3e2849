package bench

import (
	"fmt"
	"math"
	"slices"
)

// The targets of issue 11, as numbers.
const (
	targetRate         = 150.0 // checkouts/s, choreography, 100 % tracing
	targetOrchShare    = 0.80  // orchestration's rate, as a share of choreography's
	targetLatencyRate  = 50.0  // the fixed rate the latency targets hold at
	targetP50Ms        = 50.0
	targetP99Ms        = 150.0
	targetOverhead     = 0.10 // of throughput
	targetLabPSSMiB    = 1024.0
	targetServicePSSMB = 100.0
	targetIdleCPU      = 5.0 // % of one core
	targetUpS          = 10.0
)

// targets sets what this run measured against every target of issue 11.
func targets(r *Report) []Target {
	var out []Target
	missing := func(name, target, phase string) {
		why := "not measured (phase " + phase + " did not run)"
		if slices.Contains(r.Phases, phase) {
			why = "not measured (see the notes)"
		}
		out = append(out, Target{Name: name, Target: target, Measured: "", By: why})
	}
	// atLeast and atMost compare and say by how much (unit after the number).
	atLeast := func(name, target, measured string, got, want float64, unit string) {
		t := Target{Name: name, Target: target, Measured: measured, Met: got >= want}
		t.By = margin(got, want, unit, t.Met)
		out = append(out, t)
	}
	atMost := func(name, target, measured string, got, want float64, unit string, strict bool) {
		met := got <= want
		if strict {
			met = got < want
		}
		t := Target{Name: name, Target: target, Measured: measured, Met: met}
		t.By = margin(got, want, unit, met)
		out = append(out, t)
	}

	chor, orch := maxRate(r, "choreography"), maxRate(r, "orchestration")
	const rateName = "sustained checkouts/s (choreography, 100 % tracing)"
	if chor == nil {
		missing(rateName, "≥ 150/s", PhaseMaxRate)
	} else {
		atLeast(rateName, "≥ 150/s", rateDesc(chor), chor.Rate, targetRate, "/s")
	}
	const orchName = "orchestration within 20 % of choreography"
	if chor == nil || orch == nil || chor.Rate == 0 {
		missing(orchName, "≥ 80 % of choreography's rate", PhaseMaxRate)
	} else {
		share := orch.Rate / chor.Rate
		atLeast(orchName, "≥ 80 % of choreography's rate", fmt.Sprintf("%s = %.0f %% of %g/s", rateDesc(orch), 100*share, chor.Rate),
			100*share, 100*targetOrchShare, " points")
	}
	for _, mode := range Modes {
		run := fixedRun(r, mode, targetLatencyRate)
		p50Name, p99Name := "saga p50 at 50/s ("+mode+")", "saga p99 at 50/s ("+mode+")"
		if run == nil {
			missing(p50Name, "< 50 ms", PhaseLatency)
			missing(p99Name, "< 150 ms", PhaseLatency)
			continue
		}
		held := ""
		if !run.Held {
			held = fmt.Sprintf(" (50/s not held: %.1f %% within the deadline)", 100*run.Fraction)
		}
		atMost(p50Name, "< 50 ms", fmt.Sprintf("%.0f ms%s", run.Saga.P50, held), run.Saga.P50, targetP50Ms, " ms", true)
		atMost(p99Name, "< 150 ms", fmt.Sprintf("%.0f ms%s", run.Saga.P99, held), run.Saga.P99, targetP99Ms, " ms", true)
	}
	const traceName = "tracing overhead (throughput, 100 % vs 0 % sampling)"
	if t := r.Tracing; t == nil || t.MaxOff == 0 {
		missing(traceName, "≤ 10 %", PhaseTracing)
	} else {
		what := "highest rates held"
		if t.Off == nil {
			what = fmt.Sprintf("completed/s at %g/s", t.Rate)
		}
		atMost(traceName, "≤ 10 %", fmt.Sprintf("%.1f %% (%s: %.1f/s traced, %.1f/s untraced)", 100*t.Overhead, what, t.MaxOn, t.MaxOff),
			100*t.Overhead, 100*targetOverhead, " points", false)
	}
	const pssName, svcName = "whole lab PSS after the soak", "every Go service's PSS after the soak"
	if s := r.Soak; s == nil {
		missing(pssName, "< 1 GiB", PhaseSoak)
		missing(svcName, "< 100 MiB each", PhaseSoak)
	} else {
		atMost(pssName, "< 1 GiB", fmt.Sprintf("%.0f MiB after %s at %g/s (shared PostgreSQL and RabbitMQ besides: %.0f MiB)",
			s.After.LabPSSMB, dur(s.Run.Seconds), s.Run.Rate, s.After.SharedPSSMB), s.After.LabPSSMB, targetLabPSSMiB, " MiB", true)
		atMost(svcName, "< 100 MiB each", fmt.Sprintf("largest: %s, %.0f MiB", s.After.MaxService, s.After.MaxServiceMB),
			s.After.MaxServiceMB, targetServicePSSMB, " MiB", true)
	}
	const idleName = "idle CPU of the whole lab"
	if r.Rest == nil {
		missing(idleName, "< 5 % of one core", PhaseIdle)
	} else {
		atMost(idleName, "< 5 % of one core", fmt.Sprintf("%.1f %% of one core (shared PostgreSQL and RabbitMQ besides: %.1f %%)", r.Rest.LabCPU, r.Rest.SharedCPU),
			r.Rest.LabCPU, targetIdleCPU, " points", true)
	}
	const upName = "lab up to all-healthy (built binaries)"
	if r.Startup == nil || len(r.Startup.Launches) == 0 {
		missing(upName, "< 10 s", PhaseUp)
	} else {
		atMost(upName, "< 10 s", fmt.Sprintf("%.2f s (%d instances)", r.Startup.First, r.Startup.Instances), r.Startup.First, targetUpS, " s", true)
	}
	return out
}

// margin says by how much got meets or misses want: the difference, and how big it is
// against want.
func margin(got, want float64, unit string, met bool) string {
	d := math.Abs(got - want)
	rel := ""
	if want != 0 && unit != " points" {
		rel = fmt.Sprintf(" (%.0f %%)", 100*d/want)
	}
	num := fmt.Sprintf("%.1f", d)
	if d >= 100 {
		num = fmt.Sprintf("%.0f", d)
	}
	if met {
		return "met, by " + num + unit + rel
	}
	return "missed by " + num + unit + rel
}

func rateDesc(m *MaxRate) string {
	switch {
	case m.Capped && m.Rate > 0:
		return fmt.Sprintf("%g/s (every rate tried held)", m.Rate)
	case m.Rate == 0:
		return fmt.Sprintf("none held (%g/s was not)", m.Ceiling)
	default:
		return fmt.Sprintf("%g/s (%g/s was not held)", m.Rate, m.Ceiling)
	}
}

func maxRate(r *Report, mode string) *MaxRate {
	for i := range r.MaxRate {
		if m := &r.MaxRate[i]; m.Mode == mode && m.Sampling != "0" {
			return m
		}
	}
	return nil
}

func fixedRun(r *Report, mode string, rate float64) *LoadRun {
	for i := range r.Latency {
		if x := &r.Latency[i]; x.Mode == mode && x.Rate == rate && x.Sampling != "0" {
			return x
		}
	}
	return nil
}

func dur(secs float64) string {
	switch {
	case secs >= 120:
		return fmt.Sprintf("%.0f min", secs/60)
	default:
		return fmt.Sprintf("%.0f s", secs)
	}
}
