package exercises

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"microlab/lab/loadgen"
	"microlab/lab/stack"
	"microlab/services/contracts"
	"microlab/services/platform/control"
)

var (
	idPattern      = regexp.MustCompile(`^[0-9]{2}-[a-z0-9]+(-[a-z0-9]+)*$`)
	slugPattern    = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	skuPattern     = regexp.MustCompile(`^[A-Z0-9-]{1,64}$`) // catalog's CHECK on products.sku
	cardPattern    = regexp.MustCompile(`^[0-9 ]{12,23}$`)
	countryPattern = regexp.MustCompile(`^[A-Z]{2}$`)
)

// actions are the fields of an Action, in the order the messages list them.
var actions = fieldNames(reflect.TypeFor[Action]())

// reasons are the saga's cancel reasons (contracts).
var reasons = []string{contracts.ReasonPaymentDeclined, contracts.ReasonOutOfStock,
	contracts.ReasonShippingFailed, contracts.ReasonTimeout}

// maxWait bounds a solution's wait action.
const maxWait = 10 * time.Minute

// validator checks one decoded exercise; d knows where each field was.
type validator struct {
	d     *decoder
	steps map[string]int // step id → index of its first step
}

func list(xs []string) string { return strings.Join(xs, ", ") }

func (v *validator) required(path, s, why string) bool {
	if strings.TrimSpace(s) == "" {
		v.d.errf(path, "missing: %s", why)
		return false
	}
	return true
}

func (v *validator) oneOf(path, s string, known []string, what string) {
	if s != "" && !slices.Contains(known, s) {
		v.d.errf(path, "unknown %s %q (known: %s)", what, s, list(known))
	}
}

// exercise checks everything one file can tell; dir is the name of its directory.
func (v *validator) exercise(e *Exercise, dir string) {
	switch {
	case e.ID == "":
		v.d.errf("id", "missing: the exercise's id, its directory's name %q", dir)
	case e.ID != dir:
		v.d.errf("id", "%q must be the directory's name, %q", e.ID, dir)
	case !idPattern.MatchString(e.ID):
		v.d.errf("id", "%q is not an exercise id: want NN-slug, like 07-outbox", e.ID)
	}
	v.required("title", e.Title, "the exercise's title")
	if len(e.Patterns) == 0 {
		v.d.errf("patterns", "missing: the patterns this exercise teaches")
	}
	v.texts("patterns", e.Patterns)
	if v.required("level", e.Level, "one of "+list(Levels)) && !slices.Contains(Levels, e.Level) {
		v.d.errf("level", "unknown level %q (levels: %s)", e.Level, list(Levels))
	}
	if e.Minutes < 1 || e.Minutes > 240 {
		v.d.errf("minutes", "want how long the exercise takes, from 1 to 240 minutes (got %d)", e.Minutes)
	}
	for i, p := range e.Prerequisites {
		path := fmt.Sprintf("prerequisites[%d]", i)
		switch {
		case !idPattern.MatchString(p):
			v.d.errf(path, "%q is not an exercise id: want NN-slug, like 01-follow-an-order", p)
		case p == e.ID:
			v.d.errf(path, "an exercise cannot be its own prerequisite")
		case slices.Index(e.Prerequisites, p) < i:
			v.d.errf(path, "%q given twice", p)
		}
	}

	v.settings("setup.settings", e.Setup.Settings)
	v.clearFaults("setup.clear_faults", e.Setup.ClearFaults)
	for i, f := range e.Setup.Faults {
		v.fault(fmt.Sprintf("setup.faults[%d]", i), f, true)
	}
	v.traffic("setup.traffic", e.Setup.Traffic)

	if len(e.Steps) == 0 {
		v.d.errf("steps", "missing: an exercise has at least one step")
	}
	v.steps = map[string]int{}
	for i, s := range e.Steps {
		path := fmt.Sprintf("steps[%d].id", i)
		if !v.required(path, s.ID, "a name for the step, a slug like place-an-order") {
			continue
		}
		if !slugPattern.MatchString(s.ID) {
			v.d.errf(path, "%q is not a step id: want a slug, like place-an-order", s.ID)
		}
		if j, dup := v.steps[s.ID]; dup {
			v.d.errf(path, "step id %q given twice (also steps[%d])", s.ID, j)
			continue
		}
		v.steps[s.ID] = i
	}
	for i := range e.Steps {
		v.step(fmt.Sprintf("steps[%d]", i), &e.Steps[i], i)
	}

	v.settings("cleanup.settings", e.Cleanup.Settings)
	v.clearFaults("cleanup.clear_faults", e.Cleanup.ClearFaults)
	v.traffic("cleanup.traffic", e.Cleanup.Traffic)
	for i, p := range e.Cleanup.Prices {
		v.price(fmt.Sprintf("cleanup.prices[%d]", i), p)
	}
}

func (v *validator) texts(path string, xs []string) {
	for i, x := range xs {
		p := fmt.Sprintf("%s[%d]", path, i)
		if strings.TrimSpace(x) == "" {
			v.d.errf(p, "empty")
		} else if slices.Index(xs, x) < i {
			v.d.errf(p, "%q given twice", x)
		}
	}
}

// settings checks keys and values with the control plane's own validation, so an
// exercise is refused with the message the switchboard and `lab settings` give.
func (v *validator) settings(path string, ss Settings) {
	for _, s := range ss {
		if _, err := control.Validate(s.Key, s.Value); err != nil {
			v.d.errf(field(path, s.Key), "%v", err)
		}
	}
}

func (v *validator) clearFaults(path string, targets []string) {
	for i, t := range targets {
		v.clearFault(fmt.Sprintf("%s[%d]", path, i), t)
	}
}

func (v *validator) clearFault(path, target string) {
	if !v.required(path, target, `which faults to clear: "all", a service or an instance`) || target == "all" {
		return
	}
	if err := control.ValidateTarget(target); err != nil {
		v.d.errf(path, "%v", err)
	}
}

// fault checks a fault with the control plane's own validation (FaultSpec.Validate),
// pointing at the field its message is about. Only a setup fault (setup) may draw at
// random: a reference solution does exactly what it says.
func (v *validator) fault(path string, f Fault, setup bool) {
	if f.Random != nil {
		if !setup {
			v.d.errf(field(path, "random"), "only a setup fault draws at random: a solution does exactly what it says")
			return
		}
		v.randomFault(path, f)
		return
	}
	spec := control.FaultSpec{Service: f.Service, Instance: f.Instance, Kind: f.Kind, Value: f.Value, On: f.On, For: f.For}
	if _, err := spec.Validate(time.Now()); err != nil {
		switch {
		case !slices.Contains(control.FaultServices, strings.TrimSpace(f.Service)):
			path = field(path, "service")
		case !slices.Contains(control.FaultKinds, strings.TrimSpace(f.Kind)):
			path = field(path, "kind")
		}
		v.d.errf(path, "%v", err)
	}
}

// randomFault checks a diagnosis fault: what it draws from replaces service and/or
// value, every choice is told once, and every draw is a fault the control plane takes
// (each is checked as a fault of its own, so a service that cannot carry the kind is
// named, at its own line).
func (v *validator) randomFault(path string, f Fault) {
	r, rp := f.Random, field(path, "random")
	switch {
	case len(r.Services) == 0 && len(r.Values) == 0:
		v.d.errf(rp, "missing: what to draw from: services, values, or both")
		return
	case len(r.Services) == 1 || len(r.Values) == 1:
		which := "services"
		if len(r.Values) == 1 {
			which = "values"
		}
		v.d.errf(field(rp, which), "a random choice needs at least two choices (or write the one as the fault's own)")
		return
	case len(r.Services) > 0 && f.Service != "":
		v.d.errf(field(path, "service"), "service or random.services, not both")
		return
	case len(r.Values) > 0 && f.Value != "":
		v.d.errf(field(path, "value"), "value or random.values, not both")
		return
	case f.Instance != "":
		v.d.errf(field(path, "instance"), "a random fault targets a whole service: instances come and go between runs")
		return
	}
	v.texts(field(rp, "services"), r.Services)
	v.texts(field(rp, "values"), r.Values)
	services, values := r.Services, r.Values
	if len(services) == 0 {
		services = []string{f.Service}
	}
	if len(values) == 0 {
		values = []string{f.Value}
	}
	check := func(i, j int) error {
		spec := control.FaultSpec{Service: services[i], Kind: f.Kind, Value: values[j], On: f.On, For: f.For}
		_, err := spec.Validate(time.Now())
		return err
	}
	for i := range services {
		for j := range values {
			err := check(i, j)
			if err == nil {
				continue
			}
			// Blame the choice that makes the draw fail: the one whose neighbours pass.
			p := path
			switch {
			case !slices.Contains(control.FaultKinds, strings.TrimSpace(f.Kind)):
				p = field(path, "kind")
			case len(r.Services) > 0 && !slices.Contains(control.FaultServices, strings.TrimSpace(services[i])):
				p = fmt.Sprintf("%s.services[%d]", rp, i)
			case len(r.Values) > 0 && check(i, (j+1)%len(values)) == nil:
				p = fmt.Sprintf("%s.values[%d]", rp, j)
			case len(r.Services) > 0 && check((i+1)%len(services), j) == nil:
				p = fmt.Sprintf("%s.services[%d]", rp, i)
			}
			v.d.errf(p, "%v", err)
			return // one draw's problem is enough: the others most likely share it
		}
	}
}

func (v *validator) traffic(path string, t *Traffic) {
	if t == nil {
		return
	}
	if !t.On {
		if t.Rate != 0 || t.Mix != "" || t.Browse != 0 {
			v.d.errf(path, "traffic off takes no rate, mix or browse")
		}
		return
	}
	if t.Rate <= 0 || t.Rate > loadgen.MaxRate {
		v.d.errf(field(path, "rate"), "want orders per second, more than 0 and at most %d (got %g)", loadgen.MaxRate, t.Rate)
	}
	if t.Mix != "" {
		if _, err := loadgen.ParseMix(t.Mix); err != nil {
			v.d.errf(field(path, "mix"), "%v", err)
		}
	}
	if t.Browse < 0 || t.Browse > 10 {
		v.d.errf(field(path, "browse"), "want 0 to 10 product reads per order (got %d)", t.Browse)
	}
}

func (v *validator) step(path string, s *Step, i int) {
	v.required(field(path, "instructions"), s.Instructions, "what the learner is to do (Markdown)")
	v.texts(field(path, "hints"), s.Hints)
	if s.Check == nil {
		v.d.errf(field(path, "check"), "missing: every step needs a check (kinds: %s)", list(Kinds))
	} else {
		v.check(field(path, "check"), s.Check, i)
	}
	v.required(field(path, "missing"), s.Missing, "what the learner is told while the check does not hold")
	if len(s.Solution) == 0 {
		v.d.errf(field(path, "solution"), "missing: every step needs a reference solution (actions: %s)", list(actions))
	}
	for j, a := range s.Solution {
		v.action(fmt.Sprintf("%s.solution[%d]", path, j), a, i)
	}
	// A question's reference solution answers it, and rightly when the answer is known.
	if s.Check != nil && len(s.Solution) > 0 {
		if q := question(s.Check); q != nil && !slices.ContainsFunc(s.Solution, func(a Action) bool { return a.Answer != nil }) {
			v.d.errf(field(path, "solution"), "the check asks a question: the solution must answer it (an answer action)")
		} else if q != nil {
			for j, a := range s.Solution {
				if a.Answer != nil && q.Expect.Text != "" && a.Answer.Text != "" && !sameAnswer(a.Answer.Text, q.Expect.Text) {
					v.d.errf(fmt.Sprintf("%s.solution[%d].answer.text", path, j), "%q is not the answer the check expects, %q", a.Answer.Text, q.Expect.Text)
				}
			}
		}
	}
}

// question is the step's answer check, if its check is one (or is made of one).
func question(c *Check) *AnswerCheck {
	if c.Answer != nil {
		return c.Answer
	}
	for i := range c.Checks {
		if q := question(&c.Checks[i]); q != nil {
			return q
		}
	}
	return nil
}

// sameAnswer is how answers are compared: regardless of case and surrounding space.
func sameAnswer(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// ref checks a same_order_as: the name of an earlier step.
func (v *validator) ref(path, ref string, step int) {
	if ref == "" {
		return
	}
	j, ok := v.steps[ref]
	switch {
	case !ok:
		v.d.errf(path, "no step %q in this exercise", ref)
	case j >= step:
		v.d.errf(path, "step %q does not come before this one: name an earlier step, whose order is known by now", ref)
	}
}

func (v *validator) held(path string, held Duration, c *Check) {
	if held.D > MaxWithin {
		v.d.errf(path, "%s is too long: at most %s", held, MaxWithin)
	} else if held.D > c.Timeout() {
		v.d.errf(path, "%s is longer than the check's within (%s): it could never hold in time", held, c.Timeout())
	}
}

func (v *validator) check(path string, c *Check, step int) {
	if c.Within.D > MaxWithin {
		v.d.errf(field(path, "within"), "%s is too long: at most %s", c.Within, MaxWithin)
	}
	switch c.Kind {
	case KindEvent:
		e := c.Event
		if v.required(field(path, "type"), e.Type, "the message type, like payment.authorized") && !contracts.Known(e.Type) {
			v.d.errf(field(path, "type"), "unknown message type %q (events: %s; commands: %s)", e.Type, list(contracts.Events), list(contracts.Commands))
		}
		if e.Source != "" && !slices.Contains(control.PublishingServices, e.Source) {
			v.d.errf(field(path, "source"), "%q publishes no messages (publishers: %s)", e.Source, list(control.PublishingServices))
		}
		v.ref(field(path, "same_order_as"), e.SameOrderAs, step)
	case KindSaga:
		s := c.Saga
		if s.Mode == "" && s.Outcome == "" && s.Reason == "" && s.Compensation == nil {
			v.d.errf(path, "a saga check needs at least one of mode, outcome, reason, compensation")
		}
		v.oneOf(field(path, "mode"), s.Mode, []string{contracts.ModeChoreography, contracts.ModeOrchestration}, "saga mode")
		v.oneOf(field(path, "outcome"), s.Outcome, OrderStatuses, "outcome")
		v.oneOf(field(path, "reason"), s.Reason, reasons, "reason")
		v.ref(field(path, "same_order_as"), s.SameOrderAs, step)
	case KindSpan:
		s := c.Span
		if s.Service == "" && s.Name == "" {
			v.d.errf(path, "a span check needs a service, a name, or both")
		}
		v.oneOf(field(path, "service"), s.Service, stack.Names(), "service")
		v.oneOf(field(path, "status"), s.Status, []string{"ok", "error"}, "status")
		v.ref(field(path, "same_order_as"), s.SameOrderAs, step)
	case KindPromQL:
		v.required(field(path, "expr"), c.PromQL.Expr, "a PromQL expression")
		v.held(field(path, "held"), c.PromQL.Held, c)
	case KindSetting:
		s := c.Setting
		if !v.required(field(path, "key"), s.Key, "the setting's key") {
			break
		}
		if _, err := control.Validate(s.Key, s.Value); err != nil {
			p := field(path, "value")
			if _, known := control.Lookup(s.Key); !known {
				p = field(path, "key")
			}
			v.d.errf(p, "%v", err)
		}
	case KindFault:
		f := c.Fault
		if v.required(field(path, "service"), f.Service, "the service, one of "+list(control.FaultServices)) {
			v.oneOf(field(path, "service"), f.Service, control.FaultServices, "service")
		}
		if v.required(field(path, "fault"), f.FaultKind, "the fault's kind, one of "+list(control.FaultKinds)) {
			v.oneOf(field(path, "fault"), f.FaultKind, control.FaultKinds, "fault")
		}
	case KindOrder:
		o := c.Order
		if v.required(field(path, "status"), o.Status, "the order's status, one of "+list(OrderStatuses)) {
			v.oneOf(field(path, "status"), o.Status, OrderStatuses, "status")
		}
		v.oneOf(field(path, "reason"), o.Reason, reasons, "reason")
		if o.Reason != "" && o.Status != "cancelled" {
			v.d.errf(field(path, "reason"), "only a cancelled order has a reason")
		}
		v.held(field(path, "held"), o.Held, c)
		v.ref(field(path, "same_order_as"), o.SameOrderAs, step)
	case KindLedger:
		l := c.Ledger
		counts := map[string]*int{"authorizations": l.Authorizations, "captures": l.Captures, "refunds": l.Refunds, "declines": l.Declines}
		n := 0
		for _, name := range []string{"authorizations", "captures", "refunds", "declines"} {
			if p := counts[name]; p != nil {
				n++
				if *p < 0 {
					v.d.errf(field(path, name), "a count is at least 0 (got %d)", *p)
				}
			}
		}
		if n == 0 {
			v.d.errf(path, "a ledger check needs at least one of authorizations, captures, refunds, declines")
		}
		v.ref(field(path, "same_order_as"), l.SameOrderAs, step)
	case KindAnswer:
		a := c.Answer
		v.required(field(path, "question"), a.Question, "the question the learner answers")
		if len(a.Choices) == 1 {
			v.d.errf(field(path, "choices"), "a choice needs at least two choices")
		}
		v.texts(field(path, "choices"), a.Choices)
		v.answer(field(path, "expect"), a.Expect, step, a.Choices)
	case KindAll, KindAny:
		if len(c.Checks) == 0 {
			v.d.errf(field(path, "checks"), "missing: the checks %s of which must hold", map[string]string{KindAll: "all", KindAny: "any"}[c.Kind])
		}
		for i := range c.Checks {
			v.check(fmt.Sprintf("%s.checks[%d]", path, i), &c.Checks[i], step)
		}
	}
}

// answer checks an expected answer or an answer action.
func (v *validator) answer(path string, a Answer, step int, choices []string) {
	switch {
	case a.Text == "" && a.From == "":
		v.d.errf(path, "missing: the answer's text, or from: what the lab knows (%s)", list(AnswerSources))
		return
	case a.Text != "" && a.From != "":
		v.d.errf(path, "text or from, not both")
		return
	}
	if a.Text != "" && len(choices) > 0 && !slices.ContainsFunc(choices, func(c string) bool { return sameAnswer(c, a.Text) }) {
		v.d.errf(field(path, "text"), "%q is not one of the choices", a.Text)
	}
	v.oneOf(field(path, "from"), a.From, AnswerSources, "answer source")
	switch {
	case a.From == "slowest_span" && a.SameOrderAs == "":
		v.d.errf(field(path, "same_order_as"), "missing: slowest_span is about an order: name the step that placed it")
	case a.From != "slowest_span" && a.SameOrderAs != "":
		v.d.errf(field(path, "same_order_as"), "only from: slowest_span is about an order")
	}
	v.ref(field(path, "same_order_as"), a.SameOrderAs, step)
}

// price checks a price action (or a price cleanup restores) as catalog would.
func (v *validator) price(path string, p Price) {
	if v.required(field(path, "sku"), p.SKU, "a catalog SKU, like LAB-MUG") && !skuPattern.MatchString(p.SKU) {
		v.d.errf(field(path, "sku"), "bad sku %q: want a catalog SKU, like LAB-MUG", p.SKU)
	}
	if p.Cents < 0 || p.Cents > MaxPriceCents {
		v.d.errf(field(path, "cents"), "want a price in cents from 0 to %d (got %d)", MaxPriceCents, p.Cents)
	}
}

func (v *validator) action(path string, a Action, step int) {
	var set []string
	for name, ok := range map[string]bool{"set": len(a.Set) > 0, "fault": a.Fault != nil, "clear_faults": a.ClearFaults != "",
		"order": a.Order != nil, "traffic": a.Traffic != nil, "scale": a.Scale != nil, "price": a.Price != nil, "rebuild": a.Rebuild != "", "wait": a.Wait != nil, "answer": a.Answer != nil} {
		if ok {
			set = append(set, name)
		}
	}
	slices.SortFunc(set, func(x, y string) int { return slices.Index(actions, x) - slices.Index(actions, y) })
	switch {
	case len(set) == 0:
		v.d.errf(path, "empty action: want one of %s", list(actions))
		return
	case len(set) > 1:
		v.d.errf(path, "one action at a time: got %s (write them as separate actions)", strings.Join(set, " and "))
		return
	}
	switch set[0] {
	case "set":
		v.settings(field(path, "set"), a.Set)
	case "fault":
		v.fault(field(path, "fault"), *a.Fault, false)
	case "clear_faults":
		v.clearFault(field(path, "clear_faults"), a.ClearFaults)
	case "order":
		o, p := a.Order, field(path, "order")
		if v.required(field(p, "sku"), o.SKU, "a catalog SKU, like LAB-MUG") && !skuPattern.MatchString(o.SKU) {
			v.d.errf(field(p, "sku"), "bad sku %q: want a catalog SKU, like LAB-MUG", o.SKU)
		}
		if o.Qty < 0 || o.Qty > 100 {
			v.d.errf(field(p, "qty"), "want from 1 to 100 (got %d)", o.Qty)
		}
		if v.required(field(p, "card"), o.Card, "a test card number, like 4242 4242 4242 4242") && !cardPattern.MatchString(o.Card) {
			v.d.errf(field(p, "card"), "bad card %q: want a test card number, like 4242 4242 4242 4242", o.Card)
		}
		if o.Country != "" && !countryPattern.MatchString(o.Country) {
			v.d.errf(field(p, "country"), "bad country %q: want two capital letters, like DE (XX: no carrier serves it)", o.Country)
		}
	case "traffic":
		v.traffic(field(path, "traffic"), a.Traffic)
	case "scale":
		s, p := a.Scale, field(path, "scale")
		if !v.required(field(p, "service"), s.Service, "the service to scale") {
			break
		}
		// The supervisor's own bounds (lab up --scale): which services, how many.
		if _, err := (stack.Config{}).Instances(map[string]int{s.Service: s.Instances}); err != nil {
			fp := field(p, "instances")
			if _, ok := stack.Find(s.Service); !ok {
				fp = field(p, "service")
			}
			v.d.errf(fp, "%v", err)
		} else if _, ok := control.Lookup(control.ScaleKey(s.Service)); !ok {
			// Scaling at runtime is the setting scale.<service>, which the queue
			// consumers have: another service's callers know one URL.
			v.d.errf(field(p, "service"), "%s cannot be scaled while the lab runs (scale.<service> exists for %s)",
				s.Service, strings.Join(control.ScaleServices, ", "))
		}
	case "price":
		v.price(field(path, "price"), *a.Price)
	case "rebuild":
		if a.Rebuild != Projections[0] {
			v.d.errf(field(path, "rebuild"), "want a projection of orders' event store: %s (got %q)", list(Projections), a.Rebuild)
		}
	case "wait":
		if a.Wait.D <= 0 || a.Wait.D > maxWait {
			v.d.errf(field(path, "wait"), "want a wait above 0 and at most %s (got %s)", maxWait, a.Wait)
		}
	case "answer":
		v.answer(field(path, "answer"), *a.Answer, step, nil)
	}
}
