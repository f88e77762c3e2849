package exercises

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"microlab/dashboard/ingest"
	"microlab/lab/loadgen"
	"microlab/services/contracts"
	"microlab/services/platform/control"
)

// How far back a check looks in the dashboard's stores, newest first. The stores are
// bounded anyway; these bound the work of one evaluation, which the dashboard repeats
// every second or so while an exercise is open.
const (
	scanEvents = 2000
	scanTraces = 200
	scanSagas  = 200
	// scanOrders bounds the orders a check reads through the APIs (order, ledger) in one
	// evaluation: each is an HTTP call.
	scanOrders = 20
)

// match is one way a check holds: the order it holds for ("" when the check is not
// about an order) and the evidence.
type match struct {
	order    string
	evidence []Evidence
}

// evaluation evaluates the checks of one step of a run, against the lab as it is now.
type evaluation struct {
	ctx  context.Context
	lab  *Lab
	ex   *Exercise
	run  *Run
	step int // index of the step being evaluated
	now  time.Time
	// placed are orders the engine placed for this run (Solve): candidates for order
	// and ledger checks besides those the saga store has seen.
	placed []string
	// traceOrders indexes trace ids to order ids (orderOfTrace), built on first use.
	traceOrders map[string]string
	// problems are why a source could not be read (Prometheus down, the gateway
	// refusing): the check did not hold, and the status says why besides Missing.
	problems []string
}

func (ev *evaluation) problem(format string, args ...any) {
	p := fmt.Sprintf(format, args...)
	if !slices.Contains(ev.problems, p) {
		ev.problems = append(ev.problems, p)
	}
}

// fresh reports whether t is evidence of this run: it happened after the run started.
func (ev *evaluation) fresh(t time.Time) bool { return !t.Before(ev.run.Started) }

// holds evaluates the step's check: the first way it holds, if it does.
func (ev *evaluation) holds(c *Check) (match, bool) {
	ms := ev.matches(c, "")
	if len(ms) == 0 {
		return match{}, false
	}
	return ms[0], true
}

// orderScoped reports whether a check of this kind is about one order.
func orderScoped(kind string) bool {
	switch kind {
	case KindEvent, KindSaga, KindSpan, KindOrder, KindLedger:
		return true
	}
	return false
}

// sameOrderAs is the step a check names with same_order_as ("" none).
func sameOrderAs(c *Check) string {
	switch {
	case c.Event != nil:
		return c.Event.SameOrderAs
	case c.Saga != nil:
		return c.Saga.SameOrderAs
	case c.Span != nil:
		return c.Span.SameOrderAs
	case c.Order != nil:
		return c.Order.SameOrderAs
	case c.Ledger != nil:
		return c.Ledger.SameOrderAs
	}
	return ""
}

// orderOfStep is the order that ticked an earlier step ("" if none did).
func (ev *evaluation) orderOfStep(id string) string {
	for _, s := range ev.run.Steps {
		if s.ID == id {
			return s.Order
		}
	}
	return ""
}

// matches lists the ways c holds. order binds an order-scoped check to one order ("":
// any order of this run); a check naming same_order_as is bound to that step's order
// instead, and holds for nothing while that is unknown.
func (ev *evaluation) matches(c *Check, order string) []match {
	if ref := sameOrderAs(c); ref != "" {
		if order = ev.orderOfStep(ref); order == "" {
			return nil
		}
	}
	switch c.Kind {
	case KindEvent:
		return ev.event(c.Event, order)
	case KindSaga:
		return ev.saga(c.Saga, order)
	case KindSpan:
		return ev.span(c.Span, order)
	case KindOrder:
		return ev.order(c.Order, order)
	case KindLedger:
		return ev.ledger(c.Ledger, order)
	case KindPromQL:
		return ev.promql(c.PromQL)
	case KindSetting:
		return ev.setting(c.Setting)
	case KindFault:
		return ev.fault(c.Fault)
	case KindAnswer:
		return ev.answered()
	case KindAll:
		return ev.all(c.Checks, order)
	case KindAny:
		return ev.any(c.Checks, order)
	}
	return nil
}

// all holds when every check holds; the order-scoped ones that name no same_order_as
// (when there are two or more) for one and the same order. The candidates for that
// order come from one of them (the one likeliest to name orders: a saga before a span);
// each is tried on the rest.
func (ev *evaluation) all(checks []Check, order string) []match {
	var free []int // order-scoped (or composed) checks bound by no same_order_as
	for i := range checks {
		c := &checks[i]
		if (orderScoped(c.Kind) || c.Kind == KindAll || c.Kind == KindAny) && sameOrderAs(c) == "" {
			free = append(free, i)
		}
	}
	try := func(order string) (match, bool) {
		m := match{order: order}
		for i := range checks {
			bind := ""
			if slices.Contains(free, i) {
				bind = order
			}
			ms := ev.matches(&checks[i], bind)
			if len(ms) == 0 {
				return match{}, false
			}
			m.evidence = append(m.evidence, ms[0].evidence...)
			if m.order == "" {
				m.order = ms[0].order
			}
		}
		return m, true
	}
	// With one order-scoped check there is nothing to tie to one order: it holds as it
	// holds alone, also for evidence that names no order (the span of a request the
	// gateway refused, which never became an order).
	if order != "" || len(free) <= 1 {
		if m, ok := try(order); ok {
			return []match{m}
		}
		return nil
	}
	gen := free[0]
	for _, k := range []string{KindSaga, KindEvent, KindOrder, KindLedger, KindSpan} {
		if i := slices.IndexFunc(free, func(i int) bool { return checks[i].Kind == k }); i >= 0 {
			gen = free[i]
			break
		}
	}
	var out []match
	tried := 0
	for _, cand := range ev.matches(&checks[gen], "") {
		if cand.order == "" {
			continue // evidence that names no order cannot tie the others to one
		}
		if tried++; tried > scanOrders {
			break
		}
		if m, ok := try(cand.order); ok {
			out = append(out, m)
		}
	}
	return out
}

// any holds when at least one check holds (for order, when bound).
func (ev *evaluation) any(checks []Check, order string) []match {
	var out []match
	for i := range checks {
		out = append(out, ev.matches(&checks[i], order)...)
	}
	return out
}

// orderOfEvent is the order a message is about: its payload's orderId, else its
// correlation id (the order id, for everything of a checkout).
func orderOfEvent(e ingest.Event) string {
	var p struct {
		OrderID string `json:"orderId"`
	}
	_ = json.Unmarshal(e.Payload, &p)
	if p.OrderID != "" {
		return p.OrderID
	}
	return e.CorrelationID
}

// text is a JSON value as text, for match: a string as itself, anything else as written.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(raw))
}

func (ev *evaluation) event(c *EventCheck, order string) []match {
	if ev.lab.Events == nil {
		ev.problem("the lab has no event stream")
		return nil
	}
	var out []match
	seen := map[string]bool{}
	for _, e := range ev.lab.Events.Recent(scanEvents, order) {
		if !ev.fresh(e.At) || e.Type != c.Type || (c.Source != "" && e.Source != c.Source) {
			continue
		}
		if len(c.Match) > 0 {
			var fields map[string]json.RawMessage
			if json.Unmarshal(e.Payload, &fields) != nil {
				continue
			}
			ok := true
			for k, want := range c.Match {
				if raw, has := fields[k]; !has || text(raw) != want {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
		}
		o := orderOfEvent(e)
		if order != "" && o != order {
			continue
		}
		if seen[o] {
			continue // one match per order: the newest
		}
		seen[o] = true
		out = append(out, match{order: o, evidence: []Evidence{{Kind: EvidenceEvent, ID: e.ID, Order: o, Trace: e.TraceID}}})
	}
	return out
}

func (ev *evaluation) saga(c *SagaCheck, order string) []match {
	if ev.lab.Sagas == nil {
		ev.problem("the lab has no saga timelines")
		return nil
	}
	var sagas []ingest.Saga
	if order != "" {
		if sg, ok := ev.lab.Sagas.Get(order); ok {
			sagas = []ingest.Saga{sg}
		}
	} else {
		sagas = ev.lab.Sagas.List(scanSagas, c.Outcome, c.Mode)
	}
	var out []match
	for _, sg := range sagas {
		if !ev.fresh(sg.Start) || (c.Mode != "" && sg.Mode != c.Mode) || (c.Outcome != "" && sg.Outcome != c.Outcome) ||
			(c.Reason != "" && sg.Reason != c.Reason) {
			continue
		}
		if c.Compensation != nil {
			compensated := slices.ContainsFunc(sg.Steps, func(s ingest.SagaStep) bool { return s.Compensation })
			if compensated != *c.Compensation {
				continue
			}
		}
		out = append(out, match{order: sg.OrderID, evidence: []Evidence{{Kind: EvidenceSaga, ID: sg.OrderID, Order: sg.OrderID, Trace: sg.TraceID}}})
	}
	return out
}

// traceOfOrder is the trace of an order's checkout: its saga's, else that of one of its
// messages ("" if neither store knows).
func (ev *evaluation) traceOfOrder(order string) string {
	if ev.lab.Sagas != nil {
		if sg, ok := ev.lab.Sagas.Get(order); ok && sg.TraceID != "" {
			return sg.TraceID
		}
	}
	if ev.lab.Events != nil {
		for _, e := range ev.lab.Events.Recent(50, order) {
			if e.TraceID != "" {
				return e.TraceID
			}
		}
	}
	return ""
}

// orderOfTrace is the order whose checkout a trace is ("" if none known). The index
// is built once per evaluation: a span check may ask for every trace it scans.
func (ev *evaluation) orderOfTrace(trace string) string {
	if ev.traceOrders == nil {
		ev.traceOrders = map[string]string{}
		if ev.lab.Events != nil {
			for _, e := range ev.lab.Events.Recent(scanEvents, "") {
				if e.TraceID != "" {
					ev.traceOrders[e.TraceID] = orderOfEvent(e) // oldest last: the first message wins
				}
			}
		}
		if ev.lab.Sagas != nil { // a saga's trace is its order.placed's: it wins over the messages'
			for _, sg := range ev.lab.Sagas.List(scanSagas, "", "") {
				if sg.TraceID != "" {
					ev.traceOrders[sg.TraceID] = sg.OrderID
				}
			}
		}
	}
	return ev.traceOrders[trace]
}

func spanMatches(c *SpanCheck, s ingest.Span) bool {
	switch {
	case c.Service != "" && s.Service != c.Service,
		c.Name != "" && s.Name != c.Name,
		c.Status == "ok" && s.Error,
		c.Status == "error" && !s.Error,
		s.Duration < c.MinDuration.D:
		return false
	}
	for k, v := range c.Attributes {
		if s.Attrs[k] != v {
			return false
		}
	}
	if c.Event != "" && !slices.ContainsFunc(s.Events, func(e ingest.SpanEvent) bool { return e.Name == c.Event }) {
		return false
	}
	return true
}

func (ev *evaluation) span(c *SpanCheck, order string) []match {
	if ev.lab.Traces == nil {
		ev.problem("the lab has no traces")
		return nil
	}
	var traces []string
	if order != "" {
		if t := ev.traceOfOrder(order); t != "" {
			traces = []string{t}
		}
	} else {
		for _, s := range ev.lab.Traces.Summaries(scanTraces, ingest.Filter{Service: c.Service}) {
			if ev.fresh(s.Start.Add(s.Duration)) {
				traces = append(traces, s.TraceID)
			}
		}
	}
	var out []match
	for _, t := range traces {
		spans, _ := ev.lab.Traces.Trace(t)
		for i := len(spans) - 1; i >= 0; i-- { // the latest such span of the trace
			s := spans[i]
			if !ev.fresh(s.Start) || !spanMatches(c, s) {
				continue
			}
			o := order
			if o == "" {
				o = ev.orderOfTrace(t)
			}
			out = append(out, match{order: o, evidence: []Evidence{{Kind: EvidenceTrace, ID: t, Order: o, Trace: t, Span: s.SpanID}}})
			break
		}
	}
	return out
}

// orders are the orders an order or ledger check reads through the APIs: the bound one,
// or those of this run (placed since it started, as the saga store saw them, and those
// the engine placed itself), newest first, at most scanOrders.
func (ev *evaluation) orders(order string) []string {
	if order != "" {
		return []string{order}
	}
	var out []string
	for i := len(ev.placed) - 1; i >= 0; i-- {
		out = append(out, ev.placed[i])
	}
	if ev.lab.Sagas != nil {
		for _, sg := range ev.lab.Sagas.List(scanSagas, "", "") {
			if ev.fresh(sg.Start) && !slices.Contains(out, sg.OrderID) {
				out = append(out, sg.OrderID)
			}
		}
	}
	if len(out) > scanOrders {
		out = out[:scanOrders]
	}
	return out
}

func (ev *evaluation) order(c *OrderCheck, order string) []match {
	if ev.lab.Shop == nil {
		ev.problem("%v", unavailable("the gateway"))
		return nil
	}
	var out []match
	for _, id := range ev.orders(order) {
		o, err := ev.lab.Shop.GetOrder(ev.ctx, id)
		if loadgen.StatusOf(err) == http.StatusNotFound {
			continue // not a demo user's order (the traffic's shoppers are others)
		}
		if err != nil {
			ev.problem("%v", err)
			continue
		}
		if o.Status != c.Status || (c.Reason != "" && o.CancelReason != c.Reason) || ev.now.Sub(o.Since()) < c.Held.D {
			continue
		}
		out = append(out, match{order: id, evidence: []Evidence{{Kind: EvidenceOrder, ID: id, Order: id, Trace: o.TraceID, Value: o.Status}}})
	}
	return out
}

func (ev *evaluation) ledger(c *LedgerCheck, order string) []match {
	if ev.lab.Shop == nil {
		ev.problem("%v", unavailable("payments' ledger"))
		return nil
	}
	var out []match
	for _, id := range ev.orders(order) {
		l, err := ev.lab.Shop.Ledger(ev.ctx, id)
		if err != nil {
			ev.problem("%v", err)
			continue
		}
		want := func(p *int, got int) bool { return p == nil || *p == got }
		if !want(c.Authorizations, l.Authorizations) || !want(c.Captures, l.Captures) ||
			!want(c.Refunds, l.Refunds) || !want(c.Declines, l.Declines) {
			continue
		}
		v := fmt.Sprintf("authorizations %d, captures %d, refunds %d, declines %d", l.Authorizations, l.Captures, l.Refunds, l.Declines)
		out = append(out, match{order: id, evidence: []Evidence{{Kind: EvidenceLedger, ID: id, Order: id, Value: v}}})
	}
	return out
}

// heldQuery is a PromQL expression that is > 0 now when expr had a non-empty result at
// every step of the last held: the condition held for the whole window (a subquery,
// so one instant query answers it).
func heldQuery(expr string, held time.Duration) string {
	step := max(time.Second, (held / 20).Round(time.Second))
	return fmt.Sprintf("min_over_time((count(%s) or vector(0))[%ds:%ds]) > 0", expr, int(held.Seconds()), int(step.Seconds()))
}

func (ev *evaluation) promql(c *PromQLCheck) []match {
	if ev.lab.Prometheus == nil {
		ev.problem("%v", unavailable("Prometheus"))
		return nil
	}
	if c.Held.D > 0 {
		// The window must lie inside the run: what held before it started is no evidence.
		if ev.now.Sub(ev.run.Started) < c.Held.D {
			return nil
		}
		held, err := ev.lab.Prometheus.Query(ev.ctx, heldQuery(c.Expr, c.Held.D))
		if err != nil {
			ev.problem("%v", err)
			return nil
		}
		if len(held) == 0 {
			return nil
		}
	}
	res, err := ev.lab.Prometheus.Query(ev.ctx, c.Expr)
	if err != nil {
		ev.problem("%v", err)
		return nil
	}
	if len(res) == 0 {
		return nil
	}
	return []match{{evidence: []Evidence{{Kind: EvidencePromQL, ID: c.Expr, Value: strconv.FormatFloat(res[0].Value, 'g', 6, 64)}}}}
}

func (ev *evaluation) switches() (control.Settings, bool) {
	cur, err := ev.lab.State.Load(ev.ctx)
	if err != nil {
		ev.problem("%v", err)
		return control.Settings{}, false
	}
	return cur, true
}

func (ev *evaluation) setting(c *SettingCheck) []match {
	cur, ok := ev.switches()
	if !ok {
		return nil
	}
	want, err := control.Validate(c.Key, c.Value) // normalised as stored: TRUE is true
	if err != nil || cur.Get(c.Key) != want {
		return nil
	}
	return []match{{evidence: []Evidence{{Kind: EvidenceSetting, ID: c.Key, Value: want}}}}
}

func (ev *evaluation) fault(c *FaultCheck) []match {
	cur, ok := ev.switches()
	if !ok {
		return nil
	}
	var found *control.Fault
	for i, f := range cur.Faults {
		if f.Service == c.Service && f.Kind == c.FaultKind && f.Active(ev.now) {
			found = &cur.Faults[i]
			break
		}
	}
	active := c.Active == nil || *c.Active
	switch {
	case active && found != nil:
		return []match{{evidence: []Evidence{{Kind: EvidenceFault, ID: strconv.FormatInt(found.ID, 10), Value: found.Target() + " " + found.String()}}}}
	case !active && found == nil:
		return []match{{evidence: []Evidence{{Kind: EvidenceFault, Value: "no " + c.FaultKind + " on " + c.Service}}}}
	}
	return nil
}

// answered holds when the learner has answered the step's question rightly.
func (ev *evaluation) answered() []match {
	for _, g := range ev.run.Steps[ev.step].Answers {
		if g.Right {
			return []match{{evidence: []Evidence{{Kind: EvidenceAnswer, Value: g.Answer}}}}
		}
	}
	return nil
}

// expected is what the lab knows an answer to be: a's text, or what a.From names.
// false when the lab does not know (yet): the order's trace is not in, no fault was
// injected.
func (ev *evaluation) expected(a Answer) (string, bool) {
	switch a.From {
	case "":
		return a.Text, true
	case "slowest_span":
		s, ok := ev.slowestSpan(ev.orderOfStep(a.SameOrderAs))
		return s.Name, ok
	case "fault.service", "fault.kind", "fault.value":
		f, ok := diagnosis(ev.ex, ev.run)
		if !ok {
			return "", false
		}
		return map[string]string{"fault.service": f.Service, "fault.kind": f.Kind, "fault.value": f.Value}[a.From], true
	}
	return "", false
}

// slowestSpan is the longest span on the critical path of the order's trace (as the
// waterfall outlines it: ingest.CriticalPath), once the trace is complete
// (traceComplete): judged on the spans that arrived so far, the answer could be a span
// that a later one outlasts. false while it is still arriving.
func (ev *evaluation) slowestSpan(order string) (ingest.Span, bool) {
	if order == "" || ev.lab.Traces == nil {
		return ingest.Span{}, false
	}
	t := ev.traceOfOrder(order)
	if t == "" {
		return ingest.Span{}, false
	}
	spans, ok := ev.lab.Traces.Trace(t)
	if !ok {
		return ingest.Span{}, false
	}
	var sg *ingest.Saga
	if ev.lab.Sagas != nil {
		if s, ok := ev.lab.Sagas.Get(order); ok {
			sg = &s
		}
	}
	if !traceComplete(spans, sg) && !traceSettled(sg, ev.now) {
		return ingest.Span{}, false
	}
	byID := make(map[string]ingest.Span, len(spans))
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	var best ingest.Span
	found := false
	for _, id := range ingest.CriticalPath(spans) {
		if s := byID[id]; !found || s.Duration > best.Duration {
			best, found = s, true
		}
	}
	return best, found
}

// traceComplete reports whether a checkout's trace has all its spans: the saga has
// ended (sg, when the lab knows the saga: its outcome is no longer pending), the
// saga's last span is in (a consumer's `process order.confirmed` or
// `process order.cancelled`, the outcome's, after which nothing in the checkout
// happens), and no span's parent is missing (a parent ends, and is exported, after
// its children: one whose parent is absent means more is on the way).
func traceComplete(spans []ingest.Span, sg *ingest.Saga) bool {
	last := []string{"process " + contracts.OrderConfirmed, "process " + contracts.OrderCancelled}
	if sg != nil {
		if sg.Outcome != "confirmed" && sg.Outcome != "cancelled" {
			return false
		}
		last = []string{map[string]string{"confirmed": last[0], "cancelled": last[1]}[sg.Outcome]}
	}
	ids := make(map[string]bool, len(spans))
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	ended := false
	for _, s := range spans {
		if s.ParentID != "" && !ids[s.ParentID] {
			return false
		}
		if slices.Contains(last, s.Name) {
			ended = true
		}
	}
	return ended
}

// traceGrace is how long after a saga's end its trace is judged as it is, complete or
// not: the exporters send within seconds, so a span missing by then (dropped by a crash,
// evicted from a full store) is not coming, and a learner must not wait for it forever.
const traceGrace = 30 * time.Second

// traceSettled reports whether sg ended more than traceGrace before now.
func traceSettled(sg *ingest.Saga, now time.Time) bool {
	if sg == nil || (sg.Outcome != "confirmed" && sg.Outcome != "cancelled") || len(sg.Steps) == 0 {
		return false
	}
	end := sg.Start
	for _, st := range sg.Steps {
		if st.At.After(end) {
			end = st.At
		}
	}
	return now.Sub(end) > traceGrace
}

// diagnosis is the fault a diagnosis asks about: the first setup fault drawn at random,
// else the first one setup injected.
func diagnosis(ex *Exercise, run *Run) (control.Fault, bool) {
	for i, f := range ex.Setup.Faults {
		if f.Random != nil && i < len(run.Injected) {
			return run.Injected[i], true
		}
	}
	if len(run.Injected) > 0 {
		return run.Injected[0], true
	}
	return control.Fault{}, false
}

// rightAnswer compares an answer with what is expected: as text, regardless of case and
// surrounding space; a fault's value also as what it means ("0.2s" is "200ms", "50%"
// is "0.5"), and a latency without its jitter ("300ms" for "300ms±50ms").
func rightAnswer(from, given, want string) bool {
	if sameAnswer(given, want) {
		return true
	}
	if from != "fault.value" {
		return false
	}
	g := strings.ReplaceAll(strings.TrimSpace(given), " ", "")
	if d, _, err := control.ParseLatency(want); err == nil {
		gd, _, err := control.ParseLatency(g)
		return err == nil && gd == d
	}
	if w, err := strconv.ParseFloat(want, 64); err == nil {
		if p, ok := strings.CutSuffix(g, "%"); ok {
			f, err := strconv.ParseFloat(p, 64)
			return err == nil && f/100 == w
		}
		f, err := strconv.ParseFloat(g, 64)
		return err == nil && f == w
	}
	return false
}
