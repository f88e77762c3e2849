package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// The lab's faults as a learner injects them (through control.Plane, the one code path
// of the dashboard and the CLI), each proved by what it visibly does to the shop.

// faultPlane is the lab's control plane, announcing on the lab's broker.
func (l *lab) faultPlane(t *testing.T) *control.Plane {
	t.Helper()
	return &control.Plane{Store: l.store, Pub: bus.NewPublisher(l.conn(t), slog.New(slog.NewTextHandler(io.Discard, nil)))}
}

func addFault(t *testing.T, p *control.Plane, spec control.FaultSpec) control.Fault {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, _, err := p.AddFault(ctx, spec, "e2e")
	if err != nil {
		t.Fatalf("add fault %+v: %v", spec, err)
	}
	t.Logf("fault %d: %s on %s", f.ID, f, f.Target())
	return f
}

func clearFaults(t *testing.T, p *control.Plane) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.ClearFaults(ctx, "", "e2e"); err != nil {
		t.Fatal(err)
	}
}

// faultActive reads lab_fault_active{service,kind} on the service (false while it does
// not answer /metrics: crashed, restarting).
func (l *lab) faultActive(service, kind string) bool {
	body, err := metricsOf(l.serviceURL(service))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "lab_fault_active{") && strings.Contains(line, `kind="`+kind+`"`) &&
			strings.Contains(line, `service="`+service+`"`) && strings.HasSuffix(line, " 1") {
			return true
		}
	}
	return false
}

// faultSpan is a span as Jaeger returns it, with its events (Jaeger calls them logs).
type faultSpan struct {
	jaegerSpan
	Logs []struct {
		Fields []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"fields"`
	} `json:"logs"`
}

// faultEvents returns the lab.fault events of the spans of service/op in a trace (op
// "": its server spans), each as its attributes, with the spans' durations.
func faultEvents(ctx context.Context, queryURL, traceID, service, op string) (events []map[string]string, durations []time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, queryURL+"/api/traces/"+traceID, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("jaeger: %s", resp.Status)
	}
	var body struct {
		Data []struct {
			Spans     []faultSpan              `json:"spans"`
			Processes map[string]jaegerProcess `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Data) != 1 {
		return nil, nil, fmt.Errorf("decode trace: %v (%d traces)", err, len(body.Data))
	}
	tr := body.Data[0]
	for _, s := range tr.Spans {
		if tr.Processes[s.ProcessID].ServiceName != service || (op != "" && s.OperationName != op) ||
			(op == "" && s.tag("span.kind") != "server") {
			continue
		}
		durations = append(durations, time.Duration(s.Duration)*time.Microsecond)
		for _, lg := range s.Logs {
			attrs := map[string]string{}
			for _, f := range lg.Fields {
				attrs[f.Key] = fmt.Sprint(f.Value)
			}
			if attrs["event"] == "lab.fault" {
				events = append(events, attrs)
			}
		}
	}
	return events, durations, nil
}

// Faults that slow, fail and stop a service, in a lab whose traces are read: latency on
// payments shows on the payment step's consumer span (as long as the delay at least, with
// a lab.fault event) and in lab_fault_active until cleared; poison messages go to
// payments' DLQ while orders keep completing; inventory down stops its intake (its
// queue grows), and once it is cleared the queue drains and every saga finishes.
func TestFaultsSlowFailAndStop(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{tracing: true})
	p := l.faultPlane(t)
	token := l.api.login(t, "alice@example.com", "alice-secret")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// latency
	lat := addFault(t, p, control.FaultSpec{Service: "payments", Kind: control.FaultLatency, Value: "300ms", On: control.OnMessages})
	waitFor(t, time.Minute, "payments exports lab_fault_active{kind=latency}", func() bool { return l.faultActive("payments", control.FaultLatency) })
	id, traceID, _ := l.api.placeTraced(t, token, newOrder(cardOK, skuOK, "DE"))
	if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" {
		t.Fatalf("order %s under latency: %+v %v", id, o, err)
	}
	var events []map[string]string
	var durations []time.Duration
	waitFor(t, 2*time.Minute, "the payment step's span with its lab.fault event in Jaeger", func() bool {
		var err error
		events, durations, err = faultEvents(ctx, l.jaeger, traceID, "payments", "process "+contracts.OrderPlaced)
		return err == nil && len(events) > 0
	})
	ev := events[0]
	if ev["lab.fault.kind"] != control.FaultLatency || ev["lab.fault.value"] != "300ms" || ev["lab.fault.id"] != fmt.Sprint(lat.ID) {
		t.Errorf("lab.fault event %v, want kind latency, value 300ms, id %d", ev, lat.ID)
	}
	if durations[0] < 300*time.Millisecond {
		t.Errorf("the payment step's consumer span lasted %s under latency=300ms", durations[0])
	}
	clearFaults(t, p)
	waitFor(t, time.Minute, "lab_fault_active{kind=latency} gone once cleared", func() bool { return !l.faultActive("payments", control.FaultLatency) })

	// latency on orders' HTTP: on the server span of the placement
	lat = addFault(t, p, control.FaultSpec{Service: "orders", Kind: control.FaultLatency, Value: "200ms", On: control.OnHTTP})
	waitFor(t, time.Minute, "orders exports lab_fault_active{kind=latency}", func() bool { return l.faultActive("orders", control.FaultLatency) })
	id, traceID, _ = l.api.placeTraced(t, token, newOrder(cardOK, skuOK, "DE"))
	if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" {
		t.Fatalf("order %s under HTTP latency on orders: %+v %v", id, o, err)
	}
	waitFor(t, 2*time.Minute, "orders' server span with its lab.fault event in Jaeger", func() bool {
		var err error
		events, durations, err = faultEvents(ctx, l.jaeger, traceID, "orders", "")
		return err == nil && len(events) > 0
	})
	if ev := events[0]; ev["lab.fault.kind"] != control.FaultLatency || ev["lab.fault.id"] != fmt.Sprint(lat.ID) {
		t.Errorf("lab.fault event on orders' server span: %v, want latency, id %d", ev, lat.ID)
	}
	clearFaults(t, p)
	waitFor(t, time.Minute, "lab_fault_active{kind=latency} gone from orders", func() bool { return !l.faultActive("orders", control.FaultLatency) })

	// poison
	dlq := l.queueDepth(t, "payments.dlq")
	addFault(t, p, control.FaultSpec{Service: "payments", Kind: control.FaultPoison, Value: "3"})
	id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := l.api.waitFinal(ctx, token, id); err != nil || o.Status != "confirmed" {
		t.Fatalf("an order behind poison messages: %+v %v", o, err)
	}
	waitFor(t, 2*time.Minute, "3 poison messages in payments.dlq", func() bool { return l.queueDepth(t, "payments.dlq") == dlq+3 })

	// down
	addFault(t, p, control.FaultSpec{Service: "inventory", Kind: control.FaultDown})
	waitFor(t, time.Minute, "inventory exports lab_fault_active{kind=down}", func() bool { return l.faultActive("inventory", control.FaultDown) })
	waitFor(t, time.Minute, "inventory.events without a consumer", func() bool { return l.consumers(t, "inventory.events") == 0 })
	var ids []string
	for range 3 {
		id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waitFor(t, 2*time.Minute, "inventory.events holding the 3 orders' payment.authorized", func() bool {
		return l.queueDepth(t, "inventory.events") >= 3
	})
	for _, id := range ids {
		if o, err := l.api.get(ctx, token, id); err != nil || o.Status != "pending" {
			t.Errorf("order %s while inventory is down: %+v %v, want pending", id, o, err)
		}
	}
	clearFaults(t, p)
	for _, id := range ids {
		o, err := l.api.waitFinal(ctx, token, id)
		if err != nil || o.Status != "confirmed" {
			t.Fatalf("order %s after inventory came back: %+v %v", id, o, err)
		}
		if err := l.checkLedgers(ctx, o); err != nil {
			t.Error(err)
		}
	}
	waitFor(t, time.Minute, "inventory.events drained", func() bool { return l.queueDepth(t, "inventory.events") == 0 })
}

// Faults that end processes and duplicate messages, and what the patterns make of them:
// a crash of payments is restarted by the supervisor and every order placed meanwhile
// completes; crash_after_commit in payments is harmless with the outbox (the restarted
// process relays the committed event) and loses the event without it (the order stays
// pending, money authorized, nobody told); a duplicate_delivery of orders' events
// authorizes twice with the inbox off, once with it on.
func TestFaultsCrashAndDuplicate(t *testing.T) {
	t.Parallel()
	l := startLab(t, labOptions{})
	p := l.faultPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	restarted := func(before int) func() bool {
		return func() bool { pid := l.sup.PID("payments"); return pid != 0 && pid != before }
	}
	healthy := func() {
		t.Helper()
		hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := l.sup.WaitHealthy(hctx, "payments"); err != nil {
			t.Fatal(err)
		}
	}
	noFaults := func() bool {
		fs, err := l.store.Faults(ctx)
		return err == nil && len(fs) == 0
	}

	// crash, under traffic
	pid := l.sup.PID("payments")
	duringFault(t, l, 3*time.Minute, func() {
		time.Sleep(300 * time.Millisecond) // traffic under way: orders in flight when it crashes
		addFault(t, p, control.FaultSpec{Service: "payments", Kind: control.FaultCrash})
		waitFor(t, 2*time.Minute, "payments restarted after its crash", restarted(pid))
	})
	if !noFaults() {
		t.Error("the crash fault is still stored after it fired")
	}
	healthy()

	token := l.api.login(t, "bob@example.com", "bob-secret")

	// crash_after_commit, outbox on
	pid = l.sup.PID("payments")
	addFault(t, p, control.FaultSpec{Service: "payments", Kind: control.FaultCrashAfterCommit})
	waitFor(t, time.Minute, "payments exports lab_fault_active{kind=crash_after_commit}", func() bool {
		return l.faultActive("payments", control.FaultCrashAfterCommit)
	})
	id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "payments crashed after its commit and was restarted", restarted(pid))
	o, err := l.api.waitFinal(ctx, token, id)
	if err != nil || o.Status != "confirmed" {
		t.Fatalf("outbox on: order %s after crash_after_commit: %+v %v", id, o, err)
	}
	if err := l.checkLedgers(ctx, o); err != nil {
		t.Error(err)
	}
	healthy()

	// crash_after_commit, outbox off: the event of the committed authorization is lost
	l.set(control.OutboxEnabled, "false")
	tp := l.tap(t, contracts.PaymentAuthorized, contracts.PaymentDeclined)
	pid = l.sup.PID("payments")
	addFault(t, p, control.FaultSpec{Service: "payments", Kind: control.FaultCrashAfterCommit})
	waitFor(t, time.Minute, "payments exports lab_fault_active{kind=crash_after_commit}", func() bool {
		return l.faultActive("payments", control.FaultCrashAfterCommit)
	})
	victim, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "payments crashed after its commit and was restarted", restarted(pid))
	healthy()
	// The redelivered order.placed is recognised by the inbox of the restarted process.
	waitFor(t, 2*time.Minute, "the restarted payments skipped the redelivered order.placed", func() bool {
		b, err := metricsOf(l.serviceURL("payments"))
		return err == nil && strings.Contains(b, `inbox_duplicates_total{message_type="order.placed",queue="payments.events"} 1`) && b != ""
	})
	marker, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
	if err != nil {
		t.Fatal(err)
	}
	if o, err := l.api.waitFinal(ctx, token, marker); err != nil || o.Status != "confirmed" {
		t.Fatalf("outbox off: the order after the crash: %+v %v", o, err)
	}
	if seen := tp.correlations(t, marker); seen[victim] {
		t.Errorf("outbox off: a payment event for %s was published despite the crash before publishing", victim)
	}
	if o, err := l.api.get(ctx, token, victim); err != nil || o.Status != "pending" {
		t.Errorf("outbox off: order %s is %+v (%v), want pending: its payment event was lost", victim, o, err)
	}
	if pay, err := l.payments(ctx, victim); err != nil || pay.Authorizations != 1 {
		t.Errorf("outbox off: %+v %v, want the one committed authorization nobody was told about", pay, err)
	}
	l.set(control.OutboxEnabled, "true")

	// duplicate_delivery on orders: inbox on, then off. The fault doubles the NEXT
	// message orders publishes, so orders must be quiet first: everything it emitted so
	// far relayed (its outbox empty), so that the next one is the new order's order.placed.
	for _, inboxOn := range []bool{true, false} {
		l.set(control.InboxEnabled, fmt.Sprint(inboxOn))
		waitFor(t, time.Minute, "orders' outbox relayed everything", func() bool {
			b, err := metricsOf(l.serviceURL("orders"))
			return err == nil && strings.Contains(b, "\noutbox_backlog_messages 0\n")
		})
		dups := l.metric(t, "payments", "inbox_duplicates_total", `queue="payments.events"`, `message_type="order.placed"`)
		addFault(t, p, control.FaultSpec{Service: "orders", Kind: control.FaultDuplicateDelivery, Value: "1"})
		waitFor(t, time.Minute, "orders claimed the duplicate_delivery fault", noFaults)
		id, err := l.api.place(ctx, token, newOrder(cardOK, skuOK, "DE"))
		if err != nil {
			t.Fatal(err)
		}
		if !inboxOn {
			waitFor(t, 2*time.Minute, "payments authorized the duplicated order.placed twice", func() bool {
				pay, err := l.payments(ctx, id)
				return err == nil && pay.Authorizations >= 2
			})
			if pay, _ := l.payments(ctx, id); pay.Authorizations != 2 {
				t.Errorf("inbox off: %d authorizations for one order sent twice, want 2", pay.Authorizations)
			}
			continue
		}
		waitFor(t, 2*time.Minute, "payments' inbox skipped the duplicated order.placed", func() bool {
			return l.metric(t, "payments", "inbox_duplicates_total", `queue="payments.events"`, `message_type="order.placed"`) > dups
		})
		o, err := l.api.waitFinal(ctx, token, id)
		if err != nil || o.Status != "confirmed" {
			t.Fatalf("inbox on: order %s sent twice: %+v %v", id, o, err)
		}
		if err := l.checkLedgers(ctx, o); err != nil {
			t.Errorf("inbox on: %v", err)
		}
	}
}

// correlations drains the tap up to the message of until and returns the correlation
// ids seen on the way (until's message is the marker: what was published before it has
// arrived).
func (tp *tap) correlations(t *testing.T, until string) map[string]bool {
	t.Helper()
	ch, err := tp.l.conn(t).Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	seen := map[string]bool{}
	deadline := time.Now().Add(time.Minute)
	for !seen[until] {
		if time.Now().After(deadline) {
			t.Fatalf("no tapped message for %s", until)
		}
		d, ok, err := ch.Get(tp.name, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var env contracts.Envelope
		if json.Unmarshal(d.Body, &env) == nil {
			seen[env.CorrelationID] = true
		}
	}
	return seen
}
