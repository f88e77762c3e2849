package exercises

import (
	"fmt"
	"time"
)

// Exercise is one exercise: exercises/NN-slug/exercise.yaml, and the README.md beside it.
type Exercise struct {
	// ID is the directory's name, NN-slug ("07-outbox"): what the CLI and the URLs use.
	ID    string `yaml:"id"`
	Title string `yaml:"title"`
	// Patterns are the patterns it teaches, as docs/ names them ("transactional outbox").
	Patterns []string `yaml:"patterns"`
	// Level is beginner, intermediate or advanced.
	Level string `yaml:"level"`
	// Minutes is how long a learner takes, about.
	Minutes int `yaml:"minutes"`
	// Prerequisites are the ids of exercises to do first.
	Prerequisites []string `yaml:"prerequisites"`
	// Setup is what the lab is switched to when the exercise starts (the engine first
	// captures the settings and faults in force, which reset restores).
	Setup Setup `yaml:"setup"`
	// Steps are done in order; each ticks itself off when its check holds.
	Steps []Step `yaml:"steps"`
	// Cleanup runs when the exercise ends (completed, or left with reset).
	Cleanup Cleanup `yaml:"cleanup"`

	// README is README.md (Markdown, for the learner). Load fills it in; Parse, which
	// reads one exercise.yaml, leaves it empty.
	README string `yaml:"-"`
}

// Levels an exercise can have, easiest first.
var Levels = []string{"beginner", "intermediate", "advanced"}

// Setup is the state an exercise starts from.
type Setup struct {
	// Settings to set, in order: `outbox.enabled: true`.
	Settings Settings `yaml:"settings"`
	// ClearFaults are the faults to clear first: "all", a service, or an instance.
	ClearFaults []string `yaml:"clear_faults"`
	// Faults to add (after ClearFaults).
	Faults []Fault `yaml:"faults"`
	// Traffic starts (on: true) or stops (on: false) the dashboard's steady shop traffic.
	Traffic *Traffic `yaml:"traffic"`
}

// Cleanup is what the lab is put back to when the exercise ends. It adds no faults.
type Cleanup struct {
	Settings    Settings `yaml:"settings"`
	ClearFaults []string `yaml:"clear_faults"`
	Traffic     *Traffic `yaml:"traffic"`
	// Prices are set back on catalog (an exercise that changes a price puts the seeded
	// one back: the lab's settings are restored by the engine, catalog's data is not).
	Prices []Price `yaml:"prices"`
}

// Setting is one setting and the value to give it; the keys and values are the control
// plane's (services/platform/control: Defs).
type Setting struct {
	Key   string
	Value string
}

// Settings is a YAML mapping of setting keys to values, kept in the order written.
type Settings []Setting

// Fault is a fault to inject, as `lab fault` and the switchboard take it
// (services/platform/control: FaultSpec).
type Fault struct {
	Service  string `yaml:"service"`
	Instance string `yaml:"instance"` // "" = every instance of Service
	Kind     string `yaml:"kind"`
	Value    string `yaml:"value"` // latency "300ms±50ms", error_rate "0.5", a count; "" for the others
	On       string `yaml:"on"`    // latency, error_rate: http, messages or both
	For      string `yaml:"for"`   // expiry, a duration; "" = the control plane's default
	// Random makes a setup fault a diagnosis: its service and/or value are drawn anew at
	// each start, so the answer cannot be memorised. Only setup faults draw.
	Random *RandomFault `yaml:"random"`
}

// RandomFault is what a diagnosis fault draws from at each start: a service of
// Services (instead of Fault.Service), a value of Values (instead of Fault.Value), or
// both. The engine records the draw in the run; fault.* answers are compared with it.
//
//	faults:
//	  - kind: latency
//	    on: http
//	    random: {services: [catalog, payments, inventory], values: [200ms, 400ms]}
type RandomFault struct {
	Services []string `yaml:"services"`
	Values   []string `yaml:"values"`
}

// Traffic switches the dashboard's steady shop traffic (lab/loadgen) on or off.
type Traffic struct {
	On   bool    `yaml:"on"`
	Rate float64 `yaml:"rate"` // orders per second, when on
	Mix  string  `yaml:"mix"`  // outcome weights, "ok=80,declined=10,oos=5,xx=5"; "" = the default mix
	// Browse is how many product reads (the list, a product, the home page) each
	// shopper makes before each order, 0 to 10 (0: none, straight to checkout).
	Browse int `yaml:"browse"`
}

// Step is one thing the learner does, and how the lab knows it is done.
type Step struct {
	// ID names the step within its exercise (a slug); other steps refer to it
	// (same_order_as), and progress is kept by it.
	ID string `yaml:"id"`
	// Instructions say what to do (Markdown).
	Instructions string `yaml:"instructions"`
	// Hints are revealed one at a time, on request, and counted.
	Hints []string `yaml:"hints"`
	// Check is what must hold for the step to be done.
	Check *Check `yaml:"check"`
	// Missing is what the learner is told while the check does not hold: what is still
	// missing, in their words, never the answer.
	Missing string `yaml:"missing"`
	// Solution is the reference solution: actions the lab can run (`lab exercise solve`,
	// "show me"). After it, the check must hold; before it, it must not.
	Solution []Action `yaml:"solution"`
}

// Question is the question the step asks (its check's answer, also inside all and
// any), nil if it asks none: where the dashboard shows an answer box.
func (s *Step) Question() *AnswerCheck {
	if s.Check == nil {
		return nil
	}
	return question(s.Check)
}

// Diagnosis reports whether the exercise draws a fault at random at each start: its
// fault is hidden from the switchboard while it is open.
func (e *Exercise) Diagnosis() bool {
	for _, f := range e.Setup.Faults {
		if f.Random != nil {
			return true
		}
	}
	return false
}

// Action is one action of a reference solution. Exactly one field is set:
//
//   - set: {outbox.enabled: false}
//   - fault: {service: payments, kind: crash_after_commit}
//   - clear_faults: payments
//   - order: {sku: LAB-MUG, card: 4242 4242 4242 4242, country: DE}
//   - traffic: {on: true, rate: 5}
//   - scale: {service: payments, instances: 2}
//   - price: {sku: LAB-MUG, cents: 1500}
//   - rebuild: order-history
//   - wait: 5s
//   - answer: {text: payment.authorized}
type Action struct {
	Set         Settings  `yaml:"set"`
	Fault       *Fault    `yaml:"fault"`
	ClearFaults string    `yaml:"clear_faults"` // "all", a service or an instance
	Order       *Order    `yaml:"order"`
	Traffic     *Traffic  `yaml:"traffic"`
	Scale       *Scale    `yaml:"scale"`
	Price       *Price    `yaml:"price"`
	Rebuild     string    `yaml:"rebuild"` // a projection rebuilt from orders' event store: order-history
	Wait        *Duration `yaml:"wait"`
	Answer      *Answer   `yaml:"answer"`
}

// Order is a checkout placed through the gateway, as a learner would in the shop view,
// by a demo account. The saga's deterministic triggers (DESIGN §5): card
// 4000 0000 0000 0002 is declined, LAB-UNICORN is never in stock, country XX cannot be
// shipped to.
type Order struct {
	SKU     string `yaml:"sku"`
	Qty     int    `yaml:"qty"`     // 0 = 1
	Card    string `yaml:"card"`    // a test card number
	Country string `yaml:"country"` // ISO 3166 alpha-2 ("DE"); "" = DE
}

// Price changes a product's price on catalog's internal API (the public gateway API
// cannot: prices are the shop's to set), which commits it and announces
// product.price_changed through its outbox.
type Price struct {
	SKU   string `yaml:"sku"`
	Cents int    `yaml:"cents"`
}

// Projections are the read models a rebuild action can rebuild from orders' event store
// (services/orders/rebuild.go).
var Projections = []string{"order-history"}

// MaxPriceCents is catalog's bound on a price (services/catalog: maxPriceCents).
const MaxPriceCents = 100_000_000

// Scale runs a service as this many instances (competing consumers on its queue).
type Scale struct {
	Service   string `yaml:"service"`
	Instances int    `yaml:"instances"`
}

// Answer is an answer to a question: either Text, or From: what the lab finds itself
// from the evidence (the reference solution of a question does what the learner does:
// it looks).
type Answer struct {
	Text string `yaml:"text"`
	// From names what the lab knows: see AnswerSources.
	From string `yaml:"from"`
	// SameOrderAs is the step whose order From is about (slowest_span).
	SameOrderAs string `yaml:"same_order_as"`
}

// AnswerSources are what the lab can compare an answer with (Answer.From):
//
//	slowest_span   the name of the longest span on the critical path of an order's trace
//	fault.service  the service of the fault the exercise injected (diagnosis)
//	fault.kind     its kind
//	fault.value    its value (how slow, how often)
var AnswerSources = []string{"slowest_span", "fault.service", "fault.kind", "fault.value"}

// Check kinds.
const (
	KindEvent   = "event"
	KindSaga    = "saga"
	KindSpan    = "span"
	KindPromQL  = "promql"
	KindSetting = "setting"
	KindFault   = "fault"
	KindOrder   = "order"
	KindLedger  = "ledger"
	KindAnswer  = "answer"
	KindAll     = "all"
	KindAny     = "any"
)

// Kinds lists every check kind.
var Kinds = []string{KindEvent, KindSaga, KindSpan, KindPromQL, KindSetting, KindFault,
	KindOrder, KindLedger, KindAnswer, KindAll, KindAny}

// DefaultWithin is how long a check may take to hold when it names no `within`.
const DefaultWithin = time.Minute

// MaxWithin bounds `within` and `held`: no check keeps a learner waiting longer.
const MaxWithin = 30 * time.Minute

// Check is what must hold for a step to be done. In YAML it is one mapping: `kind`,
// `within`, and the fields of its kind, e.g.
//
//	check:
//	  kind: saga
//	  outcome: cancelled
//	  reason: out_of_stock
//	  within: 30s
//
// Exactly one of the kind's fields below is set, the one Kind names (Checks for all and
// any). Checks judge the final state, not a first attempt: things retry by design.
// Evidence counts only if it came after the exercise started.
type Check struct {
	Kind string
	// Within bounds the check in time: how long after the learner's action (or the step's
	// solution) it may take to hold before the engine reports what is missing. 0: DefaultWithin.
	Within Duration

	Event   *EventCheck
	Saga    *SagaCheck
	Span    *SpanCheck
	PromQL  *PromQLCheck
	Setting *SettingCheck
	Fault   *FaultCheck
	Order   *OrderCheck
	Ledger  *LedgerCheck
	Answer  *AnswerCheck
	// Checks are the checks of all (every one holds) and any (at least one holds). The
	// order-scoped checks among them that name no same_order_as are judged on one and
	// the same order.
	Checks []Check
}

// Timeout is Within, or DefaultWithin.
func (c Check) Timeout() time.Duration {
	if c.Within.D == 0 {
		return DefaultWithin
	}
	return c.Within.D
}

// EventCheck holds when the wiretap saw a message (event or command) of this type.
type EventCheck struct {
	Type   string `yaml:"type"`   // contracts: "payment.authorized"
	Source string `yaml:"source"` // the service that published it; "" = any
	// Match are fields of its payload (the envelope's data) and the values they must
	// have, compared as text: {reason: out_of_stock, sagaMode: orchestration}.
	Match map[string]string `yaml:"match"`
	// SameOrderAs: the message belongs to the order that ticked that step (its
	// correlation id); "" = any order placed since the exercise started.
	SameOrderAs string `yaml:"same_order_as"`
}

// SagaCheck holds when an order's saga (the dashboard's saga timeline) is so.
type SagaCheck struct {
	Mode         string `yaml:"mode"`         // choreography, orchestration
	Outcome      string `yaml:"outcome"`      // pending, confirmed, cancelled
	Reason       string `yaml:"reason"`       // payment_declined, out_of_stock, shipping_failed, timeout
	Compensation *bool  `yaml:"compensation"` // a compensating step (refund, release) was, or was not, seen
	SameOrderAs  string `yaml:"same_order_as"`
}

// SpanCheck holds when a span like this was received.
type SpanCheck struct {
	Service string `yaml:"service"`
	Name    string `yaml:"name"`   // as the waterfall shows it: "POST /api/v1/orders", "process order.placed"
	Status  string `yaml:"status"` // ok, error; "" = either
	// Attributes the span must carry, compared as text.
	Attributes map[string]string `yaml:"attributes"`
	// Event is the name of an event the span must have recorded ("lab.fault").
	Event       string   `yaml:"event"`
	MinDuration Duration `yaml:"min_duration"`
	// SameOrderAs: the span is in the trace of that step's order.
	SameOrderAs string `yaml:"same_order_as"`
}

// PromQLCheck holds when a PromQL expression has a non-empty result for all of Held.
type PromQLCheck struct {
	Expr string   `yaml:"expr"`
	Held Duration `yaml:"held"` // 0: one evaluation
}

// SettingCheck holds when a setting has this value.
type SettingCheck struct {
	Key   string `yaml:"key"`
	Value string `yaml:"value"`
}

// FaultCheck holds when a fault of this kind is (Active true or unset) or is not
// (Active false) in force on a service. (Its kind is `fault:`, as `kind:` says which
// check this is.)
type FaultCheck struct {
	Service   string `yaml:"service"`
	FaultKind string `yaml:"fault"`
	Active    *bool  `yaml:"active"`
}

// OrderStatuses are the statuses an order has through the gateway API (and a saga's
// outcomes).
var OrderStatuses = []string{"pending", "confirmed", "cancelled"}

// OrderCheck holds when an order, read through the gateway API, is so.
type OrderCheck struct {
	Status string `yaml:"status"`
	Reason string `yaml:"reason"`
	// Held: the order has had this status for at least so long (an order still pending
	// 20 s after it was placed is stuck: a healthy saga takes well under a second).
	Held        Duration `yaml:"held"`
	SameOrderAs string   `yaml:"same_order_as"`
}

// LedgerCheck holds when payments' ledger of an order (its internal API,
// GET /payments/{orderId}) has these counts.
type LedgerCheck struct {
	Authorizations *int   `yaml:"authorizations"`
	Captures       *int   `yaml:"captures"`
	Refunds        *int   `yaml:"refunds"`
	Declines       *int   `yaml:"declines"`
	SameOrderAs    string `yaml:"same_order_as"`
}

// AnswerCheck asks the learner a question; it holds when the answer matches Expect
// (compared without regard to case and surrounding space).
type AnswerCheck struct {
	Question string `yaml:"question"`
	// Choices make it a multiple-choice question; none: a short text answer.
	Choices []string `yaml:"choices"`
	// Expect is the right answer, or where the lab finds it.
	Expect Answer `yaml:"expect"`
	// Wrong is told after a wrong answer: where the evidence is (which view, which span,
	// which panel), never the answer.
	Wrong string `yaml:"wrong"`
}

// Duration is a Go duration written as text: "500ms", "30s", "2m".
type Duration struct{ D time.Duration }

func (d Duration) String() string { return d.D.String() }

// parseDuration reads a duration, at least 0.
func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return Duration{}, fmt.Errorf("bad duration %q: want a duration like 500ms, 30s or 2m", s)
	}
	return Duration{v}, nil
}
