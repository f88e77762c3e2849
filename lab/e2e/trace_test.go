package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
)

// jaegerTrace is the part of Jaeger's /api/traces/{id} answer the tests read.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"` // µs
	Duration  int64  `json:"duration"`
	ProcessID string `json:"processID"`
	Tags      []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

func (s jaegerSpan) tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (tr jaegerTrace) service(s jaegerSpan) string { return tr.Processes[s.ProcessID].ServiceName }

func (tr jaegerTrace) services() []string {
	set := map[string]bool{}
	for _, s := range tr.Spans {
		set[tr.service(s)] = true
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (tr jaegerTrace) find(service, op string) []jaegerSpan {
	var out []jaegerSpan
	for _, s := range tr.Spans {
		if (service == "" || tr.service(s) == service) && (op == "" || s.OperationName == op) {
			out = append(out, s)
		}
	}
	return out
}

// fetchTrace asks Jaeger's query API for one trace (nil when it doesn't have it yet).
func fetchTrace(ctx context.Context, queryURL, traceID string) (*jaegerTrace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, queryURL+"/api/traces/"+traceID, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger: GET /api/traces/%s: %s", traceID, resp.Status)
	}
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if len(body.Data) != 1 {
		return nil, fmt.Errorf("jaeger returned %d traces for one id", len(body.Data))
	}
	return &body.Data[0], nil
}

// awaitTrace polls Jaeger until the trace satisfies done (spans arrive from several
// processes, each exporting in batches) or the deadline passes; it returns the last
// version seen.
func awaitTrace(t *testing.T, queryURL, traceID string, done func(*jaegerTrace) bool) *jaegerTrace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last *jaegerTrace
	for {
		tr, err := fetchTrace(ctx, queryURL, traceID)
		if err == nil && tr != nil {
			last = tr
			if done(tr) {
				return tr
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				t.Fatalf("trace %s never appeared in Jaeger (last error: %v)", traceID, err)
			}
			return last
		case <-time.After(500 * time.Millisecond):
		}
	}
}

var sixServices = []string{"gateway", "inventory", "notifications", "orders", "payments", "shipping"}

func hasServices(want []string) func(*jaegerTrace) bool {
	return func(tr *jaegerTrace) bool {
		got := tr.services()
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	}
}

// placeTraced places an order and returns its id, the traceId of the answer and the
// traceresponse header.
func (c *client) placeTraced(t *testing.T, token string, req orderRequest) (id, traceID, traceresponse string) {
	t.Helper()
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequest(http.MethodPost, c.base+"/api/v1/orders", strings.NewReader(string(body)))
	hr.Header.Set("Authorization", "Bearer "+token)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		OrderID string `json:"orderId"`
		TraceID string `json:"traceId"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("place order: %s %v", resp.Status, err)
	}
	return out.OrderID, out.TraceID, resp.Header.Get("traceresponse")
}

// TestOneTracePerCheckout follows orders through Jaeger's API, as a learner would with
// the traceId of the answer: one trace holds every service's spans, the consumer spans
// are children of the producer spans across RabbitMQ, SQL spans sit inside, a failed
// step is an error and its compensation follows — in both saga modes. A log line written
// for the order carries the same trace id.
func TestOneTracePerCheckout(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{tracing: true})
	token := l.api.login(t, "alice@example.com", "alice-secret")

	for _, mode := range []string{contracts.ModeChoreography, contracts.ModeOrchestration} {
		t.Run(mode, func(t *testing.T) {
			l.set("saga.mode", mode)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			id, traceID, tresp := l.api.placeTraced(t, token, newOrder(cardOK, skuOK, "PT"))
			if len(traceID) != 32 || !strings.Contains(tresp, "-"+traceID+"-") {
				t.Fatalf("traceId %q and traceresponse %q do not name one trace", traceID, tresp)
			}
			if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" || o.TraceID != traceID {
				t.Fatalf("order %s: %+v %v (want confirmed, traceId %s)", id, o, err, traceID)
			}
			// Each process exports in its own batches: wait until the trace holds what is
			// judged below (every service, every parent, the hops, the SQL spans), then
			// judge it; a trace that never gets there is judged as it last was.
			tr := awaitTrace(t, l.jaeger, traceID, func(tr *jaegerTrace) bool {
				return hasServices(sixServices)(tr) && parentsArrived(tr) &&
					len(hopProblems(tr)) == 0 && len(sqlProblems(tr)) == 0
			})
			if got := tr.services(); !hasServices(sixServices)(tr) {
				t.Fatalf("trace %s has spans from %v; want %v", traceID, got, sixServices)
			}
			checkHops(t, tr)
			checkSQL(t, tr)
			checkLogs(t, l, traceID)

			// Out of stock: inventory's step fails (error status) and payments refunds.
			id, traceID, _ = l.api.placeTraced(t, token, newOrder(cardOK, skuOOS, "PT"))
			if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "cancelled" {
				t.Fatalf("order %s: %+v %v (want cancelled)", id, o, err)
			}
			// Wait for exactly what is judged below: every process exports in batches of
			// its own, so inventory's failed step may arrive after its other spans.
			tr = awaitTrace(t, l.jaeger, traceID, func(tr *jaegerTrace) bool {
				return len(tr.find("payments", "compensate: refund payment")) > 0 && failedStep(tr) != nil &&
					hasServices([]string{"inventory", "notifications"})(tr) && parentsArrived(tr)
			})
			failed := failedStep(tr)
			if failed == nil {
				t.Fatalf("no inventory span with error status and saga.step.failure=out_of_stock in %s", describe(tr))
			}
			refunds := tr.find("payments", "compensate: refund payment")
			if len(refunds) == 0 || refunds[0].StartTime < failed.StartTime {
				t.Fatalf("no compensating refund after the failed step in %s", describe(tr))
			}
			if r := refunds[0].tag("saga.compensation.reason"); r != contracts.ReasonOutOfStock {
				t.Errorf("refund reason = %q, want out_of_stock", r)
			}
		})
	}
}

// failedStep is inventory's span of the out-of-stock step: error status and
// saga.step.failure=out_of_stock (nil until it has arrived).
func failedStep(tr *jaegerTrace) *jaegerSpan {
	for _, s := range tr.find("inventory", "") {
		if s.tag("error") == "true" && strings.HasPrefix(s.tag("saga.step.failure"), "out_of_stock") {
			return &s
		}
	}
	return nil
}

// parentsArrived reports whether every span's parent is in the trace.
func parentsArrived(tr *jaegerTrace) bool {
	ids := map[string]bool{}
	for _, s := range tr.Spans {
		ids[s.SpanID] = true
	}
	for _, s := range tr.Spans {
		if p := s.parent(); p != "" && !ids[p] {
			return false
		}
	}
	return true
}

// checkHops: every consumer span is the child of a producer span of the same message,
// and at least one such hop crosses from one service to another (through RabbitMQ).
func checkHops(t *testing.T, tr *jaegerTrace) {
	t.Helper()
	for _, p := range hopProblems(tr) {
		t.Error(p)
	}
}

// hopProblems lists what is wrong with the trace's publish→process hops (none: fine).
func hopProblems(tr *jaegerTrace) []string {
	var problems []string
	byID := map[string]jaegerSpan{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = s
	}
	var hops, crossing int
	for _, s := range tr.Spans {
		if s.tag("span.kind") != "consumer" {
			continue
		}
		p, ok := byID[s.parent()]
		if !ok || p.tag("span.kind") != "producer" {
			problems = append(problems, fmt.Sprintf("consumer span %q (%s) has parent %q, not a producer span", s.OperationName, tr.service(s), p.OperationName))
			continue
		}
		if p.tag("messaging.message.id") != s.tag("messaging.message.id") || s.tag("messaging.system") != "rabbitmq" {
			problems = append(problems, fmt.Sprintf("hop %q → %q: message ids %s/%s", p.OperationName, s.OperationName,
				p.tag("messaging.message.id"), s.tag("messaging.message.id")))
		}
		hops++
		if tr.service(p) != tr.service(s) {
			crossing++
		}
	}
	if hops < 5 || crossing < 5 {
		problems = append(problems, fmt.Sprintf("%d publish→process hops (%d between services); a checkout has at least 5: %s", hops, crossing, describe(tr)))
	}
	return problems
}

func checkSQL(t *testing.T, tr *jaegerTrace) {
	t.Helper()
	for _, p := range sqlProblems(tr) {
		t.Error(p)
	}
}

// sqlProblems lists the services of a checkout whose SQL spans the trace lacks.
func sqlProblems(tr *jaegerTrace) []string {
	var problems []string
	with := map[string]bool{}
	for _, s := range tr.Spans {
		if s.tag("db.system") == "postgresql" || s.tag("db.system.name") == "postgresql" {
			with[tr.service(s)] = true
		}
	}
	for _, svc := range []string{"orders", "payments", "inventory", "shipping"} {
		if !with[svc] {
			problems = append(problems, fmt.Sprintf("no SQL span from %s in the trace (SQL spans from %v)", svc, with))
		}
	}
	return problems
}

// checkLogs: the lab's output has lines for this trace from the services that handled it.
func checkLogs(t *testing.T, l *lab, traceID string) {
	t.Helper()
	from := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(l.logs.Tail(1 << 30)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "{")
		if i < 0 || !strings.Contains(line, traceID) {
			continue
		}
		var rec struct {
			Service string `json:"service"`
			TraceID string `json:"trace_id"`
		}
		if json.Unmarshal([]byte(line[i:]), &rec) == nil && rec.TraceID == traceID {
			from[rec.Service] = true
		}
	}
	if !from["orders"] {
		t.Errorf("no log line of orders carries trace_id %s (lines from %v)", traceID, from)
	}
}

func describe(tr *jaegerTrace) string {
	var b strings.Builder
	for _, s := range tr.Spans {
		fmt.Fprintf(&b, "\n  %-13s %-40s kind=%s error=%s", tr.service(s), s.OperationName, s.tag("span.kind"), s.tag("error"))
	}
	return b.String()
}
