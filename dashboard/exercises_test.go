package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/exercises"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// exerciseLab is the dashboard with the exercise engine on its real parts: a lab
// database and a broker vhost of the test's own, the control plane, the stores. The
// gateway and Prometheus are addresses nothing answers: the steps these tests do are
// the switchboard's.
type exerciseLab struct {
	*fixture
	store *control.Store
	pool  *pgxpool.Pool
	pub   *bus.Publisher
}

func newExerciseLab(t *testing.T, list []exercises.Exercise) *exerciseLab {
	t.Helper()
	ctx := context.Background()
	url, store := testenv.LabDB(t, testenv.Name("t_dex_"))
	b := testenv.Dial(t, testenv.VHost(t))
	ch, err := b.Conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.DeclareExchanges(ch); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()
	pool, err := pg.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	l := &exerciseLab{store: store, pool: pool, pub: b.Pub}
	l.fixture = l.server(t, list)
	return l
}

// server is a new dashboard (a new engine) on the lab's database: what a restart is.
func (l *exerciseLab) server(t *testing.T, list []exercises.Exercise) *fixture {
	t.Helper()
	env := map[string]string{"PROMETHEUS_URL": closedURL(t), "GATEWAY_URL": closedURL(t), "PAYMENTS_URL": closedURL(t),
		"RABBITMQ_MANAGEMENT_URL": closedURL(t)}
	f := newFixture(t, env, Sources{}, l.store, l.pub)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := f.srv.attachExercises(ctx, l.pool, list); err != nil {
		t.Fatal(err)
	}
	return f
}

func builtin(t *testing.T) []exercises.Exercise {
	t.Helper()
	list, err := exercises.Load(exercises.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// call makes a request as the dashboard's own page does (Origin: the dashboard).
func call(t *testing.T, f *fixture, method, path, body string) (int, string) {
	t.Helper()
	resp, out := f.do(t, method, path, body, map[string]string{"Origin": f.ts.URL})
	return resp.StatusCode, out
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return v
}

func settingsOf(t *testing.T, f *fixture) map[string]string {
	t.Helper()
	code, body := call(t, f, "GET", "/api/lab/settings", "")
	if code != 200 {
		t.Fatalf("GET settings: %d %s", code, body)
	}
	out := map[string]string{}
	for _, s := range decode[struct{ Settings []settingJSON }](t, body).Settings {
		out[s.Key] = s.Value
	}
	return out
}

func exerciseOf(t *testing.T, f *fixture, id string) exercises.View {
	t.Helper()
	code, body := call(t, f, "GET", "/api/lab/exercises/"+id, "")
	if code != 200 {
		t.Fatalf("GET %s: %d %s", id, code, body)
	}
	return decode[exercises.View](t, body)
}

// The exercise API and pages, end to end on 07-outbox: the list; the exercise before
// start; start switches the real settings; the first step is not done until the
// learner switches the outbox off through the switchboard's API, then it is, with its
// evidence; hints reveal and count; what the run does not allow is refused with the
// API's JSON errors; the page renders; progress survives a new dashboard; "show me"
// runs a step's solution; reset puts back the settings as they were before start.
func TestExercisesAPI(t *testing.T) {
	t.Parallel()
	l := newExerciseLab(t, builtin(t))

	code, body := call(t, l.fixture, "GET", "/api/lab/exercises", "")
	list := decode[struct{ Items []exercises.Summary }](t, body)
	ids := map[string]exercises.Summary{}
	for _, e := range list.Items {
		ids[e.ID] = e
	}
	if code != 200 || ids["07-outbox"].Title == "" || ids["01-follow-an-order"].Title == "" || ids["07-outbox"].State != "" {
		t.Fatalf("GET exercises: %d %s", code, body)
	}
	before := exerciseOf(t, l.fixture, "07-outbox")
	if before.State != "" || len(before.Steps) != 6 || before.Steps[0].State != exercises.StepLocked || !strings.Contains(before.README, "#") ||
		before.Steps[5].Question == nil || len(before.Steps[5].Question.Choices) != 3 {
		t.Fatalf("07-outbox before start: %+v", before)
	}
	if _, body := call(t, l.fixture, "GET", "/api/lab/exercises/07-outbox", ""); strings.Contains(body, `"expect"`) || strings.Contains(body, `"wrong"`) {
		t.Errorf("the exercise tells what it expects: %s", body)
	}

	// The lab as the learner left it: not the exercise's starting point.
	for _, kv := range [][2]string{{"saga.mode", "orchestration"}, {"outbox.enabled", "false"}} {
		if code, body := call(t, l.fixture, "POST", "/api/lab/settings", `{"key":"`+kv[0]+`","value":"`+kv[1]+`"}`); code != 200 {
			t.Fatalf("set %s: %d %s", kv[0], code, body)
		}
	}
	prior := settingsOf(t, l.fixture)

	// Refused: not started yet; a POST from elsewhere; unknown exercise or step; bad JSON.
	for _, tc := range []struct {
		method, path, body string
		hdr                map[string]string
		status             int
		code               string
	}{
		{"POST", "/api/lab/exercises/07-outbox/steps/switch-the-outbox-off/hint", "", nil, 409, "not_started"},
		{"POST", "/api/lab/exercises/07-outbox/solve", "", nil, 409, "not_started"},
		{"POST", "/api/lab/exercises/07-outbox/reset", "", nil, 409, "not_started"},
		{"POST", "/api/lab/exercises/07-outbox/start", "", map[string]string{"Origin": "http://evil.example"}, 403, ""},
		{"POST", "/api/lab/exercises/07-outbox/start", "", map[string]string{}, 403, ""},
		{"POST", "/api/lab/exercises/99-nosuch/start", "", nil, 404, "unknown_exercise"},
		{"GET", "/api/lab/exercises/99-nosuch", "", nil, 404, "unknown_exercise"},
		{"GET", "/exercises/99-nosuch", "", nil, 404, "unknown_exercise"},
		{"POST", "/api/lab/exercises/07-outbox/reveal", "", nil, 409, "not_started"},
	} {
		hdr := tc.hdr
		if hdr == nil {
			hdr = map[string]string{"Origin": l.ts.URL}
		}
		resp, body := l.do(t, tc.method, tc.path, tc.body, hdr)
		eb := decode[errorJSON](t, body)
		if resp.StatusCode != tc.status || (tc.code != "" && eb.Error.Code != tc.code) || eb.Error.Message == "" {
			t.Errorf("%s %s: %d %s; want %d %s", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.code)
		}
	}
	if got := settingsOf(t, l.fixture); got["saga.mode"] != "orchestration" {
		t.Fatalf("a refused start changed the lab: %v", got)
	}

	code, body = call(t, l.fixture, "POST", "/api/lab/exercises/07-outbox/start", "")
	if code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	started := decode[exercises.View](t, body)
	if got := settingsOf(t, l.fixture); got["outbox.enabled"] != "true" || got["saga.mode"] != "choreography" {
		t.Fatalf("setup did not switch the lab: %v", got)
	}
	if started.State != exercises.RunOpen || started.Steps[0].State != exercises.StepCurrent || started.Steps[1].State != exercises.StepLocked ||
		started.Status.Current != "switch-the-outbox-off" || started.Status.Run.Snapshot.Settings != nil {
		t.Fatalf("after start: %+v", started)
	}
	// Within its check's window the current step says the lab is watching, not nothing.
	if s := started.Steps[0]; !s.Waiting || s.Missing != "" || !strings.Contains(s.MissingHTML, "the lab is watching") {
		t.Errorf("step 1 just started: waiting %v, missing %q, missingHTML %q", s.Waiting, s.Missing, s.MissingHTML)
	}
	// One exercise at a time: another is refused while this one is open, naming it.
	if code, body := call(t, l.fixture, "POST", "/api/lab/exercises/09-poison-message/start", ""); code != 409 ||
		decode[errorJSON](t, body).Error.Code != "another_open" || !strings.Contains(body, "07-outbox is open") {
		t.Errorf("a second exercise while 07-outbox is open: %d %s", code, body)
	}

	// Hints: revealed one at a time and counted; no more than there are.
	code, body = call(t, l.fixture, "POST", "/api/lab/exercises/07-outbox/steps/switch-the-outbox-off/hint", "")
	if h := decode[exercises.HintResult](t, body); code != 200 || h.Revealed != 1 || h.Of != 1 || !strings.Contains(h.Hint, "Switchboard") {
		t.Fatalf("hint: %d %s", code, body)
	}
	for _, tc := range []struct {
		path, body   string
		status       int
		code, detail string
	}{
		{"/api/lab/exercises/07-outbox/steps/switch-the-outbox-off/hint", "", 409, "no_more_hints", "1 of 1"},
		{"/api/lab/exercises/07-outbox/steps/switch-the-outbox-off/answer", `{"answer":"yes"}`, 400, "no_question", ""},
		{"/api/lab/exercises/07-outbox/steps/explain-it/answer", `{"answer":"yes"}`, 409, "not_current", ""},
		{"/api/lab/exercises/07-outbox/steps/no-such-step/hint", "", 404, "unknown_step", "switch-the-outbox-off"},
		{"/api/lab/exercises/07-outbox/steps/explain-it/answer", `{"answer":`, 400, "malformed_json", ""},
		{"/api/lab/exercises/07-outbox/steps/explain-it/answer", `{"answer":"x","extra":1}`, 400, "", "extra"},
		{"/api/lab/exercises/07-outbox/steps/explain-it/answer", `{"answer":"  "}`, 400, "invalid_answer", ""},
		{"/api/lab/exercises/07-outbox/steps/explain-it/answer", `{"answer":"` + strings.Repeat("x", 600) + `"}`, 400, "invalid_answer", ""},
		{"/api/lab/exercises/07-outbox/reveal", "", 409, "no_diagnosis", ""},
	} {
		code, body := call(t, l.fixture, "POST", tc.path, tc.body)
		eb := decode[errorJSON](t, body)
		if code != tc.status || (tc.code != "" && eb.Error.Code != tc.code) || !strings.Contains(eb.Error.Message, tc.detail) {
			t.Errorf("POST %s %s: %d %s; want %d %s %q", tc.path, tc.body, code, body, tc.status, tc.code, tc.detail)
		}
	}

	// Not done until the learner does it, through the switchboard's own API.
	if ex := exerciseOf(t, l.fixture, "07-outbox"); ex.Steps[0].State != exercises.StepCurrent || len(ex.Steps[0].Hints) != 1 {
		t.Fatalf("step 1 before the learner acted: %+v", ex.Steps[0])
	}
	if code, body := call(t, l.fixture, "POST", "/api/lab/settings", `{"key":"outbox.enabled","value":"false"}`); code != 200 {
		t.Fatalf("switch the outbox off: %d %s", code, body)
	}
	ex := exerciseOf(t, l.fixture, "07-outbox")
	s0 := ex.Steps[0]
	if s0.State != exercises.StepDone || s0.DoneAt == nil || len(s0.Evidence) == 0 || s0.Evidence[0].Href != "/switchboard" ||
		s0.Evidence[0].Kind != exercises.EvidenceSetting || !strings.Contains(s0.Evidence[0].Label, "outbox.enabled") ||
		ex.Steps[1].State != exercises.StepCurrent || ex.Status.Current != "arm-the-crash" {
		t.Fatalf("after outbox.enabled=false: %+v", ex)
	}

	// The pages: the list with progress, the exercise with its steps.
	resp, page := l.do(t, "GET", "/exercises", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `data-id="07-outbox"`) || !strings.Contains(page, "1 of 6 steps") ||
		!strings.Contains(page, `data-testid="nav-exercises"`) {
		t.Errorf("GET /exercises: %d\n%s", resp.StatusCode, page)
	}
	resp, page = l.do(t, "GET", "/exercises/07-outbox", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "Transactional outbox vs dual write") ||
		!strings.Contains(page, "Every service now does a <em>dual write</em>") ||
		!strings.Contains(page, `href="/switchboard"`) || // a README's http://localhost:8080/… link, made relative
		!strings.Contains(page, `data-step="switch-the-outbox-off" data-state="done"`) ||
		!strings.Contains(page, `/static/exercises.js`) || !strings.Contains(page, `data-testid="answer-choice-2"`) {
		t.Errorf("GET /exercises/07-outbox: %d\n%s", resp.StatusCode, page)
	}
	if resp, page := l.do(t, "GET", "/", "", nil); resp.StatusCode != 200 || !strings.Contains(page, `data-testid="start-here"`) ||
		!strings.Contains(page, `href="/exercises"`) {
		t.Errorf("the overview does not lead a newcomer to the exercises: %d", resp.StatusCode)
	}

	// A new dashboard on the same database: the progress is still there.
	again := l.server(t, builtin(t))
	if ex := exerciseOf(t, again, "07-outbox"); ex.Steps[0].State != exercises.StepDone || len(ex.Steps[0].Hints) != 1 || ex.Status.Current != "arm-the-crash" {
		t.Fatalf("after a restart: %+v", ex)
	}

	// "show me": the current step's solution runs in the background, its actions shown.
	code, body = call(t, again, "POST", "/api/lab/exercises/07-outbox/solve", "")
	if code != http.StatusAccepted || decode[struct{ Solving exercises.SolveView }](t, body).Solving.Step != "arm-the-crash" {
		t.Fatalf("solve: %d %s", code, body)
	}
	for end := time.Now().Add(patience); ; time.Sleep(50 * time.Millisecond) {
		ex := exerciseOf(t, again, "07-outbox")
		if sv := ex.Solving; sv != nil && !sv.Running {
			if sv.Error != "" || len(sv.Actions) != 1 || sv.Actions[0].State != exercises.ActionDone ||
				!strings.Contains(sv.Actions[0].Action, "crash_after_commit") || ex.Steps[1].State != exercises.StepDone {
				t.Fatalf("after solve: %+v %+v", sv, ex.Steps[1])
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("solve never finished: %+v", ex.Solving)
		}
	}
	if code, body := call(t, again, "GET", "/api/lab/faults", ""); code != 200 || !strings.Contains(body, "crash_after_commit") {
		t.Errorf("the solution's fault is not in force: %d %s", code, body)
	}

	// Reset: the settings and faults exactly as they were before start.
	code, body = call(t, again, "POST", "/api/lab/exercises/07-outbox/reset", "")
	if ex := decode[exercises.View](t, body); code != 200 || ex.State != "" || ex.Steps[0].State != exercises.StepLocked {
		t.Fatalf("reset: %d %s", code, body)
	}
	if got := settingsOf(t, again); !equalMaps(got, prior) {
		t.Errorf("after reset the settings are %v, want %v", got, prior)
	}
	if code, body := call(t, again, "GET", "/api/lab/faults", ""); code != 200 || strings.Contains(body, "crash_after_commit") {
		t.Errorf("after reset a fault is left: %s", body)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A README is rendered from Markdown with no raw HTML passed through: a <script> in
// it, an inline handler, a javascript: link reach the page as nothing executable.
func TestReadmeRenderEscapesHTML(t *testing.T) {
	t.Parallel()
	const readme = "# Hostile\n\n<script>alert('readme')</script>\n\nText <img src=x onerror=\"alert(1)\"> here.\n\n" +
		"[click](javascript:alert(2)) and [the sagas](http://localhost:8080/sagas?outcome=cancelled)\n"
	out := renderMarkdown(readme)
	for _, bad := range []string{"<script", "onerror", "javascript:", "<img"} {
		if strings.Contains(strings.ToLower(out), bad) {
			t.Errorf("rendered README holds %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, "<h1>Hostile</h1>") || !strings.Contains(out, `href="/sagas?outcome=cancelled"`) {
		t.Errorf("rendered README:\n%s", out)
	}

	// And on the page itself, through the engine.
	ex, err := exercises.Parse("exercises/90-hostile/exercise.yaml", []byte(`id: 90-hostile
title: Hostile <b>title</b>
patterns: [testing]
level: beginner
minutes: 5
steps:
  - id: one
    instructions: "Do <script>alert('step')</script> this."
    check: {kind: setting, key: outbox.enabled, value: "false"}
    missing: Not yet.
    solution:
      - set: {outbox.enabled: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	ex.README = readme
	l := newExerciseLab(t, []exercises.Exercise{ex})
	resp, page := l.do(t, "GET", "/exercises/90-hostile", "", nil)
	if resp.StatusCode != 200 || strings.Contains(page, "<script>alert") || strings.Contains(page, "<b>title</b>") ||
		!strings.Contains(page, "Hostile &lt;b&gt;title&lt;/b&gt;") || strings.Contains(page, "javascript:") {
		t.Errorf("GET /exercises/90-hostile: %d\n%s", resp.StatusCode, page)
	}
}

// While a diagnosis is open its fault is hidden: the fault list says an exercise holds
// a hidden fault, not where; the timeline does not name the service; the map does not
// mark it. The reveal shows it, and from then on the list does too.
func TestDiagnosisFaultHidden(t *testing.T) {
	t.Parallel()
	ex, err := exercises.Parse("exercises/91-find-it/exercise.yaml", []byte(`id: 91-find-it
title: Find the slow service
patterns: [observability]
level: beginner
minutes: 5
setup:
  clear_faults: [all]
  faults:
    - kind: latency
      on: http
      random: {services: [catalog, inventory], values: [200ms, 400ms]}
steps:
  - id: name-it
    instructions: Which service is slow?
    check:
      kind: answer
      question: Which service?
      expect: {from: fault.service}
      wrong: Open the slowest trace and look at which service's spans grew.
    missing: Name the slow service.
    solution:
      - answer: {from: fault.service}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := newExerciseLab(t, []exercises.Exercise{ex})
	if code, body := call(t, l.fixture, "POST", "/api/lab/exercises/91-find-it/start", ""); code != 200 {
		t.Fatalf("start: %d %s", code, body)
	}
	fs, err := l.store.Faults(context.Background())
	if err != nil || len(fs) != 1 {
		t.Fatalf("faults in force: %v %v", fs, err)
	}
	drawn := fs[0].Service
	if !fs[0].Hidden {
		t.Errorf("the control plane does not know the diagnosis's fault is hidden: %+v", fs[0])
	}
	code, body := call(t, l.fixture, "GET", "/api/lab/faults", "")
	faults := decode[struct{ Faults []map[string]any }](t, body).Faults
	if code != 200 || len(faults) != 1 || faults[0]["text"] != hiddenFaultText || faults[0]["hidden"] != true ||
		strings.Contains(body, drawn) || strings.Contains(body, fs[0].Value) {
		t.Errorf("GET faults while the diagnosis is open: %d %s (drawn: %s)", code, body, drawn)
	}
	if _, body := call(t, l.fixture, "GET", "/api/lab/settings/changes", ""); strings.Contains(body, "fault "+drawn) {
		t.Errorf("the timeline names the hidden fault: %s", body)
	}
	resp, page := l.do(t, "GET", "/switchboard", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, hiddenFaultText) || strings.Contains(page, "<code>"+drawn+"</code>") ||
		strings.Contains(page, "fault "+drawn) {
		t.Errorf("the switchboard shows the hidden fault (drawn: %s)", drawn)
	}
	if m := l.srv.overviewModel(context.Background()); len(m.Faults[drawn]) != 0 {
		t.Errorf("the map marks %s: %+v", drawn, m.Faults)
	}

	// A wrong answer gets the hint pointing at the evidence.
	wrong := map[string]string{"catalog": "inventory", "inventory": "catalog"}[drawn]
	code, body = call(t, l.fixture, "POST", "/api/lab/exercises/91-find-it/steps/name-it/answer", `{"answer":"`+wrong+`"}`)
	if res := decode[exercises.AnswerResult](t, body); code != 200 || res.Right || !strings.Contains(res.Hint, "slowest trace") {
		t.Errorf("a wrong answer: %d %s", code, body)
	}

	code, body = call(t, l.fixture, "POST", "/api/lab/exercises/91-find-it/reveal", "")
	if code != 200 || !strings.Contains(body, drawn) {
		t.Fatalf("reveal: %d %s", code, body)
	}
	if _, body := call(t, l.fixture, "GET", "/api/lab/faults", ""); strings.Contains(body, hiddenFaultText) || !strings.Contains(body, drawn) {
		t.Errorf("after the reveal the fault is still hidden: %s", body)
	}
	if fs, err := l.store.Faults(context.Background()); err != nil || len(fs) != 1 || fs[0].Hidden {
		t.Errorf("after the reveal the control plane still hides it: %+v %v", fs, err)
	}
	if _, body := call(t, l.fixture, "GET", "/api/lab/settings/changes", ""); !strings.Contains(body, "fault "+drawn) ||
		!strings.Contains(body, "revealed") {
		t.Errorf("the timeline does not show the reveal: %s", body)
	}
	// While a start of the diagnosis is under way (its fault in force before the engine
	// has recorded the draw), its faults are masked too.
	x := l.srv.exs.Load()
	x.mark("91-find-it", 1)
	if _, body := call(t, l.fixture, "GET", "/api/lab/faults", ""); !strings.Contains(body, hiddenFaultText) || strings.Contains(body, drawn) {
		t.Errorf("during a start the fault shows: %s", body)
	}
	x.mark("91-find-it", -1)
	if code, body := call(t, l.fixture, "POST", "/api/lab/exercises/91-find-it/reset", ""); code != 200 {
		t.Errorf("reset: %d %s", code, body)
	}
}

// exerciseDashboard runs the real dashboard (run) on a lab database (named with prefix)
// and a vhost of the test's own; the shop, Prometheus and the management API are
// addresses nothing answers. It returns the dashboard's URL and how to stop it.
func exerciseDashboard(t *testing.T, prefix string) (string, func()) {
	t.Helper()
	labURL, _ := testenv.LabDB(t, testenv.Name(prefix))
	return testenv.Start(t, run, testenv.Env{
		"HTTP_ADDR": testenv.AnyAddr, "LAB_DATABASE_URL": labURL, "AMQP_URL": testenv.VHost(t),
		"PROMETHEUS_URL": closedURL(t), "RABBITMQ_MANAGEMENT_URL": closedURL(t), "GATEWAY_URL": closedURL(t),
		"PAYMENTS_URL": closedURL(t),
	}, nil)
}

// A smoke of the Exercises view in the real headless Chromium against the real
// dashboard (run): from the home page to 07-outbox, start, a hint, the first step
// ticking by itself when the learner switches the outbox off, with its evidence link;
// "show me" on the second; a reload keeps the progress; reset. No script errors.
func TestExercisesInBrowser(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	base, stop := exerciseDashboard(t, "t_dash_")
	defer stop()
	step := func(id string) string { return `[data-testid=step][data-step="` + id + `"]` }

	b.Do("open the home page and follow start here", chromedp.Navigate(base+"/"),
		chromedp.Click(`[data-testid=start-here-link]`), chromedp.WaitVisible(`[data-testid=exercise-list]`))
	b.Do("open 07-outbox", chromedp.Click(`[data-testid=exercise-item][data-id="07-outbox"] [data-testid=exercise-link]`),
		chromedp.WaitVisible(`[data-testid=readme]`))
	b.Do("start it", chromedp.Click(`[data-testid=exercise-start]`))
	b.WaitJS("step 1 current", `document.querySelector('`+step("switch-the-outbox-off")+`').dataset.state === 'current'`)
	b.Do("ask for a hint", chromedp.Click(step("switch-the-outbox-off")+` [data-testid=step-hint]`))
	b.WaitJS("the hint shown", `document.querySelectorAll('`+step("switch-the-outbox-off")+` [data-testid=step-hints] li').length === 1`)

	req, _ := http.NewRequest("POST", base+"/api/lab/settings", strings.NewReader(`{"key":"outbox.enabled","value":"false"}`))
	req.Header.Set("Origin", base)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("switch the outbox off: %v %v", resp, err)
	}
	b.WaitJS("step 1 ticks with its evidence", `document.querySelector('`+step("switch-the-outbox-off")+`').dataset.state === 'done' &&
		document.querySelector('`+step("switch-the-outbox-off")+` [data-testid=evidence-link]').getAttribute('href') === '/switchboard'`)
	b.Do("show me step 2", chromedp.Click(step("arm-the-crash")+` [data-testid=step-solve]`))
	b.WaitJS("step 2 solved", `document.querySelector('`+step("arm-the-crash")+`').dataset.state === 'done' &&
		!!document.querySelector('`+step("arm-the-crash")+` [data-testid=solve-done]')`)
	b.Do("reload", chromedp.Reload(), chromedp.WaitVisible(`[data-testid=readme]`))
	b.WaitJS("the progress kept", `document.querySelector('`+step("arm-the-crash")+`').dataset.state === 'done' &&
		document.querySelector('`+step("lose-an-event")+`').dataset.state === 'current'`)
	b.Do("reset", chromedp.Click(`[data-testid=exercise-reset]`))
	b.WaitJS("reset", `document.querySelector('[data-testid=exercise]').dataset.state === '' &&
		document.querySelector('`+step("switch-the-outbox-off")+`').dataset.state === 'locked'`)
	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
