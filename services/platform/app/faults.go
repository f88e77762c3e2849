package app

// The lab's faults (DESIGN §7), carried out by every instance on itself: the control
// plane only stores them (with an expiry) and announces them; each instance reads the
// ones that target its service or itself (Settings.FaultsFor) and acts on them here.
//
//   - latency, error_rate, down: read on every request and every message, so they act
//     from the moment the instance has read them until they are cleared or expire.
//   - crash, duplicate_delivery: one-shot; the instance claims the fault (so it fires
//     once, and a restarted process does not crash again) and then carries it out.
//   - crash_after_commit: one-shot, claimed by the first handler that commits under it.
//   - poison: the control plane itself injects the messages; nothing to do here.
//
// Every request or message a fault touches gets a `lab.fault` event on its span — for
// crash and crash_after_commit, every request and message in flight when the process
// dies (InFlight) — each fault in force shows as lab_fault_active{service,kind}, and a
// warning is logged when a fault starts and stops acting in the instance.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"microlab/observability"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
)

// ErrCrashed is what Run returns when a crash fault fired: Main exits 1 with it, and the
// supervisor (or compose's restart policy) starts the process again.
var ErrCrashed = errors.New("crashed by lab fault")

// Faults is how the message pipeline sees the lab's faults on its instance. The zero
// value injects nothing.
type Faults struct {
	// Current returns the faults in force on this instance now.
	Current func() []control.Fault
	// Claim takes a one-shot fault for this instance (control.Plane.Claim); an error
	// (control.ErrFaultGone: another worker or instance fired it first) means: don't.
	Claim func(ctx context.Context, f control.Fault) error
	// Exit ends the process at once (crash_after_commit). nil: CrashNow.
	Exit func()
	// InFlight, if set, keeps the span of every delivery being handled (FaultMiddleware
	// adds each), so that a crash can mark all it interrupts. nil: only the span of the
	// delivery that crashes.
	InFlight *InFlight
	// Flush, if set, exports the spans ended so far (observability.Telemetry.Flush),
	// bounded by its ctx: crash_after_commit flushes before Exit, after which nothing is.
	Flush func(ctx context.Context) error
	Log   *slog.Logger
}

// crashFlushWithin bounds the export of the spans a crash_after_commit ends before the
// process exits: long enough for a local collector, short enough that an unreachable
// one barely delays the crash.
const crashFlushWithin = 2 * time.Second

// InFlight is the spans of the requests and messages an instance is handling now: the
// work a crash interrupts. Each one gets the crash's lab.fault event, so a trace that
// stops short (or a message handled again after the restart) says why. The zero value
// is ready to use.
type InFlight struct {
	mu    sync.Mutex
	next  uint64
	spans map[uint64]trace.Span
}

// Track counts the span in ctx as in flight until done is called. A span that records
// nothing (not sampled, or none) is not kept: there is nothing to mark on it.
func (l *InFlight) Track(ctx context.Context) (done func()) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spans == nil {
		l.spans = map[uint64]trace.Span{}
	}
	l.next++
	id := l.next
	l.spans[id] = span
	return func() {
		l.mu.Lock()
		delete(l.spans, id)
		l.mu.Unlock()
	}
}

// Spans returns the spans in flight now.
func (l *InFlight) Spans() []trace.Span {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]trace.Span, 0, len(l.spans))
	for _, s := range l.spans {
		out = append(out, s)
	}
	return out
}

// markCrash records f's lab.fault event on each of spans.
func markCrash(spans []trace.Span, f control.Fault) {
	for _, s := range spans {
		event(trace.ContextWithSpan(context.Background(), s), f)
	}
}

// CrashNow ends the process at once with exit status 3, as kill -9 would: no deferred
// function runs, nothing is published or acked. (The spans the crash interrupts are
// exported just before it is called; see CrashAfterCommitMiddleware.)
//
// This is the ONE exit outside Main (house rule: only Main exits), on purpose: the
// crash_after_commit fault exists to show what happens to a process that dies between
// its commit and its publish and ack. Returning an error up to Main instead would let the
// graceful shutdown publish (outbox off: the after-commit publish) and ack on the way
// out, which is exactly what must not happen.
func CrashNow() { os.Exit(3) }

func find(fs []control.Fault, kind, where string) (control.Fault, bool) {
	for _, f := range fs {
		if f.Kind == kind && (where == "" || f.Acts(where)) {
			return f, true
		}
	}
	return control.Fault{}, false
}

// event records f's lab.fault event on ctx's span — unless a diagnosis holds f hidden:
// an event on this service's span, whatever it said, would say where the fault is.
func event(ctx context.Context, f control.Fault) {
	if f.Hidden {
		return
	}
	observability.FaultEvent(ctx, f.Kind, f.Value, f.ID)
}

// what is how an error caused by f names it: "lab fault latency=300ms", or, while a
// diagnosis holds it hidden, "a hidden lab fault" (nor its kind nor how much).
func what(f control.Fault) string {
	if f.Hidden {
		return "a hidden lab fault"
	}
	return "lab fault " + f.Kind + "=" + f.Value
}

// sleep waits d, or until ctx ends (a client that went away, a handler's deadline).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FaultMiddleware carries out latency and error_rate on message handling, and keeps
// each delivery in f.InFlight while it is handled (what a crash would interrupt). It
// runs before the inbox's transaction (see Pipeline), so a delayed message holds no
// database connection while it waits, and a failed one changes nothing.
//
// An injected failure is a plain error, which bus.Classify treats as poison: retried
// through the retry queues, then dead-lettered, as a real bug would be. (A transient
// failure would be retried forever and never show the DLQ.)
func FaultMiddleware(f Faults) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		if f.Current == nil {
			return next
		}
		return func(ctx context.Context, d bus.Delivery) error {
			if f.InFlight != nil {
				defer f.InFlight.Track(ctx)()
			}
			fs := f.Current()
			if lat, ok := find(fs, control.FaultLatency, control.OnMessages); ok {
				event(ctx, lat)
				if err := sleep(ctx, lat.Delay()); err != nil {
					return fmt.Errorf("%s: %w", what(lat), err)
				}
			}
			if er, ok := find(fs, control.FaultErrorRate, control.OnMessages); ok && rand.Float64() < er.Rate() {
				event(ctx, er)
				return fmt.Errorf("%s failed this delivery", what(er))
			}
			return next(ctx, d)
		}
	}
}

// CrashAfterCommitMiddleware carries out crash_after_commit. It runs inside the inbox's
// transaction, and registers its after-commit function before the handler runs, so it
// runs first once the transaction commits: before the handler's own after-commit
// functions (with the outbox off, the publish of its events) and before the ack. The
// first handler to commit claims the fault and ends the process; the message is then
// redelivered to the restarted process (the inbox skips it as a duplicate), and what
// its commit emitted reaches the broker only if it went through the outbox.
//
// Before it exits, the spans it interrupts — its own delivery's and every other in
// flight — get the fault's lab.fault event, are failed and ended (a span still open
// when the process dies is never exported) and flushed, bounded by crashFlushWithin,
// so the trace shows where the process died and why.
func CrashAfterCommitMiddleware(f Faults) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		if f.Current == nil || f.Claim == nil {
			return next
		}
		exit := f.Exit
		if exit == nil {
			exit = CrashNow
		}
		return func(ctx context.Context, d bus.Delivery) error {
			cf, ok := find(f.Current(), control.FaultCrashAfterCommit, "")
			if !ok || !pg.InTxNow(ctx) {
				return next(ctx, d)
			}
			pg.AfterCommit(ctx, func(ctx context.Context) {
				if err := f.Claim(ctx, cf); err != nil {
					if !errors.Is(err, control.ErrFaultGone) && f.Log != nil {
						f.Log.WarnContext(ctx, "crash_after_commit not carried out: could not claim the fault", "err", err)
					}
					return
				}
				if f.Log != nil {
					f.Log.WarnContext(ctx, "lab fault crash_after_commit: committed, exiting before publishing and acking",
						"message_id", d.MessageID, "type", d.Type, "fault_id", cf.ID)
				}
				f.endInterrupted(ctx, cf)
				exit()
			})
			return next(ctx, d)
		}
	}
}

// endInterrupted marks, fails, ends and exports the spans a crash_after_commit
// interrupts: every one in flight and, whether InFlight keeps it or not, the one in ctx.
func (f Faults) endInterrupted(ctx context.Context, cf control.Fault) {
	var spans []trace.Span
	if f.InFlight != nil {
		spans = f.InFlight.Spans()
	}
	own := trace.SpanFromContext(ctx)
	if own.IsRecording() && !slices.ContainsFunc(spans, func(s trace.Span) bool {
		return s.SpanContext().SpanID() == own.SpanContext().SpanID()
	}) {
		spans = append(spans, own)
	}
	markCrash(spans, cf)
	for _, s := range spans {
		why := "lab fault crash_after_commit: the process exited while this was being handled"
		if s.SpanContext().SpanID() == own.SpanContext().SpanID() {
			why = "lab fault crash_after_commit: the process exited here, after the commit, before publishing and acking"
		}
		observability.Fail(s, errors.New(why))
		s.End()
	}
	if f.Flush != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), crashFlushWithin)
		defer cancel()
		if err := f.Flush(fctx); err != nil && f.Log != nil {
			f.Log.WarnContext(ctx, "crash_after_commit: spans not exported before the exit", "err", err)
		}
	}
}

// faults are the faults in force on this instance now.
func (a *App) faults() []control.Fault {
	return a.Settings.Current().FaultsFor(a.Name, a.Base.InstanceID, time.Now())
}

func (a *App) down() bool {
	_, ok := find(a.faults(), control.FaultDown, "")
	return ok
}

func (a *App) pipelineFaults() Faults {
	return Faults{Current: a.faults, Log: a.Log, Exit: CrashNow, InFlight: &a.inFlight, Flush: a.Tel.Flush,
		Claim: func(ctx context.Context, f control.Fault) error { return a.plane.Claim(ctx, f, a.Base.InstanceID) }}
}

// faultHTTP carries out down, latency and error_rate on HTTP requests. /healthz (the
// process is alive: a supervisor must not restart it) and /metrics (so the lab still
// sees lab_fault_active and everything else while the instance plays dead) are never
// touched; /readyz answers 503 while down, and is never delayed or failed otherwise.
//
// It wraps the service's mux inside the telemetry (Tel.Handler), so what a fault does
// is on the request's server span and in the RED metrics of its route, like any answer.
func (a *App) faultHTTP(next *http.ServeMux) http.Handler {
	// answered names the route of a request answered here, without the mux: the
	// metrics and the span read it from r.Pattern, as the mux would have set it.
	answered := func(r *http.Request) {
		_, r.Pattern = next.Handler(r)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		if path == "/healthz" || path == "/metrics" {
			next.ServeHTTP(w, r)
			return
		}
		defer a.inFlight.Track(r.Context())() // what a crash interrupts
		fs := a.faults()
		if len(fs) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if f, ok := find(fs, control.FaultDown, ""); ok {
			event(r.Context(), f)
			answered(r)
			httpx.WriteError(w, r, a.Log, httpx.Errorf(http.StatusServiceUnavailable, "unavailable",
				"%s is down (lab fault)", a.Base.InstanceID))
			return
		}
		if path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		if f, ok := find(fs, control.FaultLatency, control.OnHTTP); ok {
			event(r.Context(), f)
			if sleep(r.Context(), f.Delay()) != nil {
				return // the client went away
			}
		}
		if f, ok := find(fs, control.FaultErrorRate, control.OnHTTP); ok && rand.Float64() < f.Rate() {
			event(r.Context(), f)
			answered(r)
			msg := fmt.Sprintf("error_rate=%s: failed by a lab fault", f.Value)
			if f.Hidden {
				msg = "failed by a hidden lab fault"
			}
			httpx.WriteError(w, r, a.Log, httpx.Errorf(http.StatusInternalServerError, "lab_fault", "%s", msg))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// duplicateNext is the publisher's Duplicate hook: true for each of the next N events or
// commands after a duplicate_delivery=N fault fired here.
func (a *App) duplicateNext(ctx context.Context) bool {
	for {
		n := a.dupLeft.Load()
		if n <= 0 {
			return false
		}
		if a.dupLeft.CompareAndSwap(n, n-1) {
			if f := a.dupFault.Load(); f != nil {
				event(ctx, *f)
			}
			a.Log.InfoContext(ctx, "lab fault duplicate_delivery: publishing this message twice", "left", n-1)
			return true
		}
	}
}

// watchFaults follows the faults on this instance: it logs each one that starts or stops
// acting, and carries out the one-shot ones that act on the whole process (crash,
// duplicate_delivery) after claiming them. It looks on every settings change and every
// second (a fault also stops by expiring, which no change announces).
func (a *App) watchFaults(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	seen := map[int64]control.Fault{}
	done := map[int64]bool{} // one-shot faults claimed (or found gone)
	for {
		now := a.faults()
		cur := map[int64]control.Fault{}
		for _, f := range now {
			if f.Hidden {
				continue // a diagnosis's: this service's log would say where it is (logged once revealed)
			}
			cur[f.ID] = f
			if _, ok := seen[f.ID]; !ok {
				a.Log.WarnContext(ctx, "lab fault active", "kind", f.Kind, "value", f.Value, "on", f.On,
					"fault_id", f.ID, "target", f.Target(), "expires", f.Expires)
			}
		}
		for id, f := range seen {
			if _, ok := cur[id]; !ok {
				a.Log.WarnContext(ctx, "lab fault cleared", "kind", f.Kind, "value", f.Value, "fault_id", f.ID)
			}
		}
		seen = cur
		for _, f := range now {
			if (f.Kind != control.FaultCrash && f.Kind != control.FaultDuplicateDelivery) || done[f.ID] {
				continue
			}
			err := a.plane.Claim(ctx, f, a.Base.InstanceID)
			if err != nil && !errors.Is(err, control.ErrFaultGone) {
				a.Log.WarnContext(ctx, "could not claim a lab fault; trying again", "kind", f.Kind, "err", err)
				continue
			}
			done[f.ID] = true
			if err != nil {
				continue // another instance fired it
			}
			switch f.Kind {
			case control.FaultCrash:
				// Every request and message in flight gets the event: they are what the
				// crash interrupts (their spans end as Run winds down, and are exported
				// before Run returns and Main exits).
				spans := a.inFlight.Spans()
				markCrash(spans, f)
				a.Log.WarnContext(ctx, "lab fault crash: this process exits now", "fault_id", f.ID, "interrupted", len(spans))
				select {
				case a.crashed <- ErrCrashed:
				default:
				}
				return nil
			case control.FaultDuplicateDelivery:
				a.dupFault.Store(&f)
				a.dupLeft.Add(int64(f.Count()))
				a.Log.WarnContext(ctx, "lab fault duplicate_delivery: the next messages published go out twice",
					"count", f.Count(), "fault_id", f.ID)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.faultNudge:
		case <-t.C:
		}
	}
}

// faultKinds lists, for lab_fault_active, each kind of fault in force on this instance.
func (a *App) faultKinds() [][]string {
	var out [][]string
	seen := map[string]bool{}
	for _, f := range a.faults() {
		if f.Hidden {
			continue // a diagnosis's: the series is labelled with this service
		}
		if !seen[f.Kind] {
			seen[f.Kind] = true
			out = append(out, []string{a.Name, f.Kind})
		}
	}
	return out
}
