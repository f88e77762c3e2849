package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// faulty is one real service (the app kit, a database, a vhost, the lab database) whose
// faults the test injects through the control plane, as the dashboard and the CLI do.
type faulty struct {
	t       *testing.T
	env     testenv.Env
	base    string
	logs    *testenv.LogBuffer
	store   *control.Store
	plane   *control.Plane
	bus     *testenv.Bus
	emitted *testenv.Recorder
	crashed chan error
	run     testenv.RunFunc

	mu      sync.Mutex
	handled map[string][]time.Time // correlation id → when the handler ran
}

const faultySvc = "payments" // a service faults may target

func startFaulty(t *testing.T) *faulty {
	t.Helper()
	f := &faulty{t: t, logs: &testenv.LogBuffer{}, crashed: make(chan error, 1), handled: map[string][]time.Time{}}
	f.env = testenv.ServiceEnv(t, faultySvc, true)
	f.env["INSTANCE_ID"] = faultySvc + "-1"
	f.env["LOG_LEVEL"] = "info"
	t.Cleanup(func() {
		if t.Failed() {
			out := f.logs.String()
			t.Logf("the service's last log lines:\n%s", out[max(0, len(out)-8000):])
		}
	})
	q := bus.Queue{Service: faultySvc, Events: []string{contracts.OrderPlaced}}
	opts := app.Options{Name: faultySvc, Consumes: true, Migrations: fstest.MapFS{
		"00001_init.sql": {Data: []byte("-- +goose Up\nCREATE TABLE faults_test (id int);\n")},
	}}
	f.run = func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		err := app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
			a.Mux().HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
				httpx.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
			})
			a.Consume(q, bus.Routes{contracts.OrderPlaced: func(ctx context.Context, d bus.Delivery) error {
				in, err := d.Envelope()
				if err != nil {
					return err
				}
				f.mu.Lock()
				f.handled[in.CorrelationID] = append(f.handled[in.CorrelationID], time.Now())
				f.mu.Unlock()
				out, err := contracts.NewEnvelope(contracts.PaymentAuthorized, faultySvc, in.CorrelationID, in.EventID,
					contracts.Saga{OrderID: in.CorrelationID, SagaMode: contracts.ModeChoreography})
				if err != nil {
					return err
				}
				return a.Emit(ctx, out)
			}})
		})
		if errors.Is(err, app.ErrCrashed) {
			f.crashed <- err // what Main would exit 1 with; the test restarts it
			return nil
		}
		return err
	}
	f.base, _ = testenv.Start(t, f.run, f.env, f.logs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if f.store, err = control.OpenStore(ctx, f.env["LAB_DATABASE_URL"]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.store.Close)
	f.bus = testenv.Dial(t, f.env["AMQP_URL"])
	f.plane = &control.Plane{Store: f.store, Pub: f.bus.Pub}
	f.emitted = testenv.Record(t, f.bus.Tap(t, contracts.ExchangeEvents, contracts.PaymentAuthorized), faultySvc)
	return f
}

func (f *faulty) add(spec control.FaultSpec) control.Fault {
	f.t.Helper()
	spec.Service = faultySvc
	fl, _, err := f.plane.AddFault(context.Background(), spec, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	return fl
}

func (f *faulty) clear() {
	f.t.Helper()
	if _, err := f.plane.ClearFaults(context.Background(), "", "test"); err != nil {
		f.t.Fatal(err)
	}
}

// scrape waits (a minute) until the service's /metrics satisfies ok.
func (f *faulty) scrape(what string, ok func(metrics string) bool) {
	f.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(f.base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(string(b)) {
				return
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("/metrics never showed %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func activeLine(kind string) func(string) bool {
	return func(m string) bool {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "lab_fault_active{") && strings.Contains(l, `kind="`+kind+`"`) &&
				strings.Contains(l, `service="`+faultySvc+`"`) && strings.HasSuffix(l, " 1") {
				return true
			}
		}
		return false
	}
}

// active waits until the instance acts on a fault of kind; gone, until it no longer does.
func (f *faulty) active(kind string) {
	f.t.Helper()
	f.scrape("lab_fault_active "+kind, activeLine(kind))
}
func (f *faulty) gone(kind string) {
	f.t.Helper()
	f.scrape("no lab_fault_active "+kind, func(m string) bool { return !activeLine(kind)(m) })
}

func (f *faulty) get(path string) (int, httpx.ErrorBody, time.Duration) {
	f.t.Helper()
	start := time.Now()
	resp, err := http.Get(f.base + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body httpx.ErrorBody
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, time.Since(start)
}

func (f *faulty) publish(corr string) time.Time {
	f.t.Helper()
	at := time.Now()
	f.bus.Publish(f.t, contracts.OrderPlaced, corr, contracts.Saga{OrderID: corr, SagaMode: contracts.ModeChoreography})
	return at
}

// awaitHandled waits until the handler ran for corr and returns when it first did.
func (f *faulty) awaitHandled(corr string) time.Time {
	f.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		f.mu.Lock()
		at := f.handled[corr]
		f.mu.Unlock()
		if len(at) > 0 {
			return at[0]
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the handler never ran for %s", corr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *faulty) wasHandled(corr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.handled[corr]) > 0
}

func (f *faulty) queue(name string) (messages, consumers int, err error) {
	ch, err := f.bus.Conn.Channel(context.Background())
	if err != nil {
		return 0, 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	return q.Messages, q.Consumers, err
}

// Every fault kind that acts inside an instance, one after the other on one running
// service: what its HTTP clients see, what happens to its messages, what it exports.
func TestFaultsActLiveInAService(t *testing.T) {
	t.Parallel()
	f := startFaulty(t)
	// Steps, not subtests: the service's helpers fail the test from its own goroutine.
	step := func(t *testing.T, name string, run func()) { t.Log("step: " + name); run() }

	step(t, "latency on http", func() {
		f.add(control.FaultSpec{Kind: control.FaultLatency, Value: "200ms", On: control.OnHTTP})
		f.active(control.FaultLatency)
		if code, _, took := f.get("/ping"); code != http.StatusOK || took < 200*time.Millisecond {
			t.Errorf("GET /ping under latency=200ms: %d after %s, want 200 after at least 200ms", code, took)
		}
		f.clear()
		f.gone(control.FaultLatency)
	})

	step(t, "error_rate on http", func() {
		f.add(control.FaultSpec{Kind: control.FaultErrorRate, Value: "1", On: control.OnHTTP})
		f.active(control.FaultErrorRate)
		if code, body, _ := f.get("/ping"); code != http.StatusInternalServerError || body.Error.Code != "lab_fault" {
			t.Errorf("GET /ping under error_rate=1: %d %+v, want 500 lab_fault", code, body)
		}
		for _, p := range []string{"/healthz", "/readyz"} {
			if code, _, _ := f.get(p); code != http.StatusOK {
				t.Errorf("GET %s under error_rate=1: %d, want 200 (never failed by a fault)", p, code)
			}
		}
		// The injected failure is in the route's RED metrics like any answer.
		f.scrape(`http_server_requests_total{code="500",method="GET",route="/ping"}`, func(m string) bool {
			return strings.Contains(m, `http_server_requests_total{code="500",method="GET",route="/ping"} 1`)
		})
		f.clear()
		f.gone(control.FaultErrorRate)
		if code, _, _ := f.get("/ping"); code != http.StatusOK {
			t.Errorf("GET /ping after clearing: %d", code)
		}
	})

	step(t, "down", func() {
		f.add(control.FaultSpec{Kind: control.FaultDown})
		f.active(control.FaultDown)
		for p, want := range map[string]int{"/ping": 503, "/readyz": 503, "/healthz": 200} {
			if code, _, _ := f.get(p); code != want {
				t.Errorf("GET %s while down: %d, want %d", p, code, want)
			}
		}
		// Consumption paused: the consumer is gone, the message waits in the queue.
		deadline := time.Now().Add(time.Minute)
		for {
			_, consumers, err := f.queue(faultySvc + ".events")
			if err == nil && consumers == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s.events still has %d consumers while down (%v)", faultySvc, consumers, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		f.publish("while-down")
		for {
			n, _, err := f.queue(faultySvc + ".events")
			if err == nil && n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s.events holds %d messages while down, want 1 (%v)", faultySvc, n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if f.wasHandled("while-down") {
			t.Fatal("a message was handled while the service was down")
		}
		f.clear()
		f.awaitHandled("while-down") // resumed: the waiting message is handled
		if code, _, _ := f.get("/ping"); code != http.StatusOK {
			t.Errorf("GET /ping after down was cleared: %d", code)
		}
	})

	step(t, "latency on messages", func() {
		f.add(control.FaultSpec{Kind: control.FaultLatency, Value: "300ms", On: control.OnMessages})
		f.active(control.FaultLatency)
		if code, _, _ := f.get("/ping"); code != http.StatusOK {
			t.Errorf("GET /ping under latency on=messages: %d", code)
		}
		sent := f.publish("slow")
		if took := f.awaitHandled("slow").Sub(sent); took < 300*time.Millisecond {
			t.Errorf("a message under latency=300ms reached its handler after %s", took)
		}
		f.clear()
		f.gone(control.FaultLatency)
	})

	step(t, "error_rate on messages, with live retry delays", func() {
		ch, err := f.plane.Set(context.Background(), control.AMQPRetryDelays, "10ms, 20ms", "test")
		if err != nil || ch.New != "10ms,20ms" {
			t.Fatalf("set %s: %+v %v", control.AMQPRetryDelays, ch, err)
		}
		f.scrape("the new retry delays", func(m string) bool {
			return strings.Contains(m, `lab_setting_info{key="amqp.retry.delays",value="10ms,20ms"} 1`)
		})
		f.add(control.FaultSpec{Kind: control.FaultErrorRate, Value: "1", On: control.OnMessages})
		f.active(control.FaultErrorRate)
		f.publish("doomed")
		deadline := time.Now().Add(time.Minute)
		for {
			n, _, err := f.queue(faultySvc + ".dlq")
			if err == nil && n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s.dlq holds %d messages, want the failed one (%v)", faultySvc, n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Retried through the queues of the delays set live (named by delay), then
		// dead-lettered as poison: three attempts, the injected error recorded.
		for _, rq := range []string{faultySvc + ".retry.10ms", faultySvc + ".retry.20ms"} {
			if _, _, err := f.queue(rq); err != nil {
				t.Errorf("retry queue %s: %v", rq, err)
			}
		}
		c, err := f.bus.Conn.Channel(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, ok, err := c.Get(faultySvc+".dlq", true)
		if err != nil || !ok {
			t.Fatalf("get from the DLQ: %v %v", ok, err)
		}
		if a, last := bus.Attempt(d.Headers), fmt.Sprint(d.Headers["x-last-error"]); a != 4 || !strings.Contains(last, "lab fault error_rate=1") {
			t.Errorf("dead-lettered with x-attempt %d and %q; want 4 (three failed deliveries: the first and 2 retries) and the injected error", a, last)
		}
		if f.wasHandled("doomed") {
			t.Error("a failed delivery reached the handler")
		}
		f.clear()
		f.gone(control.FaultErrorRate)
	})

	step(t, "duplicate_delivery", func() {
		f.add(control.FaultSpec{Kind: control.FaultDuplicateDelivery, Value: "1"})
		if !f.logs.AwaitLine(time.Minute, "lab fault duplicate_delivery: the next messages published go out twice") {
			t.Fatal("the instance never took the duplicate_delivery fault")
		}
		corrIs := func(c string) func(contracts.Envelope) bool {
			return func(e contracts.Envelope) bool { return e.CorrelationID == c }
		}
		f.publish("dup-a")
		if got := f.emitted.Await(time.Minute, 2, corrIs("dup-a")); len(got) != 2 || got[0].EventID != got[1].EventID {
			t.Fatalf("under duplicate_delivery=1 the next event went out %d times (%+v), want twice with one id", len(got), got)
		}
		// Only one: the next event goes out once. dup-c, published once dup-b's event is
		// out, is the marker behind it (published together, the consumer's workers could
		// handle them in either order).
		f.publish("dup-b")
		f.emitted.Await(time.Minute, 1, corrIs("dup-b"))
		f.publish("dup-c")
		f.emitted.Await(time.Minute, 1, corrIs("dup-c"))
		if got := f.emitted.Find(corrIs("dup-b")); len(got) != 1 {
			t.Errorf("the event after the duplicated one went out %d times, want once", len(got))
		}
		left, err := f.store.Faults(context.Background())
		if err != nil || len(left) != 0 {
			t.Errorf("a fired duplicate_delivery fault is still stored: %+v %v", left, err)
		}
	})

	step(t, "crash", func() {
		f.add(control.FaultSpec{Kind: control.FaultCrash})
		select {
		case err := <-f.crashed:
			t.Logf("run returned: %v", err)
		case <-time.After(2 * time.Minute):
			t.Fatal("the service never crashed")
		}
		// The fault fired once: the restarted process (same instance) runs on.
		left, err := f.store.Faults(context.Background())
		if err != nil || len(left) != 0 {
			t.Fatalf("a fired crash fault is still stored: %+v %v", left, err)
		}
		f.env["HTTP_ADDR"] = testenv.AnyAddr
		f.base, _ = testenv.Start(t, f.run, f.env, f.logs)
		f.publish("after-crash")
		f.awaitHandled("after-crash")
		select {
		case err := <-f.crashed:
			t.Fatalf("the restarted process crashed again: %v", err)
		default:
		}
	})
}

// crash_after_commit, through the pipeline every message goes through: the handler's
// transaction commits, then the process exits (here: Exit, a test double of os.Exit)
// before what the handler registered to run after its commit (publishing, with the
// outbox off) and before the ack. The fault is claimed, so it fires once.
func TestCrashAfterCommitExitsBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := kitPool(ctx, t, "t_cac_")
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (id text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	store, err := control.OpenStore(ctx, testenv.DB(t, testenv.Name("t_lab_")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	plane := &control.Plane{Store: store}
	fault, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "payments", Kind: control.FaultCrashAfterCommit}, "test")
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var trail []string // what happened, in order
	note := func(s string) { mu.Lock(); trail = append(trail, s); mu.Unlock() }
	handler := func(ctx context.Context, d bus.Delivery) error {
		if _, err := pg.Q(ctx, pool).Exec(ctx, `INSERT INTO effects VALUES ($1)`, d.MessageID); err != nil {
			return err
		}
		pg.AfterCommit(ctx, func(context.Context) { note("published " + d.MessageID) })
		return nil
	}
	exit := func() {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM effects`).Scan(&n)
		note("exit")
		if err != nil || n == 0 {
			t.Errorf("exited before the commit was visible (%d effects, %v)", n, err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	faults := app.Faults{Current: func() []control.Fault { return []control.Fault{fault} }, Exit: exit, Log: log,
		Claim: func(ctx context.Context, f control.Fault) error { return plane.Claim(ctx, f, "payments-1") }}
	h := app.Pipeline(bus.Routes{contracts.OrderPlaced: handler}, pool, "payments", func() bool { return true }, log, nil, faults)
	for _, id := range []string{"m1", "m2"} {
		if err := h(ctx, bus.Delivery{MessageID: id, Type: contracts.OrderPlaced, Attempt: 1}); err != nil {
			t.Fatalf("handle %s: %v", id, err)
		}
	}
	mu.Lock()
	got := strings.Join(trail, ", ")
	mu.Unlock()
	// m2 still sees the fault (Current is fixed here) but finds it claimed: no exit.
	if want := "exit, published m1, published m2"; got != want {
		t.Errorf("happened: %s; want %s", got, want)
	}
	left, err := store.Faults(ctx)
	if err != nil || len(left) != 0 {
		t.Errorf("the fired fault is still stored: %+v %v", left, err)
	}
}
