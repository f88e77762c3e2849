// Package exercises is microlab's guided exercises: their format, the strict loader
// that checks them, and the engine that runs them, shared by the dashboard and `lab
// exercise` (which asks the dashboard's API).
//
// # Where things are
//
//	format.go, doc.go      the format (this page)
//	load.go, validate.go   the strict loader (decode.go, marshal.go: YAML in and out)
//	lab.go                 the seam: what the engine needs of the running lab (Lab)
//	sources.go             the real Shop (the gateway, through loadgen.Client) and Prometheus
//	engine.go              the engine: Start, Status/Evaluate, Hint, Answer, Solve, Reset
//	checks.go              how each check kind is evaluated against the live stores
//	progress.go            runs and steps, in database lab (migrations/)
//
// # Writing an exercise
//
// An exercise is a directory exercises/NN-slug (NN its number, unique) holding
// exercise.yaml and README.md, both embedded. README.md is for the learner: what the
// pattern is and why it exists, what to do, what to look at (links into the dashboard
// views, Jaeger, Grafana), what it costs, what they learned. exercise.yaml is for the
// lab:
//
//	id: 07-outbox                   # the directory's name
//	title: Transactional outbox vs dual write
//	patterns: [transactional outbox, dual write]
//	level: intermediate             # beginner, intermediate, advanced
//	minutes: 25
//	prerequisites: [01-follow-an-order]
//	setup:                          # what the lab is switched to at the start
//	  settings: {outbox.enabled: true}
//	  clear_faults: [all]           # "all", a service, or an instance (payments-2)
//	  faults: [{service: payments, kind: latency, value: 300ms±50ms}]
//	  traffic: {on: false}          # or {on: true, rate: 5, mix: "ok=80,declined=10,oos=5,xx=5", browse: 3}
//	steps:
//	  - id: lose-an-event           # a slug; other steps refer to it
//	    instructions: |             # Markdown
//	      Place an order ...
//	    hints: [Give it 20 seconds.] # revealed one at a time
//	    check:                      # what must hold for the step to be done
//	      kind: order
//	      status: pending
//	      held: 20s
//	      within: 2m
//	    missing: No order is stuck yet.  # told while the check does not hold
//	    solution:                   # the reference solution: actions the lab runs
//	      - order: {sku: LAB-MUG, card: 4242 4242 4242 4242, country: DE}
//	      - wait: 20s
//	cleanup:                        # what is put back at the end
//	  settings: {outbox.enabled: true}
//	  clear_faults: [payments]
//	  prices: [{sku: LAB-MUG, cents: 1200}]  # set back on catalog (after a price action)
//
// A diagnosis exercise draws its fault anew at each start, so the answer cannot be
// memorised: a setup fault with random names what it draws from instead of its service,
// its value, or both (every draw is checked as a fault of its own), and fault.* answers
// are compared with the draw:
//
//	faults:
//	  - kind: latency
//	    on: http
//	    random: {services: [catalog, payments, inventory], values: [200ms, 400ms]}
//
// The drawn fault is stored hidden (control.Fault.Hidden) until every fault.* question
// is answered or the learner asks for the reveal: it acts, but the services put nothing
// on their spans, metrics and logs that would say where it is, and the switchboard, the
// fault lists (API, `lab fault list`) and the timeline say only that an exercise holds
// a hidden fault.
//
// Settings, faults and services are the control plane's own (services/platform/control:
// Defs, FaultKinds, FaultServices, FaultSpec.Validate), checked with its own validation,
// so an exercise is refused with the message `lab settings` and the switchboard give.
// Message types are services/contracts'; span names are those the waterfall shows
// (`POST /api/v1/orders`, `process order.placed`, `outbox payment.authorized`).
//
// # Checks
//
// A check is one mapping: its kind, its own fields, and within, how long after the
// learner's action (or the solution) it may take to hold (default 1m, at most 30m).
// Evidence counts only if it came after the exercise started, and checks judge the final
// state, not a first attempt. The kinds:
//
//	event    type, source, match (payload fields), same_order_as
//	saga     mode, outcome (pending, confirmed, cancelled), reason, compensation, same_order_as
//	span     service, name, status (ok, error), attributes, event, min_duration, same_order_as
//	promql   expr, held (true for all of this window)
//	setting  key, value
//	fault    service, fault (its kind), active (default true)
//	order    status, reason, held, same_order_as    (through the gateway API)
//	ledger   authorizations, captures, refunds, declines, same_order_as (payments' ledger)
//	answer   question, choices (none: a short text), expect, wrong (a hint after a wrong answer)
//	all, any checks (a list of checks)
//
// same_order_as names an earlier step: the check is about the order whose evidence
// ticked that step. Inside all and any, the checks that name none are about one and
// the same order. An answer's expect is either text (the right answer, compared
// without regard to case) or from: what the lab knows — slowest_span (of the order of
// same_order_as), fault.service, fault.kind, fault.value (of the fault the exercise
// injected, for diagnosis exercises).
//
// # Actions
//
// A solution is a list of actions, one field each: set (settings), fault (one to add),
// clear_faults (a target), order (sku, qty, card, country), traffic (on, rate, mix,
// browse: product reads before each order), scale (service, instances), price (sku,
// cents: set on catalog's internal API, which announces product.price_changed), rebuild
// (a projection, order-history: rebuilt from orders' event store, waited for until it
// completes), wait (a duration), answer (text, or from as in expect).
// Every step needs one: the lab proves each exercise by running its solutions, and a
// check that holds before its step's solution is a defect. lab/e2e's
// TestExerciseProtocol does so for every committed exercise, through the dashboard's
// API on a whole lab: run it after adding or changing one.
//
// # Errors
//
// Load and Parse report every problem of every file at once, each as
// file:line: field: message, for example
//
//	exercises/07-outbox/exercise.yaml:15: steps[0].check.kind: unknown check kind "sags" (kinds: event, saga, ...)
//
// Field paths count list items from 0. Unknown fields are errors.
package exercises
