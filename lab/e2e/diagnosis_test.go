package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"microlab/exercises"
	"microlab/lab/stack"
	"microlab/services/platform/control"
)

// TestDiagnosis is DESIGN §10's diagnosis exercises against a whole real lab, through
// the dashboard's API (and `lab fault list`), for 13-find-the-slow-service and
// 14-find-the-failing-consumer: three runs each, with three different draws of the
// real engine (the test starts and resets until the draw differs from the runs
// before: no seed, no hook); in each run, while the diagnosis is open, its fault acts
// but is hidden everywhere a learner could look (the fault list API, the switchboard,
// the timeline, `lab fault list`, the spans of the service it slows or fails); two
// different wrong answers are judged wrong, each with a hint that points at the
// evidence and does not contain the answer; the right answer passes; and from then
// on (or from the reveal) the fault shows as it is.
func TestDiagnosis(t *testing.T) {
	t.Parallel()
	list, err := exercises.Load(exercises.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	l := startLab(t, labOptions{tracing: true})
	d, _ := stack.Find(stack.Dashboard)
	dash := &dashAPI{base: l.cfg.URL(d), http: &http.Client{Timeout: 30 * time.Second}}
	for _, id := range []string{"13-find-the-slow-service", "14-find-the-failing-consumer"} {
		i := slices.IndexFunc(list, func(e exercises.Exercise) bool { return e.ID == id })
		if i < 0 {
			t.Fatalf("no exercise %s", id)
		}
		ex := &list[i]
		t.Run(id, func(t *testing.T) { diagnosisRuns(t, l, dash, ex) })
	}
}

func diagnosisRuns(t *testing.T, l *lab, dash *dashAPI, ex *exercises.Exercise) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	path := "/api/lab/exercises/" + ex.ID
	random := ex.Setup.Faults[0].Random
	dash.call(t, ctx, "POST", "/api/lab/reset", http.StatusOK, nil)

	var seen []string
	for run := range 3 {
		// Start until the engine draws a service no run before drew.
		var f control.Fault
		for try := 0; ; try++ {
			if try == 20 {
				t.Fatalf("run %d: 20 starts drew only %v", run, seen)
			}
			dash.call(t, ctx, "POST", path+"/start", http.StatusOK, nil)
			f = drawnFault(t, ctx, l, ex.ID)
			if !slices.Contains(seen, f.Service) {
				break
			}
			dash.call(t, ctx, "POST", path+"/reset", http.StatusOK, nil)
		}
		seen = append(seen, f.Service)
		t.Logf("run %d: drew %s on %s", run, f, f.Service)
		if !f.Hidden {
			t.Errorf("run %d: the control plane does not hold the drawn fault hidden: %+v", run, f)
		}

		// While the diagnosis is open: it acts, and nothing says where.
		hiddenEverywhere(t, ctx, l, dash, ex, f)
		faultActsUnnamed(t, ctx, dash, ex, f)

		// Two different wrong answers, then the right one, for each question about
		// the fault.
		last := -1
		for si, step := range ex.Steps {
			if q := step.Question(); q != nil && strings.HasPrefix(q.Expect.From, "fault.") {
				last = si
			}
		}
		for si, step := range ex.Steps {
			q := step.Question()
			if q == nil || !strings.HasPrefix(q.Expect.From, "fault.") {
				continue
			}
			right, pool := f.Service, random.Services
			if q.Expect.From == "fault.value" {
				right, pool = f.Value, random.Values
			}
			var wrongs []string
			for _, c := range append(slices.Clone(pool), q.Choices...) {
				if c != right && !slices.Contains(wrongs, c) {
					wrongs = append(wrongs, c)
				}
			}
			// A different pair in each run, so that no answer is only ever tried once.
			wrongs = []string{wrongs[run%len(wrongs)], wrongs[(run+1)%len(wrongs)]}
			for _, w := range wrongs {
				res := answer(t, ctx, dash, path, step.ID, w)
				if res.Right {
					t.Fatalf("run %d: %s: the wrong answer %q (drawn: %s) was judged right", run, step.ID, w, right)
				}
				if res.Hint == "" || strings.Contains(strings.ToLower(res.Hint), strings.ToLower(right)) {
					t.Errorf("run %d: %s: wrong answer %q got the hint %q: want one that points at evidence, without %q",
						run, step.ID, w, res.Hint, right)
				}
				if !slices.ContainsFunc([]string{"Traces view", "Events view", "waterfall", "span", "dead-letter"},
					func(e string) bool { return strings.Contains(res.Hint, e) }) {
					t.Errorf("run %d: %s: the hint %q names no evidence (a view, a span, a queue)", run, step.ID, res.Hint)
				}
			}
			if run == 2 && si == last {
				// The learner gives up on the last question: the fault shows, and the
				// right answer is still judged right.
				dash.call(t, ctx, "POST", path+"/reveal", http.StatusOK, nil)
				shownNormally(t, ctx, l, dash, ex, f)
			}
			if res := answer(t, ctx, dash, path, step.ID, right); !res.Right {
				t.Fatalf("run %d: %s: the right answer %q was judged wrong: %+v", run, step.ID, right, res)
			}
		}
		// Every question about the fault answered: it shows as it is — or, where that
		// completed the exercise, the timeline says what it was before cleanup cleared it.
		var st exercises.View
		dash.call(t, ctx, "GET", path, http.StatusOK, &st)
		if st.Status.Complete {
			revealedOnTimeline(t, ctx, dash, ex, f)
		} else {
			shownNormally(t, ctx, l, dash, ex, f)
		}
		dash.call(t, ctx, "POST", path+"/reset", http.StatusOK, nil)
	}
}

// drawnFault is the fault the exercise's start drew, as the control store has it (the
// test's own view of the real engine's draw, which the learner does not have).
func drawnFault(t *testing.T, ctx context.Context, l *lab, id string) control.Fault {
	t.Helper()
	fs, err := l.store.Faults(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine []control.Fault
	for _, f := range fs {
		if f.Source == exercises.Source(id) {
			mine = append(mine, f)
		}
	}
	if len(mine) != 1 {
		t.Fatalf("%s: after start the faults are %+v, want one the exercise drew", id, fs)
	}
	return mine[0]
}

type answerResult struct {
	Right bool   `json:"right"`
	Hint  string `json:"hint"`
}

func answer(t *testing.T, ctx context.Context, dash *dashAPI, path, step, text string) answerResult {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"answer": text})
	var res answerResult
	dash.do(t, ctx, "POST", path+"/steps/"+step+"/answer", body, http.StatusOK, &res)
	return res
}

// hiddenEverywhere: the fault list API, the switchboard, the timeline and `lab fault
// list` say an exercise holds a hidden fault, not where nor how much.
func hiddenEverywhere(t *testing.T, ctx context.Context, l *lab, dash *dashAPI, ex *exercises.Exercise, f control.Fault) {
	t.Helper()
	var list struct {
		Faults []map[string]any `json:"faults"`
	}
	dash.call(t, ctx, "GET", "/api/lab/faults", http.StatusOK, &list)
	raw, _ := json.Marshal(list)
	if len(list.Faults) != 1 || list.Faults[0]["hidden"] != true || list.Faults[0]["text"] != control.HiddenFaultText ||
		strings.Contains(string(raw), `"`+f.Service+`"`) || strings.Contains(string(raw), f.String()) {
		t.Errorf("%s: GET /api/lab/faults while the diagnosis is open: %s (drawn %s on %s)", ex.ID, raw, f, f.Service)
	}
	for _, c := range changesSince(t, ctx, dash, f.Created) {
		if strings.Contains(c.Key+c.Old+c.New, f.Service) || strings.Contains(c.Old+c.New, f.String()) {
			t.Errorf("%s: the timeline names the hidden fault (%s on %s): %+v", ex.ID, f, f.Service, c)
		}
	}
	page := dash.page(t, ctx, "/switchboard")
	// (Its timeline may show earlier runs' faults, revealed: a fault row names its target.)
	if !strings.Contains(page, control.HiddenFaultText) || strings.Contains(page, `data-target="`+f.Service+`"`) {
		t.Errorf("%s: the switchboard shows the hidden fault (%s on %s)", ex.ID, f, f.Service)
	}
	out := labFaultList(t, ctx, l)
	if !strings.Contains(out, control.HiddenFaultText) || strings.Contains(out, f.Service) || strings.Contains(out, f.String()) {
		t.Errorf("%s: lab fault list names the hidden fault (%s on %s):\n%s", ex.ID, f, f.Service, out)
	}
}

// shownNormally: once answered (or revealed), the fault list, `lab fault list` and the
// timeline show it as it is.
func shownNormally(t *testing.T, ctx context.Context, l *lab, dash *dashAPI, ex *exercises.Exercise, f control.Fault) {
	t.Helper()
	var list struct {
		Faults []struct {
			Service, Kind, Value string
			Hidden               bool
		} `json:"faults"`
	}
	dash.call(t, ctx, "GET", "/api/lab/faults", http.StatusOK, &list)
	if len(list.Faults) != 1 || list.Faults[0].Hidden || list.Faults[0].Service != f.Service || list.Faults[0].Value != f.Value {
		t.Errorf("%s: after the answer the fault list is %+v, want %s on %s shown", ex.ID, list.Faults, f, f.Service)
	}
	if out := labFaultList(t, ctx, l); strings.Contains(out, control.HiddenFaultText) || !strings.Contains(out, f.Service) {
		t.Errorf("%s: after the answer lab fault list still hides %s on %s:\n%s", ex.ID, f, f.Service, out)
	}
	revealedOnTimeline(t, ctx, dash, ex, f)
}

// revealedOnTimeline: the timeline shows the fault revealed, as it is.
func revealedOnTimeline(t *testing.T, ctx context.Context, dash *dashAPI, ex *exercises.Exercise, f control.Fault) {
	t.Helper()
	changes := changesSince(t, ctx, dash, f.Created)
	if !slices.ContainsFunc(changes, func(c change) bool {
		return c.Key == "fault "+f.Service && c.Old == control.HiddenFaultText && strings.Contains(c.New, f.String())
	}) {
		t.Errorf("%s: after the answer the timeline does not show %s on %s revealed: %+v", ex.ID, f, f.Service, changes)
	}
}

type change struct {
	Key, Old, New, Source string
	At                    time.Time
}

// changesSince is the timeline (GET /api/lab/settings/changes) from since on (a
// fault's Created is its add's change's time: one transaction).
func changesSince(t *testing.T, ctx context.Context, dash *dashAPI, since time.Time) []change {
	t.Helper()
	var list struct {
		Items []change `json:"items"`
	}
	dash.call(t, ctx, "GET", "/api/lab/settings/changes?n=1000", http.StatusOK, &list)
	var out []change
	for _, c := range list.Items {
		if !c.At.Before(since) {
			out = append(out, c)
		}
	}
	return out
}

// faultActsUnnamed waits for a checkout trace in which the drawn service's work shows
// the fault (a span at least as long as the delay; a failed span) and checks that no
// span says it was a lab fault, nor which, nor how much: the evidence is the effect.
func faultActsUnnamed(t *testing.T, ctx context.Context, dash *dashAPI, ex *exercises.Exercise, f control.Fault) {
	t.Helper()
	delay, _, _ := control.ParseLatency(f.Value)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var ts struct {
			Items []struct {
				TraceID string `json:"traceId"`
			} `json:"items"`
		}
		dash.call(t, ctx, "GET", "/api/traces?n=20&service="+url.QueryEscape(f.Service), http.StatusOK, &ts)
		for _, tr := range ts.Items {
			var body struct {
				Spans []struct {
					Service  string            `json:"service"`
					Name     string            `json:"name"`
					Duration time.Duration     `json:"durationNs"`
					Error    bool              `json:"error"`
					Status   string            `json:"status"`
					Start    time.Time         `json:"start"`
					Attrs    map[string]string `json:"attrs"`
					Events   []struct {
						Name  string            `json:"name"`
						Attrs map[string]string `json:"attrs"`
					} `json:"events"`
				} `json:"spans"`
			}
			dash.call(t, ctx, "GET", "/api/traces/"+tr.TraceID, http.StatusOK, &body)
			acted := false
			for _, s := range body.Spans {
				if s.Start.Before(f.Created) {
					continue // before this run: a fault shown then may have left its event
				}
				for _, e := range s.Events {
					if e.Name == "lab.fault" {
						t.Fatalf("%s: a %s span %q carries a lab.fault event %v while the diagnosis is open (drawn %s on %s)",
							ex.ID, s.Service, s.Name, e.Attrs, f, f.Service)
					}
				}
				if s.Service != f.Service {
					continue
				}
				if strings.Contains(s.Status, f.Kind) || strings.Contains(fmt.Sprint(s.Attrs), "lab.fault") {
					t.Fatalf("%s: a %s span %q names the hidden fault: status %q, attributes %v", ex.ID, s.Service, s.Name, s.Status, s.Attrs)
				}
				switch f.Kind {
				case control.FaultLatency:
					acted = acted || s.Duration >= delay*9/10
				case control.FaultErrorRate:
					acted = acted || s.Error
				}
			}
			if acted {
				t.Logf("%s: trace %s shows the fault's effect on %s, unnamed", ex.ID, tr.TraceID, f.Service)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no trace shows %s acting on %s", ex.ID, f, f.Service)
		}
		time.Sleep(time.Second)
	}
}

// page GETs a dashboard page's HTML.
func (d *dashAPI) page(t *testing.T, ctx context.Context, path string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return b.String()
}

// labFaultList runs `lab fault list` against the lab, as a learner at the terminal.
func labFaultList(t *testing.T, ctx context.Context, l *lab) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, labBinary(t), "fault", "list")
	cmd.Env = append(cmd.Environ(), "ADMIN_DATABASE_URL="+l.cfg.AdminDatabaseURL, "LAB_DB_PREFIX="+l.cfg.DBPrefix,
		"AMQP_URL="+l.cfg.AMQPURL, fmt.Sprintf("LAB_PORT_OFFSET=%d", l.cfg.PortOffset))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lab fault list: %v\n%s", err, out)
	}
	return string(out)
}
