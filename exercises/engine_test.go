package exercises

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/control"
)

// fault is a fault as the lab listings show it, without what a re-add changes (its id,
// its source, when it was added).
type listed struct {
	Service, Instance, Kind, Value, On string
	Expires                            time.Time
}

func listing(t *testing.T, tl *testLab) ([]control.Entry, []listed) {
	t.Helper()
	ctx := context.Background()
	settings, err := tl.store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	faults, err := tl.store.Faults(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []listed
	for _, f := range faults {
		out = append(out, listed{f.Service, f.Instance, f.Kind, f.Value, f.On, f.Expires})
	}
	slices.SortFunc(out, func(a, b listed) int {
		return strings.Compare(a.Service+a.Instance+a.Kind, b.Service+b.Instance+b.Kind)
	})
	return settings, out
}

// sameListing compares two listings: the same settings and values, the same faults
// expiring within a second of each other (a re-added fault's expiry is whole seconds).
func sameListing(t *testing.T, what string, s1, s2 []control.Entry, f1, f2 []listed) {
	t.Helper()
	for i := range s1 {
		if s1[i].Key != s2[i].Key || s1[i].Value != s2[i].Value {
			t.Errorf("%s: setting %s = %q, want %q", what, s2[i].Key, s2[i].Value, s1[i].Value)
		}
	}
	if len(f1) != len(f2) {
		t.Fatalf("%s: faults\n%+v\nwant\n%+v", what, f2, f1)
	}
	for i := range f1 {
		a, b := f1[i], f2[i]
		if a.Service != b.Service || a.Instance != b.Instance || a.Kind != b.Kind || a.Value != b.Value || a.On != b.On ||
			b.Expires.Sub(a.Expires).Abs() > 1500*time.Millisecond {
			t.Errorf("%s: fault %+v, want %+v", what, b, a)
		}
	}
}

const switchesExercise = `
setup:
  settings:
    saga.mode: orchestration
    outbox.enabled: false
  clear_faults: [all]
  faults:
    - kind: latency
      on: http
      random: {services: [catalog, payments], values: [200ms, 400ms]}
    - {service: payments, kind: crash_after_commit}
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
cleanup:
  settings:
    inbox.enabled: false
`

// Start changes settings and faults through the control plane (stored, announced,
// attributed to the exercise); Reset puts back exactly what was there before, even
// where cleanup says otherwise; starting again resets the run before.
func TestStartAndResetThroughTheControlPlane(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "90-switches", switchesExercise)
	e := tl.engine(t, ex)
	e.pick = func(n int) int { return n - 1 } // payments, 400ms

	// The learner's lab before: settings off their defaults, faults of their own.
	for k, v := range map[string]string{control.HTTPRetries: "2", control.InboxEnabled: "true", control.SagaStepTimeout: "5s"} {
		if _, err := tl.plane.Set(ctx, k, v, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, spec := range []control.FaultSpec{
		{Service: "catalog", Kind: control.FaultLatency, Value: "100ms", For: "30m"},
		{Service: "payments", Instance: "payments-2", Kind: control.FaultErrorRate, Value: "0.25", On: control.OnMessages, For: "20m"},
	} {
		if _, _, err := tl.plane.AddFault(ctx, spec, "test"); err != nil {
			t.Fatal(err)
		}
	}
	s0, f0 := listing(t, tl)
	before, err := tl.store.Changes(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}

	st, err := e.Start(ctx, ex.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	if st.Run == nil || st.Current != "name-it" || st.Complete {
		t.Fatalf("after start: %+v", st)
	}
	cur, err := tl.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur.SagaMode() != "orchestration" || cur.Outbox() || cur.Get(control.HTTPRetries) != "2" {
		t.Errorf("settings after setup: %v", cur.Values)
	}
	var got []string
	for _, f := range cur.Faults {
		got = append(got, f.Target()+" "+f.String()+" by "+f.Source)
	}
	want := []string{"payments latency=400ms on=http by exercise 90-switches", "payments crash_after_commit by exercise 90-switches"}
	if !slices.Equal(got, want) {
		t.Errorf("faults after setup: %q, want %q", got, want)
	}
	if inj := st.Run.Injected; len(inj) != 2 || inj[0].Service != "payments" || inj[0].Value != "400ms" {
		t.Errorf("injected %+v", inj)
	}
	changes, err := tl.store.Changes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ch := range changes {
		if ch.Revision > before[0].Revision {
			n++
			if ch.Source != "exercise 90-switches" {
				t.Errorf("change %+v not attributed to the exercise", ch)
			}
		}
	}
	if n < 5 { // two settings, two faults cleared, two added
		t.Errorf("%d changes by setup, want at least 5", n)
	}
	select {
	case d := <-tl.control:
		if d.Type != control.MessageType {
			t.Errorf("announcement of type %q", d.Type)
		}
	case <-time.After(10 * time.Second):
		t.Error("setup's changes were not announced on lab.control")
	}

	// Starting again resets first: the new run's snapshot is still the learner's lab.
	st2, err := e.Start(ctx, ex.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	if st2.Run.ID == st.Run.ID {
		t.Fatal("start again kept the run")
	}
	if snap := st2.Run.Snapshot; snap.Settings[control.OutboxEnabled] != "true" || len(snap.Faults) != 2 || snap.Faults[0].Service != "catalog" {
		t.Errorf("second snapshot %+v: taken after the first setup, not after its reset", snap)
	}

	st, err = e.Reset(ctx, ex.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Run.State != RunReset {
		t.Errorf("state after reset: %s", st.Run.State)
	}
	s1, f1 := listing(t, tl)
	sameListing(t, "after reset", s0, s1, f0, f1)
	if st, err := e.Status(ctx, ex.ID); err != nil || st.Run != nil {
		t.Errorf("status after reset: %+v, %v", st, err)
	}
	if _, err := e.Reset(ctx, ex.ID); !errors.Is(err, ErrNotStarted) {
		t.Errorf("reset twice: %v, want ErrNotStarted", err)
	}
}

// A run is in database lab: a new Engine (a restarted dashboard) finds it as it was —
// step done with its evidence, hints counted, answers with their verdicts.
func TestProgressSurvivesANewEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "91-progress", `
steps:
  - id: outbox-off
    instructions: Switch the outbox off.
    check: {kind: setting, key: outbox.enabled, value: "false"}
    missing: The outbox is on.
    solution:
      - set: {outbox.enabled: false}
  - id: why
    instructions: Why?
    hints: [Think of the transaction., Two writes and one commit.]
    check:
      kind: answer
      question: What does the outbox share with the change?
      choices: [a transaction, a queue]
      expect: {text: a transaction}
      wrong: Read the outbox's page in docs/.
    missing: Answer.
    solution:
      - answer: {text: a transaction}
`)
	e := tl.engine(t, ex)
	if _, err := e.Start(ctx, ex.ID, "dashboard"); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.plane.Set(ctx, control.OutboxEnabled, "false", "dashboard"); err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(ctx, ex.ID)
	if err != nil || st.Current != "why" {
		t.Fatalf("status %+v, %v", st, err)
	}
	if h, err := e.Hint(ctx, ex.ID, ""); err != nil || h.Hint != "Think of the transaction." || h.Revealed != 1 || h.Of != 2 {
		t.Fatalf("hint %+v, %v", h, err)
	}
	if a, err := e.Answer(ctx, ex.ID, "why", "  A Queue "); err != nil || a.Right || a.Hint != "Read the outbox's page in docs/." {
		t.Fatalf("wrong answer: %+v, %v", a, err)
	}

	restarted := tl.engine(t, ex)
	st, err = restarted.Status(ctx, ex.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Run == nil || st.Run.Who != "dashboard" || st.Current != "why" {
		t.Fatalf("after restart: %+v", st)
	}
	s0, s1 := st.Run.Steps[0], st.Run.Steps[1]
	if !s0.Done() || len(s0.Evidence) != 1 || s0.Evidence[0] != (Evidence{Kind: EvidenceSetting, ID: "outbox.enabled", Value: "false"}) {
		t.Errorf("step 1 after restart: %+v", s0)
	}
	if s1.Done() || s1.Hints != 1 || len(s1.Answers) != 1 || s1.Answers[0].Answer != "A Queue" || s1.Answers[0].Right {
		t.Errorf("step 2 after restart: %+v", s1)
	}
	if h, err := restarted.Hint(ctx, ex.ID, "why"); err != nil || h.Revealed != 2 {
		t.Fatalf("second hint %+v, %v", h, err)
	}
	if _, err := restarted.Hint(ctx, ex.ID, "why"); !errors.Is(err, ErrNoMoreHints) {
		t.Errorf("third hint: %v, want ErrNoMoreHints", err)
	}
	a, err := restarted.Answer(ctx, ex.ID, "", "a transaction")
	if err != nil || !a.Right || !a.Status.Complete {
		t.Fatalf("right answer: %+v, %v", a, err)
	}
	list, err := e.List(ctx)
	if err != nil || len(list) != 1 || list[0].State != RunCompleted || list[0].Done != 2 || list[0].Steps != 2 {
		t.Errorf("list %+v, %v", list, err)
	}
	// A completed run stays completed: its steps are done, whatever the lab does now.
	if _, err := tl.plane.Set(ctx, control.OutboxEnabled, "true", "dashboard"); err != nil {
		t.Fatal(err)
	}
	if st, err := e.Status(ctx, ex.ID); err != nil || !st.Complete || !st.Run.Steps[0].Done() {
		t.Errorf("completed run after a change: %+v, %v", st, err)
	}
}

// Bad input is refused with the sentinel errors the API maps to 4xx.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "92-input", `
steps:
  - id: first
    instructions: Switch the outbox off.
    check: {kind: setting, key: outbox.enabled, value: "false"}
    missing: The outbox is on.
    solution:
      - set: {outbox.enabled: false}
  - id: second
    instructions: Say yes.
    check: {kind: answer, question: "Yes?", expect: {text: "yes"}}
    missing: Answer.
    solution:
      - answer: {text: "yes"}
`)
	e := tl.engine(t, ex)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"unknown exercise", func() error { _, err := e.Start(ctx, "99-nope", "test"); return err }(), ErrUnknownExercise},
		{"not started", func() error { _, err := e.Hint(ctx, ex.ID, ""); return err }(), ErrNotStarted},
		{"started", func() error { _, err := e.Start(ctx, ex.ID, "test"); return err }(), nil},
		{"unknown step", func() error { _, err := e.Answer(ctx, ex.ID, "third", "x"); return err }(), ErrUnknownStep},
		{"no question", func() error { _, err := e.Answer(ctx, ex.ID, "first", "x"); return err }(), ErrNoQuestion},
		{"a later step", func() error { _, err := e.Answer(ctx, ex.ID, "second", "yes"); return err }(), ErrNotCurrent},
		{"no hints", func() error { _, err := e.Hint(ctx, ex.ID, "first"); return err }(), ErrNoMoreHints},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
}

// One step checking cs (a check mapping, indented for a step), within 1s.
func oneStep(check string) string {
	return `
steps:
  - id: only
    instructions: Do it.
    check:
` + check + `
      within: 1s
    missing: Not yet.
    solution:
      - wait: 1ms
`
}

// Each check kind that needs no running shop, against the real stores: it does not
// hold before its evidence (nor for evidence older than the run, nor for evidence of
// another kind), and holds after.
func TestCheckKinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	type lab = *testLab
	for _, tc := range []struct {
		name, check string
		decoy       func(t *testing.T, l lab) // evidence that must not count
		evidence    func(t *testing.T, l lab)
		kind        string // of the evidence that ticks
	}{
		{"setting", "      kind: setting\n      key: notifications.mode\n      value: sync",
			func(t *testing.T, l lab) { set(t, l, control.NotificationsMode, "async") },
			func(t *testing.T, l lab) { set(t, l, control.NotificationsMode, "sync") }, EvidenceSetting},
		{"fault", "      kind: fault\n      service: shipping\n      fault: down",
			func(t *testing.T, l lab) {
				addFault(t, l, control.FaultSpec{Service: "shipping", Kind: control.FaultLatency, Value: "5ms"})
			},
			func(t *testing.T, l lab) {
				addFault(t, l, control.FaultSpec{Service: "shipping", Kind: control.FaultDown})
			}, EvidenceFault},
		{"fault not active", "      kind: fault\n      service: users\n      fault: down\n      active: false",
			func(t *testing.T, l lab) {
				addFault(t, l, control.FaultSpec{Service: "users", Kind: control.FaultDown})
			},
			func(t *testing.T, l lab) { clear(t, l, "users") }, EvidenceFault},
		{"event", "      kind: event\n      type: stock.rejected\n      source: inventory\n      match: {reason: out_of_stock}",
			func(t *testing.T, l lab) {
				o := "o-" + newSpan()
				l.deliver(t, message{typ: contracts.StockRejected, source: "inventory", order: o, at: time.Now().Add(-time.Hour),
					data: map[string]any{"reason": "out_of_stock", "sagaMode": "choreography"}}) // before the run
				l.deliver(t, message{typ: contracts.StockRejected, source: "inventory", order: o,
					data: map[string]any{"reason": "payment_declined", "sagaMode": "choreography"}}) // another reason
				l.deliver(t, message{typ: contracts.StockReserved, source: "inventory", order: o,
					data: map[string]any{"reason": "out_of_stock", "sagaMode": "choreography"}}) // another type
			},
			func(t *testing.T, l lab) {
				l.deliver(t, message{typ: contracts.StockRejected, source: "inventory", order: "o-" + newSpan(),
					data: map[string]any{"reason": "out_of_stock", "sagaMode": "choreography"}})
			}, EvidenceEvent},
		{"span", "      kind: span\n      service: payments\n      name: process order.placed\n      status: error\n      event: lab.fault\n      min_duration: 100ms\n      attributes: {messaging.system: rabbitmq}",
			func(t *testing.T, l lab) {
				tr := newTrace()
				attrs := map[string]string{"messaging.system": "rabbitmq"}
				l.export(t, tr,
					span{service: "payments", name: "process order.placed", id: newSpan(), start: time.Now(), d: 50 * time.Millisecond, failed: true, event: "lab.fault", attrs: attrs},       // too short
					span{service: "payments", name: "process order.placed", id: newSpan(), start: time.Now(), d: 200 * time.Millisecond, event: "lab.fault", attrs: attrs},                    // not failed
					span{service: "payments", name: "process order.placed", id: newSpan(), start: time.Now().Add(-time.Hour), d: time.Second, failed: true, event: "lab.fault", attrs: attrs}) // before the run
			},
			func(t *testing.T, l lab) {
				l.export(t, newTrace(), span{service: "payments", name: "process order.placed", id: newSpan(), start: time.Now(), d: 150 * time.Millisecond,
					failed: true, event: "lab.fault", attrs: map[string]string{"messaging.system": "rabbitmq"}})
			}, EvidenceTrace},
		{"saga", "      kind: saga\n      outcome: cancelled\n      reason: out_of_stock\n      compensation: true",
			func(t *testing.T, l lab) {
				l.checkout(t, "o-"+newSpan(), newTrace(), "")                      // confirmed
				l.checkout(t, "o-"+newSpan(), newTrace(), contracts.ReasonTimeout) // another reason
			},
			func(t *testing.T, l lab) { l.checkout(t, "o-"+newSpan(), newTrace(), contracts.ReasonOutOfStock) }, EvidenceSaga},
		{"any", "      kind: any\n      checks:\n        - {kind: setting, key: read.model, value: cqrs}\n        - {kind: fault, service: orders, fault: poison}",
			func(t *testing.T, l lab) { set(t, l, control.ReadModel, "composition") },
			func(t *testing.T, l lab) { set(t, l, control.ReadModel, "cqrs") }, EvidenceSetting},
		{"all, on one and the same order", "      kind: all\n      checks:\n        - {kind: saga, outcome: confirmed}\n        - {kind: event, type: payment.authorized, match: {note: mine}}",
			func(t *testing.T, l lab) {
				l.checkout(t, "o-"+newSpan(), newTrace(), "") // confirmed, but its payment.authorized is not "mine"
				l.deliver(t, message{typ: contracts.PaymentAuthorized, source: "payments", order: "o-" + newSpan(),
					data: map[string]any{"sagaMode": "choreography", "note": "mine"}}) // "mine", but its order is pending
			},
			func(t *testing.T, l lab) {
				o := "o-" + newSpan()
				l.deliver(t, message{typ: contracts.PaymentAuthorized, source: "payments", order: o,
					data: map[string]any{"sagaMode": "choreography", "note": "mine"}})
				l.deliver(t, message{typ: contracts.OrderConfirmed, source: "orders", order: o, data: map[string]any{"sagaMode": "choreography"}})
			}, EvidenceSaga},
		// One order-scoped check in an all: a span of a request that never became an
		// order (a 503 of an open breaker) still counts, with the other checks.
		{"all, a span of no order", "      kind: all\n      checks:\n        - {kind: span, service: gateway, attributes: {http.response.status_code: \"503\"}}\n        - {kind: setting, key: gateway.breaker.enabled, value: \"false\"}",
			func(t *testing.T, l lab) {
				set(t, l, control.GatewayBreakerEnabled, "true")
				l.export(t, newTrace(), span{service: "gateway", name: "POST /api/v1/orders", id: newSpan(), start: time.Now(), d: time.Millisecond,
					attrs: map[string]string{"http.response.status_code": "502"}}) // another status
			},
			func(t *testing.T, l lab) {
				l.export(t, newTrace(), span{service: "gateway", name: "POST /api/v1/orders", id: newSpan(), start: time.Now(), d: time.Millisecond,
					attrs: map[string]string{"http.response.status_code": "503"}})
				set(t, l, control.GatewayBreakerEnabled, "false")
			}, EvidenceTrace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "9" + string(rune('0'+len(tc.name)%10)) + "-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			ex := exercise(t, id, oneStep(tc.check))
			e := tl.engine(t, ex)
			tc.decoy(t, tl) // some decoys predate the run on purpose, some come after it
			if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
				t.Fatal(err)
			}
			tc.decoy(t, tl)
			st, err := e.Status(ctx, ex.ID)
			if err != nil {
				t.Fatal(err)
			}
			if st.Current != "only" || st.Run.Steps[0].Done() {
				t.Fatalf("holds before its evidence: %+v", st.Run.Steps[0])
			}
			tc.evidence(t, tl)
			st, err = e.Status(ctx, ex.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Complete || st.Run.Steps[0].Evidence[0].Kind != tc.kind {
				t.Fatalf("does not hold after its evidence: %+v (problems %v)", st.Run.Steps[0], st.Problems)
			}
			if _, err := e.Reset(ctx, ex.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func set(t *testing.T, tl *testLab, k, v string) {
	t.Helper()
	if _, err := tl.plane.Set(context.Background(), k, v, "test"); err != nil {
		t.Fatal(err)
	}
}

func addFault(t *testing.T, tl *testLab, spec control.FaultSpec) {
	t.Helper()
	if _, _, err := tl.plane.AddFault(context.Background(), spec, "test"); err != nil {
		t.Fatal(err)
	}
}

func clear(t *testing.T, tl *testLab, target string) {
	t.Helper()
	if _, err := tl.plane.ClearFaults(context.Background(), target, "test"); err != nil {
		t.Fatal(err)
	}
}

// within bounds a check: Evaluate waits for it that long and then reports what is
// missing, not satisfied; evidence arriving while it waits satisfies it.
func TestWithinBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "93-within", `
steps:
  - id: see-it
    instructions: Make payments publish payment.declined.
    check: {kind: event, type: payment.declined, within: 1500ms}
    missing: No payment was declined yet.
    solution:
      - wait: 1ms
`)
	e := tl.engine(t, ex)
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	st, err := e.Status(ctx, ex.ID)
	if err != nil || !st.Waiting || st.Missing != "" {
		t.Fatalf("within the bound: %+v, %v", st, err)
	}
	t0 := time.Now()
	st, err = e.Evaluate(ctx, ex.ID)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took < 1500*time.Millisecond || st.Complete || st.Missing != "No payment was declined yet." || st.Waiting {
		t.Fatalf("after %s: %+v", took, st)
	}
	// Past its bound since the step became current, Status says what is missing too.
	if st, _ := e.Status(ctx, ex.ID); st.Missing == "" {
		t.Errorf("status past the bound: %+v", st)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		tl.deliver(t, message{typ: contracts.PaymentDeclined, source: "payments", order: "o-" + newSpan(),
			data: map[string]any{"sagaMode": "choreography", "reason": "payment_declined"}})
	}()
	t0 = time.Now()
	st, err = e.Evaluate(ctx, ex.ID)
	if err != nil || !st.Complete || time.Since(t0) > 1400*time.Millisecond {
		t.Fatalf("evidence while waiting: %+v, %v after %s", st, err, time.Since(t0))
	}
}

// same_order_as ties a check to the order that ticked an earlier step; slowest_span
// is the longest span on that order's critical path — not the longest of the trace.
func TestSameOrderAndSlowestSpan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "94-slowest", `
steps:
  - id: place
    instructions: Place an order that is confirmed.
    check: {kind: saga, outcome: confirmed}
    missing: No confirmed order yet.
    solution:
      - order: {sku: LAB-MUG, card: 4242 4242 4242 4242}
  - id: its-span
    instructions: Find its span.
    check: {kind: span, service: payments, name: process order.placed, same_order_as: place}
    missing: No span of that order yet.
    solution:
      - wait: 1ms
  - id: slowest
    instructions: Name the slowest span on its critical path.
    check:
      kind: answer
      question: Which span?
      expect: {from: slowest_span, same_order_as: place}
      wrong: Compare the outlined bars only.
    missing: Answer.
    solution:
      - answer: {from: slowest_span, same_order_as: place}
`)
	e := tl.engine(t, ex)
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	mine, other := "o-"+newSpan(), "o-"+newSpan()
	trace, otherTrace := newTrace(), newTrace()
	tl.checkout(t, mine, trace, "")
	st, err := e.Status(ctx, ex.ID)
	if err != nil || st.Current != "its-span" || st.Run.Steps[0].Order != mine {
		t.Fatalf("after the checkout: %+v, %v", st, err)
	}
	// Another order's span does not tick a step about mine.
	tl.checkout(t, other, otherTrace, "")
	tl.export(t, otherTrace, span{service: "payments", name: "process order.placed", id: newSpan(), start: time.Now(), d: time.Millisecond})
	if st, _ := e.Status(ctx, ex.ID); st.Current != "its-span" {
		t.Fatalf("another order's span ticked it: %+v", st.Run.Steps[1])
	}
	// Mine: root R (0–50ms) has children A (5–20ms) and B (10–45ms); B finishes last,
	// so the path goes R → B → C, C (B's child, 12–200ms) the longest on it. D, A's
	// child (15–400ms), is the longest of the trace but off the path (A ended first).
	t0 := time.Now()
	r, a, b, c, d := newSpan(), newSpan(), newSpan(), newSpan(), newSpan()
	ms := time.Millisecond
	tl.export(t, trace,
		span{service: "gateway", name: "POST /api/v1/orders", id: r, start: t0, d: 50 * ms},
		span{service: "gateway", name: "GET catalog", id: a, parent: r, start: t0.Add(5 * ms), d: 15 * ms},
		span{service: "orders", name: "POST /orders", id: b, parent: r, start: t0.Add(10 * ms), d: 35 * ms},
		span{service: "orders", name: "outbox order.placed", id: c, parent: b, start: t0.Add(12 * ms), d: 188 * ms},
		span{service: "catalog", name: "slow cache warm-up", id: d, parent: a, start: t0.Add(15 * ms), d: 385 * ms},
		span{service: "payments", name: "process order.placed", id: newSpan(), parent: c, start: t0.Add(201 * ms), d: 5 * ms},
	)
	st, err = e.Status(ctx, ex.ID)
	if err != nil || st.Current != "slowest" {
		t.Fatalf("after its span: %+v, %v", st, err)
	}
	if ev := st.Run.Steps[1].Evidence[0]; ev.Kind != EvidenceTrace || ev.Trace != trace || ev.Order != mine {
		t.Errorf("evidence of its-span: %+v", ev)
	}
	// The saga has ended, but its last span (a consumer of order.confirmed) is not in:
	// the trace is still arriving, and an answer is not judged against part of it.
	if res, err := e.Answer(ctx, ex.ID, "", "outbox order.placed"); !errors.Is(err, ErrTraceArriving) {
		t.Fatalf("an answer while the trace is arriving: %+v, %v", res, err)
	}
	tl.export(t, trace, span{service: "notifications", name: "process order.confirmed", id: newSpan(), parent: c,
		start: t0.Add(206 * ms), d: 2 * ms})
	for _, wrong := range []string{"slow cache warm-up", "POST /api/v1/orders"} {
		res, err := e.Answer(ctx, ex.ID, "", wrong)
		if err != nil || res.Right || res.Hint != "Compare the outlined bars only." {
			t.Fatalf("answer %q: %+v, %v", wrong, res, err)
		}
	}
	res, err := e.Answer(ctx, ex.ID, "", " Outbox Order.Placed")
	if err != nil || !res.Right || !res.Status.Complete {
		t.Fatalf("right answer: %+v, %v", res, err)
	}
}

// A diagnosis: the fault drawn at random is what fault.* answers compare with; a wrong
// answer gets the hint that points at the evidence, never the answer; the reference
// solution, run by Solve, reports each action and completes the step.
func TestDiagnosisAndSolve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	ex := exercise(t, "95-diagnosis", `
setup:
  clear_faults: [all]
  faults:
    - kind: latency
      random: {services: [catalog, inventory, shipping], values: [200ms, 400ms±50ms]}
steps:
  - id: which
    instructions: Which service is slow?
    check:
      kind: answer
      question: Which service?
      expect: {from: fault.service}
      wrong: Open the slowest trace; which service's spans are long?
    missing: Name the service.
    solution:
      - answer: {from: fault.service}
  - id: how-much
    instructions: By how much?
    check:
      kind: all
      checks:
        - {kind: answer, question: "How much?", expect: {from: fault.value}}
        - {kind: setting, key: http.retries, value: "3"}
    missing: Answer, and give the gateway three retries.
    solution:
      - set: {http.retries: "3"}
      - answer: {from: fault.value}
cleanup:
  clear_faults: [all]
`)
	for run, draw := range []int{0, 1, 2} {
		e := tl.engine(t, ex)
		e.pick = func(n int) int { return draw % n }
		st, err := e.Start(ctx, ex.ID, "test")
		if err != nil {
			t.Fatal(err)
		}
		f := st.Run.Injected[0]
		want := []string{"catalog", "inventory", "shipping"}[draw]
		if f.Service != want {
			t.Fatalf("run %d drew %s, want %s", run, f.Service, want)
		}
		if hidden, err := e.Hidden(ctx); err != nil || len(hidden) != 1 || hidden[f.ID] != ex.ID {
			t.Fatalf("run %d: hidden %v, %v; want fault %d held by %s", run, hidden, err, f.ID, ex.ID)
		}
		if draw == 2 { // the learner gives up: the fault is revealed, and no longer hidden
			if got, err := e.Reveal(ctx, ex.ID); err != nil || len(got) != 1 || got[0].Service != want {
				t.Fatalf("reveal: %+v, %v", got, err)
			}
			if hidden, _ := e.Hidden(ctx); len(hidden) != 0 {
				t.Errorf("hidden after the reveal: %v", hidden)
			}
		}
		for _, wrong := range want2wrong(want) {
			res, err := e.Answer(ctx, ex.ID, "", wrong)
			if err != nil || res.Right || strings.Contains(res.Hint, want) {
				t.Fatalf("run %d: wrong answer %q: %+v, %v", run, wrong, res, err)
			}
		}
		if res, err := e.Answer(ctx, ex.ID, "", strings.ToUpper(want)); err != nil || !res.Right || res.Status.Current != "how-much" {
			t.Fatalf("run %d: right answer: %+v, %v", run, res, err)
		}
		if hidden, _ := e.Hidden(ctx); draw != 2 && len(hidden) != 1 {
			t.Errorf("run %d: hidden while a question about the fault is open: %v", run, hidden)
		}
		if draw == 1 { // 400ms±50ms: what it means counts, the jitter aside
			if res, _ := e.Answer(ctx, ex.ID, "", "0.4 s"); !res.Right {
				t.Errorf("0.4 s is not 400ms±50ms")
			}
			if _, err := e.Reset(ctx, ex.ID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var seen []string
		st, err = e.Solve(ctx, ex.ID, "", func(ev SolveEvent) { seen = append(seen, ev.State+": "+ev.Action) })
		if err != nil {
			t.Fatal(err)
		}
		wantSeen := []string{"running: set http.retries=3", "done: set http.retries=3",
			"running: answer with what the lab finds: fault.value", "done: answer with what the lab finds: fault.value"}
		if !slices.Equal(seen, wantSeen) || !st.Complete {
			t.Fatalf("run %d: solve reported %q, status %+v", run, seen, st)
		}
		cur, err := tl.store.Load(ctx)
		if err != nil || len(cur.Faults) != 0 {
			t.Errorf("run %d: faults after completion (cleanup clears them): %+v, %v", run, cur.Faults, err)
		}
		if _, err := e.Reset(ctx, ex.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// want2wrong is two wrong answers to "which service".
func want2wrong(right string) []string {
	var out []string
	for _, s := range []string{"catalog", "inventory", "shipping"} {
		if s != right {
			out = append(out, s)
		}
	}
	return out
}

// Traffic and scale are the dashboard's hooks: setup's traffic is switched on, and off
// again by reset; a solution's scale goes to the hook, and without one the action
// fails with ErrUnavailable.
func TestTrafficAndScaleHooks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	var calls []string
	tl.lab.Traffic = func(_ context.Context, on bool, rate float64, mix string, _ int) error {
		calls = append(calls, fmt.Sprintf("traffic %v %g %q", on, rate, mix))
		return nil
	}
	tl.lab.Scale = func(_ context.Context, service string, n int) error {
		calls = append(calls, fmt.Sprintf("scale %s %d", service, n))
		return nil
	}
	ex := exercise(t, "97-hooks", `
setup:
  traffic: {on: true, rate: 2, mix: "ok=90,declined=10"}
steps:
  - id: scale-out
    instructions: Start a second payments.
    check: {kind: setting, key: outbox.enabled, value: "false", within: 1s}
    missing: Not yet.
    solution:
      - scale: {service: payments, instances: 2}
      - set: {outbox.enabled: false}
`)
	e := tl.engine(t, ex)
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	st, err := e.Solve(ctx, ex.ID, "scale-out", nil)
	if err != nil || !st.Complete {
		t.Fatalf("solve: %+v, %v", st, err)
	}
	if _, err := e.Reset(ctx, ex.ID); err != nil {
		t.Fatal(err)
	}
	// Completion stops the traffic setup started; reset stops it again (it is the run's).
	want := []string{`traffic true 2 "ok=90,declined=10"`, "scale payments 2", `traffic false 0 ""`, `traffic false 0 ""`}
	if !slices.Equal(calls, want) {
		t.Errorf("hooks called %q, want %q", calls, want)
	}

	tl.lab.Scale = nil
	e = tl.engine(t, ex)
	if _, err := e.Start(ctx, ex.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Solve(ctx, ex.ID, "", nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("scale without a hook: %v, want ErrUnavailable", err)
	}
}

// A setup the control plane refuses half-way leaves the lab as it was and no run open.
func TestFailedSetupPutsTheLabBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	tl.plane.Running = func(service, _ string) bool { return service != "shipping" }
	ex := exercise(t, "98-refused", `
setup:
  settings: {outbox.enabled: false, saga.mode: orchestration}
  faults:
    - {service: payments, kind: latency, value: 100ms}
    - {service: shipping, kind: down}
steps:
  - id: only
    instructions: Nothing.
    check: {kind: setting, key: outbox.enabled, value: "false"}
    missing: Not yet.
    solution:
      - set: {outbox.enabled: false}
`)
	e := tl.engine(t, ex)
	s0, f0 := listing(t, tl)
	_, err := e.Start(ctx, ex.ID, "test")
	if !control.IsInvalid(err) || !strings.Contains(err.Error(), "shipping is not running") {
		t.Fatalf("start: %v, want the control plane's refusal", err)
	}
	s1, f1 := listing(t, tl)
	sameListing(t, "after the failed setup", s0, s1, f0, f1)
	if st, err := e.Status(ctx, ex.ID); err != nil || st.Run != nil {
		t.Errorf("a run is open after the failed setup: %+v, %v", st, err)
	}
}

// One exercise at a time: starting a second while one is open is refused, naming the
// open one; starting the open one again restarts it; once it is reset, the second starts.
func TestOneExerciseAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tl := newTestLab(t)
	steps := `
steps:
  - id: only
    instructions: Switch the outbox off.
    check: {kind: setting, key: outbox.enabled, value: "false"}
    missing: The outbox is on.
    solution:
      - set: {outbox.enabled: false}
`
	a, b := exercise(t, "94-first", steps), exercise(t, "95-second", steps)
	e := tl.engine(t, a, b)
	if _, err := e.Start(ctx, a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	_, err := e.Start(ctx, b.ID, "test")
	if !errors.Is(err, ErrAnotherOpen) || !strings.Contains(err.Error(), a.ID+" is open") {
		t.Fatalf("second exercise while the first is open: %v, want ErrAnotherOpen naming %s", err, a.ID)
	}
	if _, err := e.Start(ctx, a.ID, "test"); err != nil {
		t.Fatalf("starting the open one again: %v", err)
	}
	if _, err := e.Reset(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Start(ctx, b.ID, "test"); err != nil {
		t.Fatalf("after the first is reset: %v", err)
	}
}
