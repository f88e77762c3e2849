package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"microlab/exercises"
	"microlab/lab/loadgen"
	"microlab/lab/stack"
)

// exercise: `lab exercise list|show|start|check|hint|answer|solve|reset ID`, a client
// of the dashboard's /api/lab/exercises: the dashboard runs the engine, so the browser
// and this command share one engine and one record of progress. Bad input (an unknown
// exercise or step, a step that asks no question, what the run does not allow) exits 2;
// `check` exits 0 when every step is done and 1 when not, saying what is missing.
func exercise(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("want `lab exercise list|show|start|check|hint|answer|solve|reset ID`")
	}
	c, err := newExerciseClient(cfg)
	if err != nil {
		return err
	}
	// The exercises this binary embeds: the same files the dashboard embeds, so an id is
	// checked here, and list and show work while no dashboard runs.
	builtin, err := exercises.Load(exercises.Builtin())
	if err != nil {
		return err
	}
	sub, rest := args[0], args[1:]
	if sub == "list" {
		if len(rest) != 0 {
			return usageErrorf("lab exercise list takes no arguments")
		}
		err := c.list(ctx, stdout)
		if offline(err) {
			fmt.Fprintf(stderr, "lab exercise: %v: progress unknown\n", err)
			return listOffline(stdout, builtin)
		}
		return err
	}
	if len(rest) == 0 {
		return usageErrorf("want `lab exercise %s ID` (lab exercise list shows the ids)", sub)
	}
	id, rest := rest[0], rest[1:]
	ex := slices.IndexFunc(builtin, func(e exercises.Exercise) bool { return e.ID == id })
	if ex < 0 && slices.Contains([]string{"show", "start", "check", "hint", "answer", "solve", "reset"}, sub) {
		return usageErrorf("no exercise %q (lab exercise list shows the ids: %s, …)", id, builtin[0].ID)
	}
	switch sub {
	case "show", "start", "check", "solve", "reset":
		if len(rest) != 0 {
			return usageErrorf("want `lab exercise %s ID`", sub)
		}
	}
	switch sub {
	case "show":
		d, err := c.get(ctx, id)
		if offline(err) {
			fmt.Fprintf(stderr, "lab exercise: %v: progress unknown\n", err)
			d = offlineView(builtin[ex])
		} else if err != nil {
			return err
		}
		c.show(stdout, d, true)
		return nil
	case "start":
		var d exercises.View
		if err := c.call(ctx, http.MethodPost, id, "/start", nil, &d); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "started %s: the lab is at the exercise's starting point\n", id)
		c.show(stdout, d, false)
		return nil
	case "check":
		d, err := c.get(ctx, id)
		if err != nil {
			return err
		}
		c.show(stdout, d, false)
		if !d.Status.Complete {
			return errReported
		}
		return nil
	case "hint":
		if len(rest) > 1 {
			return usageErrorf("want `lab exercise hint ID [STEP]`")
		}
		step, err := c.step(ctx, id, rest)
		if err != nil {
			return err
		}
		var h struct {
			Hint     string `json:"hint"`
			Revealed int    `json:"revealed"`
			Of       int    `json:"of"`
		}
		if err := c.call(ctx, http.MethodPost, id, "/steps/"+url.PathEscape(step)+"/hint", nil, &h); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "hint %d of %d (%s): %s\n", h.Revealed, h.Of, step, h.Hint)
		return nil
	case "answer":
		if len(rest) == 0 {
			return usageErrorf("want `lab exercise answer ID TEXT...` (the current step's question)")
		}
		step, err := c.step(ctx, id, nil)
		if err != nil {
			return err
		}
		var res struct {
			Right bool   `json:"right"`
			Hint  string `json:"hint"`
		}
		body := map[string]string{"answer": strings.Join(rest, " ")}
		if err := c.call(ctx, http.MethodPost, id, "/steps/"+url.PathEscape(step)+"/answer", body, &res); err != nil {
			return err
		}
		if !res.Right {
			fmt.Fprintf(stdout, "not quite: %s\n", res.Hint)
			return errReported
		}
		fmt.Fprintln(stdout, "right")
		return nil
	case "solve":
		return c.solve(ctx, id, stdout)
	case "reset":
		if err := c.call(ctx, http.MethodPost, id, "/reset", nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "reset %s: the settings and faults are as they were before it started\n", id)
		return nil
	}
	return usageErrorf("unknown subcommand %q: want list, show, start, check, hint, answer, solve or reset", sub)
}

// exerciseClient calls the dashboard's exercise API.
type exerciseClient struct {
	base string
	api  *loadgen.Client // the same request code as lab load's: JSON in and out, errors with their code
}

func newExerciseClient(cfg Config) (*exerciseClient, error) {
	base := cfg.DashboardURL
	if base == "" {
		d, ok := stack.Find(stack.Dashboard)
		if !ok {
			return nil, errors.New("no dashboard in the stack")
		}
		base = cfg.Stack().URL(d)
	}
	base = strings.TrimRight(base, "/")
	return &exerciseClient{base: base, api: loadgen.NewClient(base, &http.Client{Timeout: 30 * time.Second})}, nil
}

// call makes one request. The dashboard refuses a state-changing request whose Origin
// is not its own (CSRF), so this command names it, as its own pages do. A 4xx is the
// caller's mistake (exit 2), anything else a failure.
func (c *exerciseClient) call(ctx context.Context, method, id, path string, in, out any) error {
	p := "/api/lab/exercises"
	if id != "" {
		p += "/" + url.PathEscape(id) + path
	}
	err := c.api.Do(ctx, method, p, "", in, map[string]string{"Origin": c.base}, out)
	var ae *loadgen.APIError
	var ue *url.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500:
		return usageErrorf("%s", ae.Msg)
	case errors.As(err, &ae):
		return fmt.Errorf("%s %s%s: %d: %s", method, c.base, p, ae.Status, ae.Msg)
	case errors.As(err, &ue):
		return fmt.Errorf("%w at %s (is `lab up` running?): %w", errOffline, c.base, err)
	}
	return fmt.Errorf("the dashboard's answer: %w", err)
}

// errOffline marks an answer that never came: no dashboard listens.
var errOffline = errors.New("the dashboard does not answer")

func offline(err error) bool { return errors.Is(err, errOffline) }

// listOffline is list from the embedded exercises, without progress.
func listOffline(stdout io.Writer, list []exercises.Exercise) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, e := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d min\t%s\t%s\n", e.ID, e.Level, e.Minutes, "?", e.Title)
	}
	return tw.Flush()
}

// offlineView is an exercise as show prints it from its embedded files, not started.
func offlineView(e exercises.Exercise) exercises.View {
	d := exercises.View{ID: e.ID, Title: e.Title, Level: e.Level, Minutes: e.Minutes, Patterns: e.Patterns,
		Prerequisites: e.Prerequisites, README: e.README}
	for i, st := range e.Steps {
		d.Steps = append(d.Steps, exercises.StepView{ID: st.ID, Number: i + 1, Instructions: st.Instructions})
	}
	return d
}

func (c *exerciseClient) get(ctx context.Context, id string) (exercises.View, error) {
	var d exercises.View
	err := c.call(ctx, http.MethodGet, id, "", nil, &d)
	return d, err
}

// step is args' step, or the current one.
func (c *exerciseClient) step(ctx context.Context, id string, args []string) (string, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	d, err := c.get(ctx, id)
	if err != nil {
		return "", err
	}
	switch {
	case d.State == "":
		return "", usageErrorf("%s is not started: lab exercise start %s", id, id)
	case d.Status.Current == "":
		return "", usageErrorf("%s is complete: every step is done", id)
	}
	return d.Status.Current, nil
}

func (c *exerciseClient) list(ctx context.Context, stdout io.Writer) error {
	var l struct {
		Items []exercises.Summary `json:"items"`
	}
	if err := c.call(ctx, http.MethodGet, "", "", nil, &l); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, e := range l.Items {
		progress := "not started"
		switch e.State {
		case "open":
			progress = fmt.Sprintf("%d of %d steps", e.Done, e.Steps)
		case "completed":
			progress = "completed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d min\t%s\t%s\n", e.ID, e.Level, e.Minutes, progress, e.Title)
	}
	return tw.Flush()
}

// show prints where the exercise stands: every step with its state, what is missing of
// the current one, the evidence of those done (as dashboard links); full adds the
// README and every step's instructions.
func (c *exerciseClient) show(w io.Writer, d exercises.View, full bool) {
	fmt.Fprintf(w, "%s: %s (%s, about %d minutes)\n", d.ID, d.Title, d.Level, d.Minutes)
	if full {
		fmt.Fprintf(w, "patterns: %s\n", strings.Join(d.Patterns, ", "))
		if len(d.Prerequisites) > 0 {
			fmt.Fprintf(w, "do first: %s\n", strings.Join(d.Prerequisites, ", "))
		}
		fmt.Fprintf(w, "page: %s/exercises/%s\n\n%s\n", c.base, d.ID, strings.TrimSpace(d.README))
	}
	switch {
	case d.State == "":
		fmt.Fprintf(w, "not started: lab exercise start %s\n", d.ID)
	case d.Status.Complete:
		fmt.Fprintln(w, "complete: every step is done")
	}
	for _, s := range d.Steps {
		mark := map[string]string{"done": "[x]", "current": "[>]"}[s.State]
		if mark == "" {
			mark = "[ ]"
		}
		fmt.Fprintf(w, "%s %d. %s\n", mark, s.Number, s.ID)
		if full || s.State == "current" {
			for _, line := range strings.Split(strings.TrimSpace(s.Instructions), "\n") {
				fmt.Fprintf(w, "      %s\n", line)
			}
		}
		for _, e := range s.Evidence {
			if e.Href != "" {
				fmt.Fprintf(w, "      evidence: %s %s%s\n", e.Label, c.base, e.Href)
			} else {
				fmt.Fprintf(w, "      evidence: %s\n", e.Label)
			}
		}
		if s.State != "current" {
			continue
		}
		for i, h := range s.Hints {
			fmt.Fprintf(w, "      hint %d: %s\n", i+1, h)
		}
		if q := s.Question; q != nil {
			fmt.Fprintf(w, "      question: %s\n", q.Text)
			for _, ch := range q.Choices {
				fmt.Fprintf(w, "        - %s\n", ch)
			}
			fmt.Fprintf(w, "      (lab exercise answer %s TEXT)\n", d.ID)
		}
		switch {
		case s.Missing != "":
			fmt.Fprintf(w, "      still missing: %s\n", s.Missing)
		case s.Waiting:
			fmt.Fprintln(w, "      not done yet (the lab is still looking: things can take a few seconds)")
		}
	}
	for _, p := range d.Status.Problems {
		fmt.Fprintf(w, "note: %s\n", p)
	}
}

// solve runs the reference solution of every step left, one after another, printing
// each action as it runs (what "show me" shows): how instructors and tests prove an
// exercise.
func (c *exerciseClient) solve(ctx context.Context, id string, stdout io.Writer) error {
	for {
		d, err := c.get(ctx, id)
		if err != nil {
			return err
		}
		switch {
		case d.State == "":
			return usageErrorf("%s is not started: lab exercise start %s", id, id)
		case d.Status.Complete:
			fmt.Fprintf(stdout, "%s complete\n", id)
			return nil
		}
		step := d.Status.Current
		if d.Solving == nil || !d.Solving.Running {
			if err := c.call(ctx, http.MethodPost, id, "/solve", nil, nil); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "step %s:\n", step)
		printed := map[int]string{}
		for {
			d, err = c.get(ctx, id)
			if err != nil {
				return err
			}
			sv := d.Solving
			if sv == nil {
				return fmt.Errorf("the solution of %s is not running (reset or started again?)", step)
			}
			for _, a := range sv.Actions {
				if printed[a.Index] == a.State {
					continue
				}
				printed[a.Index] = a.State
				line := fmt.Sprintf("  %s: %s", a.State, a.Action)
				if a.Error != "" {
					line += ": " + a.Error
				}
				fmt.Fprintln(stdout, line)
			}
			if !sv.Running {
				if sv.Error != "" {
					fmt.Fprintf(stdout, "  %s\n", sv.Error)
					return errReported
				}
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
}
