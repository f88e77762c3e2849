package exercises

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/services/platform/control"
)

// Errors for bad input: the API maps them to 4xx (404 for the unknown, 409 for what the
// run's state does not allow), the CLI to exit status 2.
var (
	ErrUnknownExercise = errors.New("no such exercise")
	ErrUnknownStep     = errors.New("no such step in this exercise")
	ErrNotStarted      = errors.New("exercise not started: start it first")
	ErrNotCurrent      = errors.New("not the current step: steps are done in order")
	ErrNoQuestion      = errors.New("this step asks no question")
	ErrNoMoreHints     = errors.New("no more hints for this step")
	ErrCompleted       = errors.New("exercise completed: reset or start it again")
	ErrNoDiagnosis     = errors.New("this exercise hides no fault to reveal")
	// ErrTraceArriving: the question is about an order's trace (slowest_span) and its
	// spans are still arriving; the answer is not judged (nor counted) until it is all in.
	// ErrAnotherOpen: one exercise at a time. Two open at once would fight over the same
	// switches, and resetting one would undo the other's setup.
	ErrAnotherOpen   = errors.New("another exercise is open: finish it or reset it first")
	ErrTraceArriving = errors.New("the trace is still arriving: answer again in a moment")
)

// Engine runs exercises against a Lab and records progress in database lab. One
// Engine serves every exercise; its methods are safe for concurrent use (operations on
// one exercise take turns; Solve and Evaluate wait without holding the turn).
type Engine struct {
	lab   Lab
	list  []Exercise
	byID  map[string]*Exercise
	store *progress

	// Poll is how often Evaluate and Solve look again while they wait for a check.
	Poll time.Duration
	// pick draws a random choice of n (a diagnosis fault's service and value).
	pick func(n int) int
	now  func() time.Time

	starting sync.Mutex // one Start at a time: the check for another open run holds
	mu       sync.Mutex
	turns    map[string]*sync.Mutex // exercise id → its turn
	placed   map[int64][]string     // run id → orders Solve placed (candidates for order checks)
}

// New returns an engine of exercises (Load's) for lab, keeping progress in pool's
// database (lab), whose tables it migrates.
func New(ctx context.Context, pool *pgxpool.Pool, exercises []Exercise, lab Lab) (*Engine, error) {
	if lab.Plane == nil || lab.State == nil {
		return nil, errors.New("exercises: a lab needs its control plane (Plane and State)")
	}
	store, err := openProgress(ctx, pool)
	if err != nil {
		return nil, err
	}
	e := &Engine{lab: lab, list: exercises, byID: map[string]*Exercise{}, store: store, Poll: 500 * time.Millisecond,
		pick: rand.IntN, now: time.Now, turns: map[string]*sync.Mutex{}, placed: map[int64][]string{}}
	for i := range e.list {
		e.byID[e.list[i].ID] = &e.list[i]
	}
	return e, nil
}

// Source is how the engine's changes are attributed on the timeline and in the fault
// list: "exercise 07-outbox".
func Source(id string) string { return "exercise " + id }

func (e *Engine) exercise(id string) (*Exercise, error) {
	ex, ok := e.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownExercise, id)
	}
	return ex, nil
}

// turn takes the exercise's turn; call the function returned to give it back.
func (e *Engine) turn(id string) func() {
	e.mu.Lock()
	m := e.turns[id]
	if m == nil {
		m = &sync.Mutex{}
		e.turns[id] = m
	}
	e.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// Summary is an exercise as the list shows it, with its progress.
type Summary struct {
	ID            string     `json:"id"`
	Title         string     `json:"title"`
	Level         string     `json:"level"`
	Minutes       int        `json:"minutes"`
	Patterns      []string   `json:"patterns"`
	Prerequisites []string   `json:"prerequisites,omitempty"`
	Steps         int        `json:"steps"`
	Done          int        `json:"done"`            // steps done in the current run
	State         string     `json:"state,omitempty"` // open, completed; "" not started
	Started       *time.Time `json:"started,omitempty"`
}

// List returns every exercise, in id order, with the progress of its current run.
func (e *Engine) List(ctx context.Context) ([]Summary, error) {
	out := make([]Summary, 0, len(e.list))
	for i := range e.list {
		ex := &e.list[i]
		s := Summary{ID: ex.ID, Title: ex.Title, Level: ex.Level, Minutes: ex.Minutes, Patterns: ex.Patterns,
			Prerequisites: ex.Prerequisites, Steps: len(ex.Steps)}
		run, err := e.store.current(ctx, ex)
		if err != nil {
			return nil, err
		}
		if run != nil {
			s.State, s.Started = run.State, &run.Started
			for _, sp := range run.Steps {
				if sp.Done() {
					s.Done++
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Status is where a run stands.
type Status struct {
	Exercise string `json:"exercise"`
	// Run is the current run; nil: not started (or reset).
	Run *Run `json:"run,omitempty"`
	// Current is the step to do now; "" when complete or not started.
	Current string `json:"current,omitempty"`
	// Complete: every step is done.
	Complete bool `json:"complete"`
	// Missing is the current step's missing message, once its check has not held for
	// its within: what the learner is told is still missing. While within its bound,
	// Waiting is set instead.
	Missing string `json:"missing,omitempty"`
	Waiting bool   `json:"waiting,omitempty"`
	// Problems are sources the check could not read (Prometheus down, the gateway
	// refusing): why it may not hold, for the instructor.
	Problems []string `json:"problems,omitempty"`
}

// Start starts exercise id for who ("dashboard", "lab exercise"), unless another
// exercise is open (ErrAnotherOpen): a run of this one already going is reset first; the settings and faults in force are captured (what Reset restores);
// then setup runs (settings, clear_faults, faults — a diagnosis fault drawn now, traffic),
// every change through the control plane as "exercise <id>". If setup fails half-way,
// the lab is put back and the run recorded reset.
func (e *Engine) Start(ctx context.Context, id, who string) (Status, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return Status{}, err
	}
	e.starting.Lock()
	defer e.starting.Unlock()
	defer e.turn(id)()
	other, err := e.store.openOther(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if other != "" {
		return Status{}, fmt.Errorf("%w: %s is open (reset it on its page, or `lab exercise reset %s`)", ErrAnotherOpen, other, other)
	}
	prev, err := e.store.current(ctx, ex)
	if err != nil {
		return Status{}, err
	}
	if prev != nil {
		if err := e.finish(ctx, ex, prev, true); err != nil {
			return Status{}, fmt.Errorf("start %s: reset the run before: %w", id, err)
		}
	}
	snap, err := e.snapshot(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("start %s: %w", id, err)
	}
	run := &Run{Exercise: id, Who: who, Started: e.now().Truncate(time.Microsecond), State: RunOpen, Snapshot: snap}
	if err := e.store.create(ctx, run); err != nil {
		return Status{}, err
	}
	if err := e.setup(ctx, ex, run); err != nil {
		if ferr := e.finish(ctx, ex, run, true); ferr != nil {
			err = errors.Join(err, fmt.Errorf("and putting the lab back: %w", ferr))
		}
		return Status{}, fmt.Errorf("start %s: %w", id, err)
	}
	if err := e.store.setup(ctx, run); err != nil {
		return Status{}, err
	}
	run, err = e.store.current(ctx, ex)
	if err != nil {
		return Status{}, err
	}
	return e.advance(ctx, ex, run)
}

// changed treats a change stored but not announced as made: the services pick it up at
// their next re-read (control.ErrNotAnnounced).
func changed(err error) error {
	if errors.Is(err, control.ErrNotAnnounced) {
		return nil
	}
	return err
}

func (e *Engine) snapshot(ctx context.Context) (Snapshot, error) {
	cur, err := e.lab.State.Load(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{Settings: map[string]string{}}
	for _, d := range control.Defs() {
		s.Settings[d.Key] = cur.Get(d.Key)
	}
	now := e.now()
	for _, f := range cur.Faults {
		if f.Active(now) {
			s.Faults = append(s.Faults, f)
		}
	}
	return s, nil
}

func (e *Engine) setup(ctx context.Context, ex *Exercise, run *Run) error {
	src := Source(ex.ID)
	for _, s := range ex.Setup.Settings {
		if _, err := e.lab.Plane.Set(ctx, s.Key, s.Value, src); changed(err) != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	for _, t := range ex.Setup.ClearFaults {
		if err := e.clearFaults(ctx, t, src); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	for _, f := range ex.Setup.Faults {
		fault, _, err := e.lab.Plane.AddFault(ctx, e.draw(f), src)
		if changed(err) != nil {
			return fmt.Errorf("setup: %w", err)
		}
		run.Injected = append(run.Injected, fault)
	}
	if t := ex.Setup.Traffic; t != nil {
		if err := e.traffic(ctx, *t); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		run.Traffic = t.On
	}
	return nil
}

// draw is the fault to inject: f, its random choices drawn; a drawn one is stored
// hidden (control.Fault.Hidden) until the diagnosis is answered or revealed.
func (e *Engine) draw(f Fault) control.FaultSpec {
	spec := control.FaultSpec{Service: f.Service, Instance: f.Instance, Kind: f.Kind, Value: f.Value, On: f.On, For: f.For,
		Hidden: f.Random != nil}
	if r := f.Random; r != nil {
		if len(r.Services) > 0 {
			spec.Service = r.Services[e.pick(len(r.Services))]
		}
		if len(r.Values) > 0 {
			spec.Value = r.Values[e.pick(len(r.Values))]
		}
	}
	return spec
}

func (e *Engine) clearFaults(ctx context.Context, target, src string) error {
	if target == "all" {
		target = ""
	}
	_, err := e.lab.Plane.ClearFaults(ctx, target, src)
	return changed(err)
}

func (e *Engine) traffic(ctx context.Context, t Traffic) error {
	if e.lab.Traffic == nil {
		if !t.On {
			return nil // no generator: no traffic to stop
		}
		return unavailable("shop traffic")
	}
	return e.lab.Traffic(ctx, t.On, t.Rate, t.Mix, t.Browse)
}

// setPrice changes a price through the Shop (catalog's internal API).
func (e *Engine) setPrice(ctx context.Context, p Price) error {
	if e.lab.Shop == nil {
		return unavailable("catalog")
	}
	return e.lab.Shop.SetPrice(ctx, p.SKU, p.Cents)
}

// finish ends a run: cleanup (once), then, on reset, the snapshot's settings and faults
// restored exactly and the traffic setup started stopped. Restoring comes after cleanup
// so that what the lab was before the exercise wins over what cleanup sets.
func (e *Engine) finish(ctx context.Context, ex *Exercise, run *Run, reset bool) error {
	src := Source(ex.ID)
	var errs []error
	if !run.Cleaned {
		for _, s := range ex.Cleanup.Settings {
			if _, err := e.lab.Plane.Set(ctx, s.Key, s.Value, src); changed(err) != nil {
				errs = append(errs, fmt.Errorf("cleanup: %w", err))
			}
		}
		for _, t := range ex.Cleanup.ClearFaults {
			if err := e.clearFaults(ctx, t, src); err != nil {
				errs = append(errs, fmt.Errorf("cleanup: %w", err))
			}
		}
		if t := ex.Cleanup.Traffic; t != nil {
			if err := e.traffic(ctx, *t); err != nil {
				errs = append(errs, fmt.Errorf("cleanup: %w", err))
			}
		}
		for _, p := range ex.Cleanup.Prices {
			if err := e.setPrice(ctx, p); err != nil {
				errs = append(errs, fmt.Errorf("cleanup: %w", err))
			}
		}
		if len(errs) == 0 {
			if err := e.store.cleaned(ctx, run.ID); err != nil {
				return err
			}
			run.Cleaned = true
		}
	}
	if run.Traffic {
		if err := e.traffic(ctx, Traffic{On: false}); err != nil {
			errs = append(errs, fmt.Errorf("stop traffic: %w", err))
		}
	}
	if reset {
		if err := e.restore(ctx, run.Snapshot, src); err != nil {
			errs = append(errs, err)
		}
		if err := e.store.reset(ctx, run.ID, e.now()); err != nil {
			return err
		}
		e.mu.Lock()
		delete(e.placed, run.ID)
		e.mu.Unlock()
	}
	return errors.Join(errs...)
}

// faultIdentity is what makes two faults the same fault, for restoring: where, what,
// how much (not the id, nor when it was added).
func faultIdentity(f control.Fault) string {
	return strings.Join([]string{f.Service, f.Instance, f.Kind, f.Value, f.On}, "|")
}

// restore puts the settings and faults back as snap has them, through the control
// plane: each setting that differs is set back; on each service whose faults differ,
// they are cleared and snap's re-added, expiring when they would have (one that has
// expired since stays gone: a fault never outlives its expiry).
func (e *Engine) restore(ctx context.Context, snap Snapshot, src string) error {
	cur, err := e.lab.State.Load(ctx)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	var errs []error
	for _, d := range control.Defs() {
		want, ok := snap.Settings[d.Key]
		if !ok {
			want = d.Default
		}
		if cur.Get(d.Key) != want {
			if _, err := e.lab.Plane.Set(ctx, d.Key, want, src); changed(err) != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", d.Key, err))
			}
		}
	}
	now := e.now()
	want, have := map[string][]control.Fault{}, map[string][]control.Fault{}
	for _, f := range snap.Faults {
		if f.Expires.After(now.Add(time.Second)) {
			want[f.Service] = append(want[f.Service], f)
		}
	}
	for _, f := range cur.Faults {
		if f.Active(now) {
			have[f.Service] = append(have[f.Service], f)
		}
	}
	same := func(a, b []control.Fault) bool {
		ka, kb := make([]string, len(a)), make([]string, len(b))
		for i := range a {
			ka[i] = faultIdentity(a[i])
		}
		for i := range b {
			kb[i] = faultIdentity(b[i])
		}
		slices.Sort(ka)
		slices.Sort(kb)
		return slices.Equal(ka, kb)
	}
	for _, svc := range control.FaultServices {
		if same(want[svc], have[svc]) {
			continue
		}
		if len(have[svc]) > 0 {
			if err := e.clearFaults(ctx, svc, src); err != nil {
				errs = append(errs, fmt.Errorf("restore faults of %s: %w", svc, err))
				continue
			}
		}
		for _, f := range want[svc] {
			left := time.Duration(math.Ceil(f.Expires.Sub(now).Seconds())) * time.Second
			spec := control.FaultSpec{Service: f.Service, Instance: f.Instance, Kind: f.Kind, Value: f.Value, On: f.On, For: left.String()}
			if _, _, err := e.lab.Plane.AddFault(ctx, spec, src); changed(err) != nil {
				errs = append(errs, fmt.Errorf("restore fault %s on %s: %w", f, f.Target(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// current is the exercise's run, which must exist.
func (e *Engine) current(ctx context.Context, ex *Exercise) (*Run, error) {
	run, err := e.store.current(ctx, ex)
	if err != nil {
		return nil, err
	}
	if run == nil {
		return nil, fmt.Errorf("%s: %w", ex.ID, ErrNotStarted)
	}
	return run, nil
}

// Status evaluates the current step's check now, once, and ticks it off if it holds
// (and the next, while they hold: steps are done in order). When the last step is done
// the run is completed and cleanup runs. Not started: a Status without a Run.
func (e *Engine) Status(ctx context.Context, id string) (Status, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return Status{}, err
	}
	defer e.turn(id)()
	run, err := e.store.current(ctx, ex)
	if err != nil || run == nil {
		return Status{Exercise: id}, err
	}
	return e.advance(ctx, ex, run)
}

// advance evaluates and ticks from the current step on; the caller holds the turn.
func (e *Engine) advance(ctx context.Context, ex *Exercise, run *Run) (Status, error) {
	st := Status{Exercise: ex.ID, Run: run}
	if run.State != RunOpen {
		st.Complete = run.State == RunCompleted
		return st, nil
	}
	e.mu.Lock()
	placed := slices.Clone(e.placed[run.ID])
	e.mu.Unlock()
	for i := range ex.Steps {
		if run.Steps[i].Done() {
			continue
		}
		step := &ex.Steps[i]
		ev := &evaluation{ctx: ctx, lab: &e.lab, ex: ex, run: run, step: i, now: e.now(), placed: placed}
		m, ok := ev.holds(step.Check)
		if !ok {
			st.Current, st.Problems = step.ID, ev.problems
			since := run.Started
			if i > 0 && run.Steps[i-1].DoneAt != nil {
				since = *run.Steps[i-1].DoneAt
			}
			if ev.now.Sub(since) > step.Check.Timeout() {
				st.Missing = step.Missing
			} else {
				st.Waiting = true
			}
			return st, nil
		}
		at := ev.now
		if err := e.store.tick(ctx, run.ID, step.ID, at, m.order, m.evidence); err != nil {
			return Status{}, err
		}
		run.Steps[i].DoneAt, run.Steps[i].Order, run.Steps[i].Evidence = &at, m.order, m.evidence
		// The last question about the fault answered: it shows as it is from now on
		// (before a cleanup that may clear it, so that the timeline says what it was).
		if q := question(step.Check); q != nil && strings.HasPrefix(q.Expect.From, "fault.") && diagnosed(ex, run) && !run.Revealed {
			e.reveal(ctx, ex, run)
		}
	}
	// Every step done: the exercise is complete.
	now := e.now()
	if err := e.store.complete(ctx, run.ID, now); err != nil {
		return Status{}, err
	}
	run.State, run.Done, st.Complete = RunCompleted, &now, true
	if err := e.finish(ctx, ex, run, false); err != nil {
		return st, fmt.Errorf("%s complete, but its cleanup: %w", ex.ID, err)
	}
	return st, nil
}

// Evaluate is Status that waits: it looks again every Poll until the current step's
// check holds or its within has passed since the call, and then reports what is
// missing (Missing) — `lab exercise check`. It returns at once when a step ticks.
func (e *Engine) Evaluate(ctx context.Context, id string) (Status, error) {
	st, err := e.Status(ctx, id)
	if err != nil || st.Run == nil || st.Current == "" {
		return st, err
	}
	ex := e.byID[id]
	return e.await(ctx, ex, st.Current, e.now().Add(stepOf(ex, st.Current).Check.Timeout()))
}

// await polls until step is no longer the current step (done) or deadline.
func (e *Engine) await(ctx context.Context, ex *Exercise, step string, deadline time.Time) (Status, error) {
	for {
		st, err := e.Status(ctx, ex.ID)
		if err != nil || st.Run == nil || st.Current != step {
			return st, err
		}
		if !e.now().Before(deadline) {
			st.Missing, st.Waiting = stepOf(ex, step).Missing, false
			return st, nil
		}
		wait := min(e.Poll, time.Until(deadline))
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(max(wait, time.Millisecond)):
		}
	}
}

func stepOf(ex *Exercise, id string) *Step {
	for i := range ex.Steps {
		if ex.Steps[i].ID == id {
			return &ex.Steps[i]
		}
	}
	return nil
}

// pickStep resolves a step id ("" the current step) of an open run to its index.
// Only the current step, or one done already, may be acted on.
func pickStep(ex *Exercise, run *Run, id string) (int, error) {
	cur := slices.IndexFunc(run.Steps, func(s StepProgress) bool { return !s.Done() })
	if id == "" {
		if cur < 0 {
			return 0, fmt.Errorf("%s: %w", ex.ID, ErrCompleted)
		}
		return cur, nil
	}
	i := slices.IndexFunc(ex.Steps, func(s Step) bool { return s.ID == id })
	switch {
	case i < 0:
		return 0, fmt.Errorf("%w: %q (steps: %s)", ErrUnknownStep, id, strings.Join(stepIDs(ex), ", "))
	case cur >= 0 && i > cur:
		return 0, fmt.Errorf("%q: %w (now: %s)", id, ErrNotCurrent, ex.Steps[cur].ID)
	}
	return i, nil
}

func stepIDs(ex *Exercise) []string {
	out := make([]string, len(ex.Steps))
	for i, s := range ex.Steps {
		out[i] = s.ID
	}
	return out
}

// HintResult is a hint revealed.
type HintResult struct {
	Hint     string `json:"hint"`
	Revealed int    `json:"revealed"` // hints of the step revealed so far, this one included
	Of       int    `json:"of"`
}

// Hint reveals the next hint of step ("" the current step), counted in the run.
func (e *Engine) Hint(ctx context.Context, id, step string) (HintResult, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return HintResult{}, err
	}
	defer e.turn(id)()
	run, err := e.current(ctx, ex)
	if err != nil {
		return HintResult{}, err
	}
	i, err := pickStep(ex, run, step)
	if err != nil {
		return HintResult{}, err
	}
	hints := ex.Steps[i].Hints
	if run.Steps[i].Hints >= len(hints) {
		return HintResult{}, fmt.Errorf("%s: %w (%d of %d revealed)", ex.Steps[i].ID, ErrNoMoreHints, run.Steps[i].Hints, len(hints))
	}
	n, err := e.store.hint(ctx, run.ID, ex.Steps[i].ID)
	if err != nil {
		return HintResult{}, err
	}
	n = min(n, len(hints))
	return HintResult{Hint: hints[n-1], Revealed: n, Of: len(hints)}, nil
}

// AnswerResult is the verdict on an answer.
type AnswerResult struct {
	Right bool `json:"right"`
	// Hint, after a wrong answer, points at the evidence (the check's wrong), never at
	// the answer.
	Hint   string `json:"hint,omitempty"`
	Status Status `json:"status"`
}

// Answer answers step's question ("" the current step), recorded with its verdict,
// and evaluates: a right answer ticks the step if the rest of its check holds too.
func (e *Engine) Answer(ctx context.Context, id, step, answer string) (AnswerResult, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return AnswerResult{}, err
	}
	defer e.turn(id)()
	run, err := e.current(ctx, ex)
	if err != nil {
		return AnswerResult{}, err
	}
	if run.State != RunOpen {
		return AnswerResult{}, fmt.Errorf("%s: %w", ex.ID, ErrCompleted)
	}
	i, err := pickStep(ex, run, step)
	if err != nil {
		return AnswerResult{}, err
	}
	s := &ex.Steps[i]
	q := question(s.Check)
	if q == nil {
		return AnswerResult{}, fmt.Errorf("%s: %w", s.ID, ErrNoQuestion)
	}
	ev := &evaluation{ctx: ctx, lab: &e.lab, ex: ex, run: run, step: i, now: e.now()}
	want, known := ev.expected(q.Expect)
	if !known && q.Expect.From == "slowest_span" {
		return AnswerResult{}, fmt.Errorf("%s: %w", s.ID, ErrTraceArriving)
	}
	g := Given{Answer: strings.TrimSpace(answer), Right: known && rightAnswer(q.Expect.From, answer, want), At: ev.now}
	if err := e.store.answer(ctx, run.ID, s.ID, g); err != nil {
		return AnswerResult{}, err
	}
	run.Steps[i].Answers = append(run.Steps[i].Answers, g)
	res := AnswerResult{Right: g.Right}
	if !g.Right {
		res.Hint = q.Wrong
		if res.Hint == "" {
			res.Hint = s.Missing
		}
	}
	res.Status, err = e.advance(ctx, ex, run)
	return res, err
}

// Solve steps.
const (
	ActionRunning = "running"
	ActionDone    = "done"
	ActionFailed  = "failed"
)

// SolveEvent reports one action of a reference solution, before (running) and after
// (done, failed) it runs: what "show me" shows the learner as it happens.
type SolveEvent struct {
	Step   string `json:"step"`
	Index  int    `json:"index"` // of the action in the step's solution
	Of     int    `json:"of"`
	Action string `json:"action"` // as people read it: "set outbox.enabled=false"
	State  string `json:"state"`
	Error  string `json:"error,omitempty"`
}

// Solve runs step's reference solution ("" the current step), action by action,
// reporting each to report (nil: not reported), then waits for the step's check up to
// its within. It does not hold the exercise's turn while it runs, so the dashboard
// keeps ticking and a learner can watch. A step done already is not run again.
func (e *Engine) Solve(ctx context.Context, id, step string, report func(SolveEvent)) (Status, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return Status{}, err
	}
	unlock := e.turn(id)
	run, err := e.current(ctx, ex)
	if err == nil && run.State != RunOpen {
		err = fmt.Errorf("%s: %w", ex.ID, ErrCompleted)
	}
	var i int
	if err == nil {
		i, err = pickStep(ex, run, step)
	}
	unlock()
	if err != nil {
		return Status{}, err
	}
	s := &ex.Steps[i]
	if run.Steps[i].Done() {
		return e.Status(ctx, id)
	}
	if report == nil {
		report = func(SolveEvent) {}
	}
	for j, a := range s.Solution {
		se := SolveEvent{Step: s.ID, Index: j, Of: len(s.Solution), Action: Describe(a), State: ActionRunning}
		report(se)
		if err := e.act(ctx, ex, run, s, a); err != nil {
			se.State, se.Error = ActionFailed, err.Error()
			report(se)
			return Status{}, fmt.Errorf("solve %s: %s: %w", s.ID, se.Action, err)
		}
		se.State = ActionDone
		report(se)
	}
	return e.await(ctx, ex, s.ID, e.now().Add(s.Check.Timeout()))
}

// act runs one action of step's solution.
func (e *Engine) act(ctx context.Context, ex *Exercise, run *Run, step *Step, a Action) error {
	src := Source(ex.ID)
	switch {
	case len(a.Set) > 0:
		for _, s := range a.Set {
			if _, err := e.lab.Plane.Set(ctx, s.Key, s.Value, src); changed(err) != nil {
				return err
			}
		}
	case a.Fault != nil:
		_, _, err := e.lab.Plane.AddFault(ctx, e.draw(*a.Fault), src)
		return changed(err)
	case a.ClearFaults != "":
		return e.clearFaults(ctx, a.ClearFaults, src)
	case a.Order != nil:
		if e.lab.Shop == nil {
			return unavailable("the gateway")
		}
		order, _, err := e.lab.Shop.PlaceOrder(ctx, *a.Order)
		if err != nil {
			return err
		}
		e.mu.Lock()
		e.placed[run.ID] = append(e.placed[run.ID], order)
		e.mu.Unlock()
	case a.Traffic != nil:
		return e.traffic(ctx, *a.Traffic)
	case a.Scale != nil:
		if e.lab.Scale == nil {
			return unavailable("scaling")
		}
		return e.lab.Scale(ctx, a.Scale.Service, a.Scale.Instances)
	case a.Price != nil:
		return e.setPrice(ctx, *a.Price)
	case a.Rebuild != "":
		if e.lab.Shop == nil {
			return unavailable("orders")
		}
		return e.lab.Shop.Rebuild(ctx, a.Rebuild)
	case a.Wait != nil:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.Wait.D):
		}
	case a.Answer != nil:
		// The reference solution answers as a learner would: by looking. What the lab
		// knows is what it looks up (the slowest span of the order's trace, the fault).
		// It waits, up to the step's within, for what it looks at to be there (a trace
		// complete), as a learner would.
		text := a.Answer.Text
		if a.Answer.From != "" {
			deadline := e.now().Add(step.Check.Timeout())
			for {
				unlock := e.turn(ex.ID)
				cur, err := e.current(ctx, ex)
				if err != nil {
					unlock()
					return err
				}
				i := slices.IndexFunc(ex.Steps, func(s Step) bool { return s.ID == step.ID })
				ev := &evaluation{ctx: ctx, lab: &e.lab, ex: ex, run: cur, step: i, now: e.now()}
				want, ok := ev.expected(*a.Answer)
				unlock()
				if ok {
					text = want
					break
				}
				if !e.now().Before(deadline) {
					return fmt.Errorf("the lab does not know %s yet (is the order's trace all in?)", a.Answer.From)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(e.Poll):
				}
			}
		}
		res, err := e.Answer(ctx, ex.ID, step.ID, text)
		if err != nil {
			return err
		}
		if !res.Right {
			return fmt.Errorf("the answer %q was judged wrong", text)
		}
	}
	return nil
}

// Describe is an action as people read it, in "show me" and `lab exercise solve`.
func Describe(a Action) string {
	switch {
	case len(a.Set) > 0:
		parts := make([]string, len(a.Set))
		for i, s := range a.Set {
			parts[i] = s.Key + "=" + s.Value
		}
		return "set " + strings.Join(parts, ", ")
	case a.Fault != nil:
		f := a.Fault
		target := f.Service
		if f.Instance != "" {
			target = f.Instance
		}
		what := f.Kind
		if f.Value != "" {
			what += "=" + f.Value
		}
		if f.On != "" {
			what += " on " + f.On
		}
		return "add fault " + what + " to " + target
	case a.ClearFaults != "":
		if a.ClearFaults == "all" {
			return "clear every fault"
		}
		return "clear the faults of " + a.ClearFaults
	case a.Order != nil:
		o := a.Order
		qty, country := max(o.Qty, 1), o.Country
		if country == "" {
			country = "DE"
		}
		return fmt.Sprintf("place an order: %d × %s, card %s, to %s", qty, o.SKU, o.Card, country)
	case a.Traffic != nil:
		if !a.Traffic.On {
			return "stop the shop traffic"
		}
		if a.Traffic.Browse > 0 {
			return fmt.Sprintf("start shop traffic at %g orders/s, %d product reads before each", a.Traffic.Rate, a.Traffic.Browse)
		}
		return fmt.Sprintf("start shop traffic at %g orders/s", a.Traffic.Rate)
	case a.Scale != nil:
		return fmt.Sprintf("scale %s to %d instances", a.Scale.Service, a.Scale.Instances)
	case a.Price != nil:
		return fmt.Sprintf("set the price of %s to %d cents (catalog's internal API)", a.Price.SKU, a.Price.Cents)
	case a.Rebuild != "":
		return fmt.Sprintf("rebuild the %s projection from the event store (orders' internal API)", a.Rebuild)
	case a.Wait != nil:
		return "wait " + a.Wait.D.String()
	case a.Answer != nil:
		if a.Answer.From != "" {
			return "answer with what the lab finds: " + a.Answer.From
		}
		return "answer: " + a.Answer.Text
	}
	return "nothing"
}

// Reset ends the current run: cleanup (if it has not run), the settings and faults
// captured at start restored exactly, traffic setup started stopped, the run recorded
// reset. The Status returned has the reset run.
func (e *Engine) Reset(ctx context.Context, id string) (Status, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return Status{}, err
	}
	defer e.turn(id)()
	run, err := e.current(ctx, ex)
	if err != nil {
		return Status{}, err
	}
	err = e.finish(ctx, ex, run, true)
	run.State = RunReset
	return Status{Exercise: id, Run: run}, err
}

// drawn are the faults of run that setup drew at random: a diagnosis's.
func drawn(ex *Exercise, run *Run) []control.Fault {
	var out []control.Fault
	for i, f := range ex.Setup.Faults {
		if f.Random != nil && i < len(run.Injected) {
			out = append(out, run.Injected[i])
		}
	}
	return out
}

// diagnosed reports whether every step of ex that asks about the fault (an answer
// expected from fault.*) is done in run.
func diagnosed(ex *Exercise, run *Run) bool {
	for i := range ex.Steps {
		if q := question(ex.Steps[i].Check); q != nil && strings.HasPrefix(q.Expect.From, "fault.") && !run.Steps[i].Done() {
			return false
		}
	}
	return true
}

// Hidden returns the faults a diagnosis holds hidden, by id, with the exercise holding
// each: those drawn at random by an open run, until its questions about the fault are
// answered or the learner asks for the reveal. The switchboard, the fault list and the
// spans say that an exercise holds a hidden fault there, not where nor how much.
func (e *Engine) Hidden(ctx context.Context) (map[int64]string, error) {
	out := map[int64]string{}
	for i := range e.list {
		ex := &e.list[i]
		if !slices.ContainsFunc(ex.Setup.Faults, func(f Fault) bool { return f.Random != nil }) {
			continue
		}
		run, err := e.store.current(ctx, ex)
		if err != nil {
			return nil, err
		}
		if run == nil || run.State != RunOpen || run.Revealed || diagnosed(ex, run) {
			continue
		}
		for _, f := range drawn(ex, run) {
			if f.ID != 0 {
				out[f.ID] = ex.ID
			}
		}
	}
	return out, nil
}

// Reveal gives up on a diagnosis: it records the reveal (counted, like hints) and
// returns the faults the run drew, which are no longer hidden.
func (e *Engine) Reveal(ctx context.Context, id string) ([]control.Fault, error) {
	ex, err := e.exercise(id)
	if err != nil {
		return nil, err
	}
	defer e.turn(id)()
	run, err := e.current(ctx, ex)
	if err != nil {
		return nil, err
	}
	faults := drawn(ex, run)
	if len(faults) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNoDiagnosis)
	}
	if err := e.store.reveal(ctx, run.ID); err != nil {
		return nil, err
	}
	e.reveal(ctx, ex, run)
	for i := range faults {
		faults[i].Hidden = false
	}
	return faults, nil
}

// revealer is the part of the control plane that shows hidden faults again
// (*control.Plane); a Lab whose Plane lacks it hides nothing in the store.
type revealer interface {
	RevealFaults(ctx context.Context, ids []int64, source string) ([]control.Change, error)
}

// reveal shows the faults run drew, in the control plane, once the diagnosis is
// answered or given up on. A failure (the lab database gone) is not the learner's and
// does not fail the answer: the faults then stay masked, everywhere, until the run's
// cleanup or reset clears them — masked too long, never shown too early.
func (e *Engine) reveal(ctx context.Context, ex *Exercise, run *Run) {
	r, ok := e.lab.Plane.(revealer)
	if !ok {
		return
	}
	var ids []int64
	for _, f := range drawn(ex, run) {
		if f.ID != 0 {
			ids = append(ids, f.ID)
		}
	}
	_, _ = r.RevealFaults(ctx, ids, Source(ex.ID)) // changed(err): stored but not announced is revealed
}
