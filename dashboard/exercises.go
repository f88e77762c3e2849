package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/dashboard/views"
	"microlab/exercises"
	"microlab/lab/loadgen"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// The exercises: the dashboard runs the engine (package exercises) on its own parts —
// the control plane the switchboard uses, the stores the pages read, Prometheus and the
// gateway as configured, the traffic generator — and serves it at /api/lab/exercises,
// which the Exercises view and `lab exercise` both use: one engine, one record of
// progress (in database lab, so a dashboard restart keeps it).

// labExercises is the engine and what the dashboard keeps beside it.
type labExercises struct {
	engine *exercises.Engine
	byID   map[string]*exercises.Exercise
	// diagnoses are the exercises that draw a fault at random: the timeline masks the
	// fault changes they make, which would otherwise say where the fault is.
	diagnoses map[string]bool
	// base is the server's lifetime: "show me" outlives the request that asked for it.
	base context.Context

	mu     sync.Mutex
	solves map[string]*exercises.SolveView // exercise id → its latest "show me"
	// starting counts the starts of each diagnosis under way: its fault is in force
	// (and announced, and the switchboard re-reads the list) a moment before the engine
	// has recorded which it drew, and Hidden knows it.
	starting map[string]int
}

// attachExercises builds the engine's Lab from the server's parts and starts the engine
// on pool (database lab) with list. It needs the control plane: exercises change the
// lab's switches, through the same Plane as the switchboard.
func (s *server) attachExercises(ctx context.Context, pool *pgxpool.Pool, list []exercises.Exercise) error {
	if s.plane == nil {
		return errors.New("exercises: the lab database is not connected (no control plane)")
	}
	client := httpx.NewClient(10 * time.Second)
	lab := exercises.Lab{Plane: s.plane, State: s.plane.Store,
		Events: s.src.Events, Traces: s.src.Traces, Sagas: s.src.Sagas,
		Traffic: s.exerciseTraffic}
	if s.cfg.PrometheusURL != "" {
		lab.Prometheus = exercises.PrometheusAPI{URL: s.cfg.PrometheusURL, HTTP: client}
	}
	if s.cfg.GatewayURL != "" {
		gw := &exercises.Gateway{API: loadgen.NewClient(s.cfg.GatewayURL, client)}
		for _, u := range demoUsers {
			gw.Accounts = append(gw.Accounts, loadgen.Account{Email: u.email, Password: u.password})
		}
		if s.cfg.PaymentsURL != "" {
			gw.Payments = loadgen.NewClient(s.cfg.PaymentsURL, client)
		}
		if s.cfg.CatalogURL != "" {
			gw.Catalog = loadgen.NewClient(s.cfg.CatalogURL, client)
		}
		if s.cfg.OrdersURL != "" {
			gw.Orders = loadgen.NewClient(s.cfg.OrdersURL, client)
		}
		lab.Shop = gw
	}
	// Scale sets scale.<service>: the dashboard does not run the services, lab up's
	// scale follower (lab/scaling) does, and starts or stops instances to match.
	lab.Scale = s.exerciseScale
	e, err := exercises.New(ctx, pool, list, lab)
	if err != nil {
		return err
	}
	x := &labExercises{engine: e, byID: map[string]*exercises.Exercise{}, diagnoses: map[string]bool{},
		base: ctx, solves: map[string]*exercises.SolveView{}, starting: map[string]int{}}
	for i := range list {
		ex := &list[i]
		x.byID[ex.ID] = ex
		if ex.Diagnosis() {
			x.diagnoses[ex.ID] = true
		}
	}
	s.exs.Store(x)
	return nil
}

// exerciseScale is the engine's scale hook: the setting scale.<service>, through the
// control plane the switchboard uses (validated, stored, announced on lab.control).
func (s *server) exerciseScale(ctx context.Context, service string, instances int) error {
	key := control.ScaleKey(service)
	if _, ok := control.Lookup(key); !ok {
		return fmt.Errorf("scale: %s has no scale setting (the queue consumers have one: %s)",
			service, strings.Join(control.ScaleServices, ", "))
	}
	if _, err := s.plane.Set(ctx, key, strconv.Itoa(instances), "exercise"); err != nil && !errors.Is(err, control.ErrNotAnnounced) {
		return err
	}
	return nil
}

// exerciseTraffic is the engine's traffic hook: the switchboard's generator.
func (s *server) exerciseTraffic(_ context.Context, on bool, rate float64, mix string, browse int) error {
	if !on {
		s.traffic.stop()
		return nil
	}
	if rate <= 0 {
		rate = 2
	}
	if rate > maxTrafficRate {
		return fmt.Errorf("traffic: rate %g is more than the dashboard's %g orders/s", rate, maxTrafficRate)
	}
	var m loadgen.Mix
	if mix != "" {
		var err error
		if m, err = loadgen.ParseMix(mix); err != nil {
			return fmt.Errorf("traffic: %w", err)
		}
	}
	s.traffic.start(rate, maxTrafficDuration, m, browse)
	return nil
}

func (s *server) exercisesOn() (*labExercises, error) {
	x := s.exs.Load()
	if x == nil {
		return nil, httpx.Errorf(http.StatusServiceUnavailable, "exercises_unavailable",
			"the exercise engine is not running: the lab database is not connected")
	}
	return x, nil
}

// exerciseError translates the engine's outcomes once, at the edge: the unknown is 404,
// what the run's state does not allow is 409, a question to a step that asks none 400,
// what this lab cannot do 503; control's refusal of a setting or fault is 400.
func exerciseError(err error) error {
	var he *httpx.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he):
		return err
	}
	for _, o := range exerciseOutcomes {
		if errors.Is(err, o.err) {
			return httpx.Errorf(o.status, o.code, "%s", err.Error())
		}
	}
	if control.IsInvalid(err) {
		return httpx.Errorf(http.StatusBadRequest, "invalid_change", "%s", err.Error())
	}
	return err
}

// exerciseOutcomes are the engine's sentinel errors and what the API answers for each.
var exerciseOutcomes = []struct {
	err    error
	status int
	code   string
}{
	{exercises.ErrUnknownExercise, http.StatusNotFound, "unknown_exercise"},
	{exercises.ErrUnknownStep, http.StatusNotFound, "unknown_step"},
	{exercises.ErrNotStarted, http.StatusConflict, "not_started"},
	{exercises.ErrNotCurrent, http.StatusConflict, "not_current"},
	{exercises.ErrNoMoreHints, http.StatusConflict, "no_more_hints"},
	{exercises.ErrCompleted, http.StatusConflict, "completed"},
	{exercises.ErrNoDiagnosis, http.StatusConflict, "no_diagnosis"},
	{exercises.ErrTraceArriving, http.StatusConflict, "trace_arriving"},
	{exercises.ErrAnotherOpen, http.StatusConflict, "another_open"},
	{exercises.ErrNoQuestion, http.StatusBadRequest, "no_question"},
	{exercises.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
}

// evidenceLink is where the dashboard shows a piece of evidence: the trace, the
// order's events, its saga, the switchboard, the charts.
func evidenceLink(e exercises.Evidence) exercises.EvidenceView {
	out := exercises.EvidenceView{Evidence: e}
	short := func(s string) string {
		if len(s) > 12 {
			return s[:8] + "…"
		}
		return s
	}
	switch e.Kind {
	case exercises.EvidenceTrace:
		if validTraceID(e.ID) {
			out.Href = "/traces/" + e.ID
		}
		out.Label = "trace " + short(e.ID)
	case exercises.EvidenceEvent:
		out.Href = "/events"
		if e.Order != "" {
			out.Href += "?correlation=" + url.QueryEscape(e.Order)
		}
		out.Label = "event " + short(e.ID)
		if e.Order != "" {
			out.Label += " of order " + short(e.Order)
		}
	case exercises.EvidenceSaga, exercises.EvidenceOrder, exercises.EvidenceLedger:
		out.Href = "/sagas?order=" + url.QueryEscape(e.ID)
		out.Label = e.Kind + " of order " + short(e.ID)
		if e.Kind == exercises.EvidenceOrder { // not "order of order"
			out.Label = "order " + short(e.ID)
		}
	case exercises.EvidenceSetting:
		out.Href, out.Label = "/switchboard", e.ID+" = "+e.Value
	case exercises.EvidenceFault:
		out.Href, out.Label = "/switchboard", "fault "+e.Value
	case exercises.EvidencePromQL:
		out.Href, out.Label = "/charts", e.ID+" = "+e.Value
	case exercises.EvidenceAnswer:
		out.Label = "answered: " + e.Value
	default:
		out.Label = e.Kind + " " + e.ID
	}
	return out
}

// detail evaluates exercise id now and describes it with its steps.
func (x *labExercises) detail(ctx context.Context, id string) (exercises.View, error) {
	ex, ok := x.byID[id]
	if !ok {
		return exercises.View{}, fmt.Errorf("%w: %q", exercises.ErrUnknownExercise, id)
	}
	st, err := x.engine.Status(ctx, id)
	if err != nil {
		return exercises.View{}, err
	}
	if st.Run != nil {
		// What the lab was before the exercise is for reset, not for the page: while a
		// diagnosis is open it could hold another's hidden fault.
		run := *st.Run
		run.Snapshot = exercises.Snapshot{}
		st.Run = &run
	}
	d := exercises.View{ID: ex.ID, Title: ex.Title, Level: ex.Level, Minutes: ex.Minutes, Patterns: ex.Patterns,
		Prerequisites: ex.Prerequisites, Diagnosis: ex.Diagnosis(), README: ex.README, Status: st,
		Steps: make([]exercises.StepView, 0, len(ex.Steps))}
	if d.Prerequisites == nil {
		d.Prerequisites = []string{}
	}
	if st.Run != nil {
		d.State = st.Run.State
	}
	for i := range ex.Steps {
		step := &ex.Steps[i]
		sj := exercises.StepView{ID: step.ID, Number: i + 1, Instructions: step.Instructions, State: exercises.StepLocked,
			Hints: []string{}, HintsTotal: len(step.Hints)}
		if q := step.Question(); q != nil {
			sj.Question = &exercises.QuestionView{Text: q.Question, Choices: q.Choices}
		}
		if st.Run != nil && i < len(st.Run.Steps) && st.Run.Steps[i].ID == step.ID {
			sp := st.Run.Steps[i]
			sj.Hints = slices.Clone(step.Hints[:min(sp.Hints, len(step.Hints))])
			sj.Answers = sp.Answers
			switch {
			case sp.Done():
				sj.State, sj.DoneAt = exercises.StepDone, sp.DoneAt
				for _, e := range sp.Evidence {
					sj.Evidence = append(sj.Evidence, evidenceLink(e))
				}
			case st.Current == step.ID:
				sj.State, sj.Missing, sj.Waiting = exercises.StepCurrent, st.Missing, st.Waiting
			}
		}
		at := exerciseFile(id, "exercise.yaml")
		sj.HintsHTML, sj.MissingHTML = renderInlines(sj.Hints, at), renderInlineAt(sj.Missing, at)
		if sj.Waiting && sj.Missing == "" {
			// Inside the check's window (the learner has not acted yet, or a hold of 20 s
			// runs, or a trace is still arriving): say the lab is watching, not nothing.
			sj.MissingHTML = renderInline(stillLooking)
		}
		d.Steps = append(d.Steps, sj)
	}
	d.Solving = x.solving(id)
	return d, nil
}

// solving is a copy of exercise id's latest "show me", nil if none.
func (x *labExercises) solving(id string) *exercises.SolveView {
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.solves[id]
	if r == nil {
		return nil
	}
	c := *r
	c.Actions = slices.Clone(r.Actions)
	return &c
}

// solve starts "show me" on the current step of id's open run, in the background (a
// solution waits, 20 s and more, longer than a request may take): each action is
// recorded for GET /api/lab/exercises/{id} and broadcast as "exercise.solve".
func (x *labExercises) solve(ctx context.Context, id string, b broadcaster) (*exercises.SolveView, error) {
	st, err := x.engine.Status(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case st.Run == nil:
		return nil, fmt.Errorf("%s: %w", id, exercises.ErrNotStarted)
	case st.Complete || st.Current == "":
		return nil, fmt.Errorf("%s: %w", id, exercises.ErrCompleted)
	}
	x.mu.Lock()
	if r := x.solves[id]; r != nil && r.Running {
		x.mu.Unlock()
		return nil, httpx.Errorf(http.StatusConflict, "solve_running", "the solution of step %s is running already", r.Step)
	}
	r := &exercises.SolveView{Step: st.Current, Running: true, Started: time.Now(), Actions: []exercises.SolveEvent{}}
	x.solves[id] = r
	x.mu.Unlock()
	go func() {
		final, err := x.engine.Solve(x.base, id, r.Step, func(ev exercises.SolveEvent) {
			x.mu.Lock()
			if ev.Index < len(r.Actions) {
				r.Actions[ev.Index] = ev
			} else {
				r.Actions = append(r.Actions, ev)
			}
			x.mu.Unlock()
			broadcast(b, "exercise.solve", map[string]any{"exercise": id, "action": ev})
		})
		x.mu.Lock()
		r.Running = false
		switch {
		case err != nil:
			r.Error = err.Error()
		case final.Current == r.Step:
			r.Error = "the solution ran but the check does not hold yet: " + final.Missing
		}
		x.mu.Unlock()
		broadcast(b, "exercise.solve", map[string]any{"exercise": id, "done": true, "error": r.Error})
	}()
	return x.solving(id), nil
}

// --- the API ---

// getExercises: GET /api/lab/exercises → {"items": [summary with progress]}.
func (s *server) getExercises(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	list, err := x.engine.List(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"items": list})
	return nil
}

// getExercise: GET /api/lab/exercises/{id} → the exercise, evaluated now.
func (s *server) getExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	d, err := x.detail(r.Context(), r.PathValue("id"))
	if err != nil {
		return exerciseError(err)
	}
	httpx.WriteJSON(w, http.StatusOK, d)
	return nil
}

// exerciseSource is who starts exercises from the dashboard (the run's who).
const exerciseSource = "dashboard"

// startExercise: POST /api/lab/exercises/{id}/start → the exercise after setup. A run
// already going is reset first.
func (s *server) startExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if x.diagnoses[id] {
		x.mark(id, 1)
		defer x.mark(id, -1)
	}
	if _, err := x.engine.Start(r.Context(), id, exerciseSource); err != nil {
		return exerciseError(err)
	}
	x.forget(id)
	return s.writeExercise(w, r, x, id)
}

// resetExercise: POST /api/lab/exercises/{id}/reset → the exercise after the lab is put
// back as it was before start.
func (s *server) resetExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := x.engine.Reset(r.Context(), id); err != nil {
		return exerciseError(err)
	}
	x.forget(id)
	return s.writeExercise(w, r, x, id)
}

// mark counts a start of diagnosis id beginning (+1) or over (-1).
func (x *labExercises) mark(id string, n int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.starting[id] += n; x.starting[id] <= 0 {
		delete(x.starting, id)
	}
}

// forget drops id's finished "show me" (a new run starts with none).
func (x *labExercises) forget(id string) {
	x.mu.Lock()
	if r := x.solves[id]; r != nil && !r.Running {
		delete(x.solves, id)
	}
	x.mu.Unlock()
}

func (s *server) writeExercise(w http.ResponseWriter, r *http.Request, x *labExercises, id string) error {
	d, err := x.detail(r.Context(), id)
	if err != nil {
		return exerciseError(err)
	}
	httpx.WriteJSON(w, http.StatusOK, d)
	return nil
}

// hintExercise: POST /api/lab/exercises/{id}/steps/{step}/hint → {hint, revealed, of}.
func (s *server) hintExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	h, err := x.engine.Hint(r.Context(), r.PathValue("id"), r.PathValue("step"))
	if err != nil {
		return exerciseError(err)
	}
	httpx.WriteJSON(w, http.StatusOK, h)
	return nil
}

// maxAnswer bounds an answer: a service's name, a span's, a sentence of a choice.
const maxAnswer = 500

// answerExercise: POST /api/lab/exercises/{id}/steps/{step}/answer {"answer": "..."} →
// {right, hint (after a wrong answer), status}.
func (s *server) answerExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	var in struct {
		Answer string `json:"answer"`
	}
	if err := httpx.Decode(w, r, &in, 4<<10); err != nil {
		return err
	}
	in.Answer = strings.TrimSpace(in.Answer)
	if in.Answer == "" || len(in.Answer) > maxAnswer {
		return httpx.Errorf(http.StatusBadRequest, "invalid_answer", "an answer is some text, at most %d bytes", maxAnswer)
	}
	res, err := x.engine.Answer(r.Context(), r.PathValue("id"), r.PathValue("step"), in.Answer)
	if err != nil {
		return exerciseError(err)
	}
	if res.Status.Run != nil {
		run := *res.Status.Run
		run.Snapshot = exercises.Snapshot{}
		res.Status.Run = &run
	}
	// The hint after a wrong answer is Markdown like the others: hintHTML for the page.
	httpx.WriteJSON(w, http.StatusOK, struct {
		exercises.AnswerResult
		HintHTML string `json:"hintHTML,omitempty"`
	}{res, renderInlineAt(res.Hint, exerciseFile(r.PathValue("id"), "exercise.yaml"))})
	return nil
}

// solveExercise: POST /api/lab/exercises/{id}/solve → 202 {solving}: the current step's
// reference solution runs in the background; GET shows its actions as they run.
func (s *server) solveExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	sr, err := x.solve(r.Context(), r.PathValue("id"), s.src.Hub)
	if err != nil {
		return exerciseError(err)
	}
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"solving": sr})
	return nil
}

// revealExercise: POST /api/lab/exercises/{id}/reveal → {faults}: the diagnosis's
// hidden fault, given up on (counted).
func (s *server) revealExercise(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	fs, err := x.engine.Reveal(r.Context(), r.PathValue("id"))
	if err != nil {
		return exerciseError(err)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"faults": faultRows(fs, time.Now())})
	return nil
}

// stillLooking is what the page says of a current step whose check may yet hold.
const stillLooking = "Not done yet: the lab is watching, and ticks this step as soon as the telemetry shows it done (some checks take a few seconds)."

// --- hidden faults ---

// hiddenFaultText is what the switchboard and the map show of a diagnosis's fault.
const hiddenFaultText = control.HiddenFaultText

// hidden returns the ids of faults open diagnoses hold hidden (and, while a diagnosis
// is starting, every fault it made). If the engine cannot tell, every fault a diagnosis
// made counts as hidden: better a fault masked too long than the answer shown.
func (s *server) hidden(ctx context.Context, fs []control.Fault) map[int64]bool {
	out := map[int64]bool{}
	for _, f := range fs {
		if f.Hidden { // the control plane's own flag: what the services honour too
			out[f.ID] = true
		}
	}
	x := s.exs.Load()
	if x == nil || len(x.diagnoses) == 0 {
		return out
	}
	h, err := x.engine.Hidden(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "hidden faults unknown: masking every diagnosis's", "err", err)
	}
	x.mu.Lock()
	for _, f := range fs {
		ex := strings.TrimPrefix(f.Source, exercises.Source(""))
		if x.diagnoses[ex] && (err != nil || x.starting[ex] > 0) {
			out[f.ID] = true
		}
	}
	x.mu.Unlock()
	for id := range h {
		out[id] = true
	}
	return out
}

// publicFaults are the faults in force as the pages and the API show them: a hidden
// one says an exercise holds it, not where nor how.
func (s *server) publicFaults(ctx context.Context, fs []control.Fault) []views.FaultRow {
	rows := faultRows(fs, time.Now())
	hid := s.hidden(ctx, fs)
	for i, f := range rows {
		if hid[f.ID] {
			rows[i] = views.FaultRow{ID: f.ID, Created: f.Created, Expires: f.Expires, SecondsLeft: f.SecondsLeft,
				Source: f.Source, Who: f.Who, Target: "hidden", Kind: "hidden", Text: hiddenFaultText, Hidden: true}
		}
	}
	return rows
}

// publicChange is a change as the timeline shows it: a diagnosis's fault changes are
// masked (the key names the service).
func (s *server) publicChange(c control.Change) views.ChangeRow {
	row := changeRow(c)
	if x := s.exs.Load(); x != nil && strings.HasPrefix(c.Key, "fault ") && c.Old != control.HiddenFaultText &&
		x.diagnoses[strings.TrimPrefix(c.Source, exercises.Source(""))] { // (a reveal names it)
		row.Key, row.Old, row.New = "fault (hidden)", "…", hiddenFaultText
	}
	return row
}

// --- the pages ---

func (s *server) exercisesPage(w http.ResponseWriter, r *http.Request) error {
	var m views.ExercisesModel
	x, err := s.exercisesOn()
	if err == nil {
		var list []exercises.Summary
		if list, err = x.engine.List(r.Context()); err == nil {
			for _, e := range list {
				m.Items = append(m.Items, views.ExerciseItem{ID: e.ID, Title: e.Title, Level: e.Level, Minutes: e.Minutes,
					Patterns: e.Patterns, Prerequisites: e.Prerequisites, Steps: e.Steps, Done: e.Done, State: e.State})
			}
		}
	}
	if err != nil {
		s.log.WarnContext(r.Context(), "exercises unavailable", "err", err)
		m.Error = "The exercises cannot be shown: " + err.Error()
	}
	return s.render(w, r, views.Page{Title: "Exercises", Active: "exercises"}, views.Exercises(m))
}

func (s *server) exercisePage(w http.ResponseWriter, r *http.Request) error {
	x, err := s.exercisesOn()
	if err != nil {
		return err
	}
	d, err := x.detail(r.Context(), r.PathValue("id"))
	if err != nil {
		return exerciseError(err)
	}
	ext := s.externals()
	m := views.ExerciseModel{ID: d.ID, Title: d.Title, Level: d.Level, Minutes: d.Minutes, Patterns: d.Patterns,
		Prerequisites: d.Prerequisites, Diagnosis: d.Diagnosis, README: renderMarkdownFor(d.README, exerciseFile(d.ID, "README.md"), ext), State: d.State}
	for _, st := range d.Steps {
		vs := views.ExerciseStep{ID: st.ID, Number: st.Number, Instructions: renderMarkdownFor(st.Instructions, exerciseFile(d.ID, "exercise.yaml"), ext),
			State: st.State, Missing: st.MissingHTML, Hints: st.HintsHTML, HintsTotal: st.HintsTotal}
		if st.Question != nil {
			vs.Question, vs.Choices = st.Question.Text, st.Question.Choices
		}
		for _, e := range st.Evidence {
			vs.Evidence = append(vs.Evidence, views.EvidenceLink{Href: e.Href, Label: e.Label})
		}
		m.Steps = append(m.Steps, vs)
	}
	return s.render(w, r, views.Page{Title: d.Title, Active: "exercises"}, views.Exercise(m))
}

// exerciseFile is the repository path of a built-in exercise's file: where its texts'
// relative links are written from.
func exerciseFile(id, name string) string { return "exercises/" + id + "/" + name }
