package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"microlab/services/platform/app"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// A fault a diagnosis holds hidden acts as any other on a delivery, but leaves no
// lab.fault event on the service's span (an event there, whatever it said, would say
// where the fault is) and its error names neither its kind nor its value; the same
// fault, not hidden, is on the span as before.
func TestHiddenFaultLeavesNoTraceOnTheSpan(t *testing.T) {
	t.Parallel()
	for _, hidden := range []bool{false, true} {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		faults := []control.Fault{
			{ID: 7, Service: "payments", Kind: control.FaultLatency, Value: "20ms", On: control.OnMessages, Hidden: hidden},
			{ID: 8, Service: "payments", Kind: control.FaultErrorRate, Value: "1", On: control.OnMessages, Hidden: hidden},
		}
		mw := app.FaultMiddleware(app.Faults{Current: func() []control.Fault { return faults }})
		ran := false
		h := mw(func(context.Context, bus.Delivery) error { ran = true; return nil })
		ctx, span := tp.Tracer("test").Start(context.Background(), "process order.placed")
		start := time.Now()
		err := h(ctx, bus.Delivery{})
		span.End()
		if ran || err == nil || time.Since(start) < 20*time.Millisecond {
			t.Fatalf("hidden=%v: the faults did not act: ran %v, err %v, after %s", hidden, ran, err, time.Since(start))
		}
		var events []string
		for _, s := range rec.Ended() {
			for _, e := range s.Events() {
				events = append(events, e.Name)
			}
		}
		if hidden {
			if len(events) != 0 {
				t.Errorf("a hidden fault left events on the span: %v", events)
			}
			if msg := err.Error(); strings.Contains(msg, "error_rate") || strings.Contains(msg, "=1") || !strings.Contains(msg, "hidden") {
				t.Errorf("a hidden fault's error says what it is: %q", msg)
			}
			continue
		}
		if len(events) != 2 || events[0] != "lab.fault" || !strings.Contains(err.Error(), "error_rate=1") {
			t.Errorf("a fault not hidden: events %v, error %v", events, err)
		}
	}
}

// On a running service, a hidden fault acts (HTTP 500) but shows in neither
// lab_fault_active nor the service's log, nor names itself in the answer; revealed, it
// shows in both.
func TestHiddenFaultInAService(t *testing.T) {
	t.Parallel()
	f := startFaulty(t)
	fl := f.add(control.FaultSpec{Kind: control.FaultErrorRate, Value: "1", On: control.OnHTTP, Hidden: true})
	deadline := time.Now().Add(time.Minute)
	for {
		code, body, _ := f.get("/ping")
		if code == 500 {
			if strings.Contains(body.Error.Message, "error_rate") {
				t.Errorf("a hidden fault's answer says what it is: %+v", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hidden fault never acted: %d", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // the fault watcher's round, which logs faults that start acting
	f.scrape("no lab_fault_active while hidden", func(m string) bool { return !activeLine(control.FaultErrorRate)(m) })
	if logs := f.logs.String(); strings.Contains(logs, "lab fault active") {
		t.Errorf("the service logged the hidden fault:\n%s", logs)
	}
	if _, err := f.plane.RevealFaults(context.Background(), []int64{fl.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	f.active(control.FaultErrorRate)
	if code, body, _ := f.get("/ping"); code != 500 || !strings.Contains(body.Error.Message, "error_rate=1") {
		t.Errorf("revealed: %d %+v", code, body)
	}
	f.clear()
}
