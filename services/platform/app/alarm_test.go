package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

const (
	alarmService  = "alarmsvc"
	alarmInstance = "alarm-test"
)

// A broker memory alarm raised during traffic and then cleared: every order that was
// placed gets its next step, no worker stays blocked, and while the alarm is on the
// service's consumers still drain their queues. That last part is why publishing and
// consuming need separate connections: RabbitMQ blocks a connection that publishes
// during an alarm by no longer reading it, acks included, so on a shared connection a
// backlog (the usual cause of a memory alarm) could never drain.
//
// The service is a real app (inbox, outbox, retries) on a private RabbitMQ node. Its
// step handler emits a follow-up for each order through the outbox; every fifth order
// fails its first attempt, so the retry path (a publish from the worker) runs too. A
// second queue, the sink, stands for a consumer that publishes nothing (notifications):
// it has a backlog when the alarm is raised, and must drain it during the alarm.
func TestMemoryAlarmDuringTraffic(t *testing.T) {
	t.Parallel()
	broker := testenv.PrivateBroker(t)
	env := testenv.Env{
		"AMQP_URL":         broker.URL(),
		"LAB_DATABASE_URL": testenv.DB(t, testenv.Name("t_lab_")),
		"DATABASE_URL":     testenv.DB(t, testenv.Name("t_alarm_")),
		"HTTP_ADDR":        testenv.AnyAddr,
		"INSTANCE_ID":      alarmInstance,
		"LOG_LEVEL":        "info",
		"START_TIMEOUT":    "30s",
		"AMQP_WORKERS":     "8",
	}
	// Held orders' handlers wait (in their inbox transaction) until the test releases
	// them, so that the service publishes after the alarm has reached it: held-2's
	// follow-up (the outbox relay), held-1's retry (a worker).
	release := make(chan struct{})
	heldIn := make(chan string, 2)
	testCtx, endTest := context.WithCancel(context.Background())
	defer endTest()
	var svc atomic.Pointer[app.App]
	step := func(a *app.App) bus.Handler {
		return func(ctx context.Context, d bus.Delivery) error {
			in, err := d.Envelope()
			if err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(in.CorrelationID, "held-"):
				select {
				case heldIn <- in.CorrelationID:
				default: // a redelivery
				}
				select {
				case <-release:
				case <-testCtx.Done():
				}
				if in.CorrelationID == "held-1" && d.Attempt == 1 {
					return errors.New("flaky first attempt") // its retry is published during the alarm
				}
			case strings.HasPrefix(in.CorrelationID, "flaky-") && d.Attempt == 1:
				return errors.New("flaky first attempt") // to the retry queue: a publish from the worker
			}
			out, err := contracts.NewEnvelope(contracts.PaymentAuthorized, alarmService, in.CorrelationID, in.EventID,
				contracts.Saga{OrderID: in.CorrelationID, SagaMode: contracts.ModeChoreography})
			if err != nil {
				return err
			}
			return a.Emit(ctx, out)
		}
	}
	stepQ := bus.Queue{Service: alarmService, Events: []string{contracts.OrderPlaced},
		Retries: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}}
	opts := app.Options{Name: alarmService, Consumes: true, Migrations: fstest.MapFS{
		"00001_init.sql": {Data: []byte("-- +goose Up\nCREATE TABLE alarm_test (id int);\n")},
	}}
	run := func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		return app.RunBase(ctx, opts, getenv, stdout, func(a *app.App) {
			a.Consume(stepQ, bus.Routes{contracts.OrderPlaced: step(a)})
			svc.Store(a)
		})
	}
	logs := &testenv.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			out := logs.String()
			t.Logf("the service's last log lines:\n%s", out[max(0, len(out)-8000):])
		}
	})
	base, stopSvc := testenv.Start(t, run, env, logs)
	a := svc.Load()

	quiet := slog.New(slog.DiscardHandler)
	tap := testenv.Dial(t, broker.URL())
	rec := testenv.Record(t, tap.Tap(t, contracts.ExchangeEvents, contracts.PaymentAuthorized), alarmService)
	followedUp := func() map[string]bool {
		got := map[string]bool{}
		for _, e := range rec.Find(func(contracts.Envelope) bool { return true }) {
			got[e.CorrelationID] = true
		}
		return got
	}
	pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pconn, err := bus.Dial(pctx, broker.URL(), "producer", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pconn.Close() })
	producer := bus.NewPublisher(pconn, quiet)
	place := func(ctx context.Context, typ, corr string) error {
		e, err := contracts.NewEnvelope(typ, "test", corr, "", contracts.Saga{OrderID: corr, SagaMode: contracts.ModeChoreography})
		if err != nil {
			return err
		}
		return producer.PublishEnvelope(ctx, e, nil)
	}

	// The sink's backlog, waiting for a consumer that starts once the alarm is on.
	sinkQ := bus.Queue{Service: "alarm-sink", Events: []string{contracts.NotificationSent}}
	ch, err := tap.Conn.Channel(pctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sinkQ.Declare(ch); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()
	const backlog = 60
	for i := range backlog {
		if err := place(pctx, contracts.NotificationSent, fmt.Sprintf("sink-%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	// Traffic: orders placed one after another, at most 16 without their follow-up yet
	// (paced by the follow-ups, so it stalls during the alarm and resumes after). An
	// order whose publish failed is published again until confirmed; only confirmed ones
	// are owed a follow-up.
	stopTraffic := make(chan struct{})
	confirmedc := make(chan []string, 1)
	go func() {
		var confirmed []string
		defer func() { confirmedc <- confirmed }()
		for n := 0; ; n++ {
			corr := fmt.Sprintf("o-%d", n)
			if n%5 == 0 {
				corr = fmt.Sprintf("flaky-%d", n)
			}
			for {
				select {
				case <-stopTraffic:
					return
				default:
				}
				if len(confirmed)-len(followedUp()) >= 16 {
					time.Sleep(20 * time.Millisecond) // pacing, not synchronisation
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := place(ctx, contracts.OrderPlaced, corr)
				cancel()
				if err == nil {
					confirmed = append(confirmed, corr)
					break
				}
			}
		}
	}()
	awaitFollowUps := func(n int) bool {
		deadline := time.Now().Add(2 * time.Minute)
		for len(followedUp()) < n {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	if !awaitFollowUps(20) {
		t.Fatalf("traffic never flowed: %d follow-ups in 2 minutes", len(followedUp()))
	}
	for _, corr := range []string{"held-1", "held-2"} {
		if err := place(pctx, contracts.OrderPlaced, corr); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-heldIn:
		case <-time.After(time.Minute):
			t.Fatal("the held orders never reached the handler")
		}
	}

	broker.Alarm(true)
	alarmOn := true
	defer func() {
		if alarmOn {
			broker.Alarm(false)
		}
	}()
	// Once the alarm has reached the service's connections (all "blocking"), the held
	// handlers go on: the relay's publish and the worker's retry get the publishing
	// connection blocked.
	awaitConns(t, broker, func(c map[string]string) bool {
		n := 0
		for name, state := range c {
			if strings.HasPrefix(name, alarmInstance) {
				if state != "blocking" && state != "blocked" {
					return false
				}
				n++
			}
		}
		return n > 0
	})
	close(release)
	conns := awaitConns(t, broker, func(c map[string]string) bool {
		for name, state := range c {
			if strings.HasPrefix(name, alarmInstance) && state == "blocked" {
				return true
			}
		}
		return false
	})
	if conns[alarmInstance+"/publish"] != "blocked" || conns[alarmInstance+"/consume"] == "" || conns[alarmInstance+"/consume"] == "blocked" {
		t.Errorf("want a blocked %[1]s/publish connection and an unblocked %[1]s/consume one, the broker has %v", alarmInstance, conns)
	}

	// The sink drains its whole backlog (more than its prefetch) while the alarm is on:
	// its acks are read.
	var sunk sync.Map
	var sunkN atomic.Int32
	sinkCtx, stopSink := context.WithCancel(context.Background())
	defer stopSink()
	sinkDone := make(chan struct{})
	go func() {
		defer close(sinkDone)
		_ = bus.Consume(sinkCtx, a.Bus, a.Pub, sinkQ, bus.ConsumeOptions{Prefetch: 5, Workers: 2},
			func(ctx context.Context, d bus.Delivery) error {
				if _, dup := sunk.LoadOrStore(d.MessageID, true); !dup {
					sunkN.Add(1)
				}
				return nil
			}, quiet)
	}()
	deadline := time.Now().Add(time.Minute)
	for sunkN.Load() < backlog && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sunkN.Load(); n < backlog {
		t.Errorf("a minute into the alarm the sink had handled %d of its %d messages: its consuming connection is blocked", n, backlog)
	}
	// A worker whose retry publish cannot get through gives up when its context ends,
	// and requeues the message, rather than wait for the alarm to end.
	if !logs.AwaitLine(time.Minute, "could not move failed message, requeueing", "context deadline exceeded") {
		t.Error("a minute into the alarm, no worker's retry publish had given up by its context")
	}
	if !logs.AwaitLine(time.Minute, "rabbitmq connection blocked", "low on memory") {
		t.Error(`no "rabbitmq connection blocked" log line (with the broker's reason) during the alarm`)
	}
	awaitMetric(t, base, `amqp_connection_blocked{connection="publish"} 1`)
	awaitMetric(t, base, `amqp_connection_blocked{connection="consume"} 0`)

	broker.Alarm(false)
	alarmOn = false
	if !logs.AwaitLine(time.Minute, "rabbitmq connection unblocked") {
		t.Error(`no "rabbitmq connection unblocked" log line after the alarm cleared`)
	}
	awaitMetric(t, base, `amqp_connection_blocked{connection="publish"} 0`)

	// Traffic resumes; then every confirmed order, and both held ones, has its follow-up.
	if !awaitFollowUps(len(followedUp()) + 20) {
		t.Errorf("traffic did not resume within 2 minutes of the alarm clearing (%d follow-ups)", len(followedUp()))
	}
	close(stopTraffic)
	confirmed := append(<-confirmedc, "held-1", "held-2")
	deadline = time.Now().Add(2 * time.Minute)
	var missing []string
	for {
		got := followedUp()
		missing = missing[:0]
		for _, corr := range confirmed {
			if !got[corr] {
				missing = append(missing, corr)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d orders never got their follow-up, e.g. %v", len(missing), len(confirmed), missing[:min(5, len(missing))])
	}

	// No worker is left stuck: the service's publisher takes a fresh publish, the sink's
	// consumer stops when told to, and so does the service.
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	if err := a.Pub.Publish(fctx, contracts.ExchangeEvents, "alarm.test.fresh", mustEnvelope(t)); err != nil {
		t.Errorf("a fresh publish after the alarm: %v", err)
	}
	stopSink()
	select {
	case <-sinkDone:
	case <-time.After(time.Minute):
		t.Error("the sink's consumer had not stopped a minute after its context was cancelled")
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); stopSvc() }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Minute):
		t.Error("the service had not stopped 2 minutes after SIGTERM")
	}
	t.Logf("%d orders placed, %d through the alarm's sink", len(confirmed), backlog)
}

func mustEnvelope(t *testing.T) (msg amqp.Publishing) {
	t.Helper()
	e, err := contracts.NewEnvelope(contracts.OrderConfirmed, "test", "fresh", "", contracts.Saga{OrderID: "fresh", SagaMode: contracts.ModeChoreography})
	if err != nil {
		t.Fatal(err)
	}
	msg, err = bus.Envelope(e, nil)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// awaitConns waits (a minute) until the broker's connections (name → state) satisfy ok.
func awaitConns(t *testing.T, broker *testenv.Broker, ok func(map[string]string) bool) map[string]string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		conns, err := broker.Connections()
		if err != nil {
			t.Fatal(err)
		}
		if ok(conns) {
			return conns
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker's connections never got there; they are %v", conns)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// awaitMetric waits (a minute) until the service's /metrics has the line want.
func awaitMetric(t *testing.T, base, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			last = string(b)
			for _, line := range strings.Split(last, "\n") {
				if line == want {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var have []string
	for _, line := range strings.Split(last, "\n") {
		if strings.HasPrefix(line, "amqp_") {
			have = append(have, line)
		}
	}
	t.Errorf("/metrics never had %q within a minute; it has %v", want, have)
}
