package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"microlab/exercises"
	"microlab/lab/stack"
	"microlab/lab/topology"
	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// TestExerciseProtocol is DESIGN §10's test protocol, for every built-in exercise (a
// new one is covered by being committed), against a whole real lab, through the
// dashboard's API only, as the Exercises view and `lab exercise` drive it: after start,
// each step's check does NOT hold before its reference solution runs and DOES hold
// after it (with evidence); the last step completes the exercise; reset puts the lab's
// settings and faults back as they were before start. A check that holds before its
// solution is a defect in the exercise, and fails here naming it.
//
// The exercises share protocolLabs labs, each running its share one after the other:
// each exercise starts from what the previous one's reset left, which the protocol
// itself proves is the lab as it was. (`-run 'TestExerciseProtocol/07-'` starts one.)
func TestExerciseProtocol(t *testing.T) {
	t.Parallel()
	list, err := exercises.Load(exercises.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 {
		t.Fatal("no built-in exercises")
	}
	queue := make(chan *exercises.Exercise, len(list))
	for i := range list {
		queue <- &list[i]
	}
	close(queue)
	n := min(protocolLabs, testenv.LabCapacity()) // each lab takes a slot of the budget
	if strings.Contains(flag.Lookup("test.run").Value.String(), "TestExerciseProtocol/") {
		n = 1 // a few exercises picked by name: one lab is quicker to start than two
	}
	// Each lab is started here, on the test's goroutine (startLab may fail the test);
	// then each runs its exercises on a goroutine of its own, as subtests (t.Run may be
	// called from several goroutines; none calls t.Parallel, see testenv.HoldLab).
	rigs := make([]protocolRig, min(n, len(list)))
	for i := range rigs {
		rigs[i] = protocolLab(t)
	}
	var wg sync.WaitGroup
	for _, r := range rigs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ex := range queue {
				t.Run(ex.ID, func(t *testing.T) { exerciseProtocol(t, r, ex) })
			}
		}()
	}
	wg.Wait()
}

// protocolLabs is how many labs TestExerciseProtocol shares its exercises among: each
// is light (mostly waiting for a check to hold), and two keep the suite inside its time.
const protocolLabs = 2

// protocolRig is one lab of the protocol: its dashboard's API, and its topology
// switcher (exercises switch db.topology, which the switcher applies as lab up does).
type protocolRig struct {
	dash    *dashAPI
	sw      *topology.Switcher
	gateway string // its base URL, for its breakers
}

// noOpenBreaker waits until none of the gateway's breakers is open. The exercise before
// may have opened one and left it so (05 on purpose; a db.topology switch back restarts
// the services under the gateway's calls): the lab is as it was only once its open_for
// has passed, and the next call, a half-open breaker's trial, goes through.
func noOpenBreaker(t *testing.T, gateway string) {
	t.Helper()
	waitFor(t, time.Minute, "no gateway breaker open", func() bool {
		var states map[string]string
		if getJSON(context.Background(), gateway+"/internal/breakers", &states) != nil {
			return false
		}
		for _, s := range states {
			if s == "open" {
				return false
			}
		}
		return true
	})
}

// protocolLab starts a whole lab for the protocol.
// Tracing: span checks and answers from a trace (slowest_span) read what the dashboard
// receives. Prometheus, on the port the dashboard's PROMETHEUS_URL names, for promql
// checks.
func protocolLab(t *testing.T) protocolRig {
	t.Helper()
	l := startLab(t, labOptions{tracing: true, scaleUpTo: 3}) // scale actions, as lab up follows them (18 runs catalog ×3)
	startPrometheus(t, l)
	sw := l.followForExercises(t) // db.topology switches, as `lab up` runs them
	d, _ := stack.Find(stack.Dashboard)
	return protocolRig{dash: &dashAPI{base: l.cfg.URL(d), http: &http.Client{Timeout: 30 * time.Second}}, sw: sw, gateway: l.api.base}
}

func exerciseProtocol(t *testing.T, r protocolRig, ex *exercises.Exercise) {
	dash, sw := r.dash, r.sw
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	path := "/api/lab/exercises/" + ex.ID

	// 1. The lab before the exercise: not the defaults, but what the exercise's setup
	// changes, changed otherwise (so that reset has something to put back), and
	// nothing the exercise before it left.
	dash.call(t, ctx, "POST", "/api/lab/reset", http.StatusOK, nil)
	settle(t, ctx, dash, sw)
	noOpenBreaker(t, r.gateway)
	dash.unlike(t, ctx, ex.Setup)
	settings0, faults0 := dash.labState(t, ctx)

	// 2. Start, then each step: not done before its solution, done after it.
	var got exercises.View
	dash.call(t, ctx, "POST", path+"/start", http.StatusOK, &got)
	if got.State != exercises.RunOpen {
		t.Fatalf("%s: after start the run is %q, want %q", ex.ID, got.State, exercises.RunOpen)
	}
	for si := range ex.Steps {
		step := &ex.Steps[si]
		dash.call(t, ctx, "GET", path, http.StatusOK, &got)
		sv := stepOf(t, &got, ex.ID, step.ID)
		if sv.State == "done" {
			t.Fatalf("%s: step %s is done before its solution ran (evidence %+v): its check holds without the learner's action",
				ex.ID, step.ID, sv.Evidence)
		}
		if got.Status.Current != step.ID {
			t.Fatalf("%s: before step %s's solution the current step is %q (state %q)", ex.ID, step.ID, got.Status.Current, sv.State)
		}

		var accepted struct {
			Solving *exercises.SolveView `json:"solving"`
		}
		dash.call(t, ctx, "POST", path+"/solve", http.StatusAccepted, &accepted)
		if accepted.Solving == nil || accepted.Solving.Step != step.ID {
			t.Fatalf("%s: solve started %+v, want step %s", ex.ID, accepted.Solving, step.ID)
		}
		// The engine runs the actions, then waits for the check up to its within: the
		// bound is theirs plus a margin for a loaded machine; it costs time only when
		// the step fails.
		bound := step.Check.Timeout() + 2*time.Minute
		for _, a := range step.Solution {
			if a.Wait != nil {
				bound += a.Wait.D
			}
		}
		// Finished: the step done and the solution's run over (the next step's solve is
		// refused while it runs; the engine's wait may notice the check a moment after
		// a GET has ticked the step off).
		deadline := time.Now().Add(bound)
		for {
			dash.call(t, ctx, "GET", path, http.StatusOK, &got)
			sv = stepOf(t, &got, ex.ID, step.ID)
			s := got.Solving
			if s == nil || s.Step != step.ID {
				t.Fatalf("%s: step %s: the dashboard shows no solution of it running (solving %+v)", ex.ID, step.ID, s)
			}
			if !s.Running && s.Error != "" {
				t.Fatalf("%s: step %s: the solution failed: %s (actions %+v; missing %q; problems %v)",
					ex.ID, step.ID, s.Error, s.Actions, got.Status.Missing, got.Status.Problems)
			}
			// An end without an error and the step not yet done is its tick between
			// this GET's status and its solving: the next GET shows it.
			if sv.State == "done" && !s.Running {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: step %s not finished %s after its solution started (state %q; solving %+v; missing %q; problems %v)",
					ex.ID, step.ID, bound, sv.State, s, got.Status.Missing, got.Status.Problems)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if len(sv.Evidence) == 0 {
			t.Errorf("%s: step %s is done with no evidence", ex.ID, step.ID)
		}
		t.Logf("%s: step %s done: %s", ex.ID, step.ID, evidence(sv))
	}

	// 3. Completed; reset; the lab as it was.
	dash.call(t, ctx, "GET", path, http.StatusOK, &got)
	if got.State != exercises.RunCompleted || !got.Status.Complete {
		t.Errorf("%s: after every step the run is %q (complete %v), want %q", ex.ID, got.State, got.Status.Complete, exercises.RunCompleted)
	}
	dash.call(t, ctx, "POST", path+"/reset", http.StatusOK, &got)
	settle(t, ctx, dash, sw) // a db.topology the reset put back is switched to before the next
	settings1, faults1 := dash.labState(t, ctx)
	for k, v := range settings0 {
		if settings1[k] != v {
			t.Errorf("%s: after reset %s = %q, before start it was %q", ex.ID, k, settings1[k], v)
		}
	}
	for k, v := range settings1 {
		if _, ok := settings0[k]; !ok {
			t.Errorf("%s: after reset there is a setting %s = %q that was not there before start", ex.ID, k, v)
		}
	}
	if !slices.Equal(faults0, faults1) {
		t.Errorf("%s: after reset the faults are %v, before start they were %v", ex.ID, faults1, faults0)
	}
}

// dashAPI calls the dashboard's API as a script does: with the Origin header its
// state-changing requests require.
type dashAPI struct {
	base string
	http *http.Client
}

func (d *dashAPI) call(t *testing.T, ctx context.Context, method, path string, want int, out any) {
	t.Helper()
	var body []byte
	if method != "GET" {
		body = []byte("{}")
	}
	d.do(t, ctx, method, path, body, want, out)
}

func (d *dashAPI) do(t *testing.T, ctx context.Context, method, path string, in []byte, want int, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", d.base)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
}

// unlike switches the lab away from what setup switches it to: each setting it sets
// to another of its allowed values, and a fault on a service it clears the faults of.
func (d *dashAPI) unlike(t *testing.T, ctx context.Context, setup exercises.Setup) {
	t.Helper()
	var list struct {
		Settings []struct {
			Key     string   `json:"key"`
			Allowed []string `json:"allowed"`
		} `json:"settings"`
	}
	d.call(t, ctx, "GET", "/api/lab/settings", http.StatusOK, &list)
	for _, set := range setup.Settings {
		for _, e := range list.Settings {
			if e.Key != set.Key {
				continue
			}
			for _, v := range e.Allowed {
				if v != set.Value {
					d.post(t, ctx, "/api/lab/settings", http.StatusOK, map[string]string{"key": set.Key, "value": v})
					break
				}
			}
		}
	}
	for _, target := range setup.ClearFaults {
		svc := target
		if target == "all" {
			svc = "catalog"
		}
		if !slices.Contains(control.FaultServices, svc) {
			continue // an instance
		}
		d.post(t, ctx, "/api/lab/faults", http.StatusCreated,
			control.FaultSpec{Service: svc, Kind: "latency", Value: "100ms", On: "http", For: "30m"})
	}
}

func (d *dashAPI) post(t *testing.T, ctx context.Context, path string, want int, in any) {
	t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	d.do(t, ctx, "POST", path, body, want, nil)
}

// labState is the lab's settings (key → value) and the faults in force, each as
// service/instance/kind/value/on (what makes a fault the same: not its id nor expiry),
// sorted, as the dashboard's API lists them.
func (d *dashAPI) labState(t *testing.T, ctx context.Context) (map[string]string, []string) {
	t.Helper()
	var s struct {
		Settings []struct{ Key, Value string } `json:"settings"`
	}
	d.call(t, ctx, "GET", "/api/lab/settings", http.StatusOK, &s)
	if len(s.Settings) == 0 {
		t.Fatal("GET /api/lab/settings lists no settings")
	}
	settings := map[string]string{}
	for _, e := range s.Settings {
		settings[e.Key] = e.Value
	}
	var f struct {
		Faults []struct {
			Service, Instance, Kind, Value, On string
			Hidden                             bool
		} `json:"faults"`
	}
	d.call(t, ctx, "GET", "/api/lab/faults", http.StatusOK, &f)
	faults := []string{}
	for _, x := range f.Faults {
		faults = append(faults, strings.Join([]string{x.Service, x.Instance, x.Kind, x.Value, x.On, fmt.Sprint(x.Hidden)}, "/"))
	}
	slices.Sort(faults)
	return settings, faults
}

// evidence is a step's evidence as the page labels it, for the log.
func evidence(s exercises.StepView) string {
	var out []string
	for _, e := range s.Evidence {
		out = append(out, e.Label)
	}
	return strings.Join(out, "; ")
}

// stepOf is step id of v, the exercise ex as the dashboard's API answers it.
func stepOf(t *testing.T, v *exercises.View, ex, id string) exercises.StepView {
	t.Helper()
	for _, s := range v.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("%s: the dashboard lists no step %s", ex, id)
	return exercises.StepView{}
}
