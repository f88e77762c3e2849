package exercises

import (
	"context"
	"testing"
)

// The fault a diagnosis draws is stored hidden in the control plane (what the
// services and every list honour) until its last fault.* question is answered — shown
// before cleanup runs, so the timeline says what it was — or the learner gives up.
func TestDiagnosisFaultHiddenInTheControlPlane(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "96-hidden", `
setup:
  clear_faults: [all]
  faults:
    - kind: latency
      random: {services: [catalog, inventory], values: [200ms, 400ms]}
steps:
  - id: which
    instructions: Which service is slow?
    check:
      kind: answer
      question: Which service?
      expect: {from: fault.service}
      wrong: Look at the waterfall.
    missing: Name the service.
    solution:
      - answer: {from: fault.service}
  - id: how-much
    instructions: By how much?
    check:
      kind: answer
      question: How much?
      expect: {from: fault.value}
      wrong: Read the span's duration.
    missing: Say how much.
    solution:
      - answer: {from: fault.value}
cleanup:
  clear_faults: [all]
`)
	e := tl.engine(t, ex)
	hidden := func() (bool, string) {
		t.Helper()
		fs, err := tl.store.Faults(ctx)
		if err != nil || len(fs) != 1 {
			t.Fatalf("faults in force: %+v, %v", fs, err)
		}
		return fs[0].Hidden, fs[0].Service
	}

	// Answered: hidden until the last question about the fault, then shown; the
	// completion's cleanup clears it after the reveal is on the timeline.
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	h, svc := hidden()
	if !h {
		t.Fatal("the drawn fault is not hidden in the control plane")
	}
	if res, err := e.Answer(ctx, ex.ID, "", svc); err != nil || !res.Right {
		t.Fatalf("right service: %+v, %v", res, err)
	}
	if h, _ := hidden(); !h {
		t.Error("shown while a question about the fault is still open")
	}
	st, err := e.Solve(ctx, ex.ID, "", nil)
	if err != nil || !st.Complete {
		t.Fatalf("solve how-much: %+v, %v", st, err)
	}
	chs, err := tl.store.Changes(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	revealed := false
	for _, c := range chs {
		revealed = revealed || c.Key == "fault "+svc && c.Old == "an exercise holds a hidden fault"
	}
	if !revealed {
		t.Errorf("the timeline has no reveal of the fault on %s: %+v", svc, chs)
	}

	// Given up on: shown at once.
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if h, _ := hidden(); !h {
		t.Fatal("the drawn fault is not hidden in the control plane")
	}
	got, err := e.Reveal(ctx, ex.ID)
	if err != nil || len(got) != 1 || got[0].Hidden {
		t.Fatalf("reveal: %+v, %v", got, err)
	}
	if h, _ := hidden(); h {
		t.Error("still hidden in the control plane after the reveal")
	}
	if _, err := e.Reset(ctx, ex.ID); err != nil {
		t.Fatal(err)
	}
}
