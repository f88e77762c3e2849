package bus_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// A memory alarm blocks the publishing connection: the broker stops reading it, so no
// confirm, no close-ok, no channel-open-ok comes back until the alarm clears. Every call
// on it must still return by its caller's context, concurrent ones included (none may
// queue behind another's stuck close), and the blocked state is logged as it begins and
// ends. Once the alarm clears, publishing works again on the same Publisher, and a
// connection closed during an alarm does not wait for the alarm to end.
//
// Every wait below is for evidence, with a deadline of a minute: the calls have 2-second
// contexts, and the alarm stays on until the test clears it, so a call that returns at
// all before the alarm is cleared has honoured its context.
func TestBlockedConnectionHonoursContexts(t *testing.T) {
	t.Parallel()
	broker := testenv.PrivateBroker(t)
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := bus.Dial(ctx, broker.URL(), "alarm-unit/publish", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pub := bus.NewPublisher(conn, log)
	// The channel is open, the exchanges declared and confirms on before the alarm: what
	// follows is about a publisher that was working when the broker blocked it.
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, "warm-up"), nil); err != nil {
		t.Fatal(err)
	}

	broker.Alarm(true)
	alarmOn := true
	defer func() {
		if alarmOn { // the unfixed code's stuck calls return once the broker reads again
			broker.Alarm(false)
		}
	}()
	// The first publish gets the connection blocked (RabbitMQ blocks a connection at its
	// first publish during an alarm); the others start while it is stuck on its confirm.
	results := make(chan error, 3)
	first := make(chan struct{})
	for i := range 3 {
		go func() {
			if i > 0 {
				<-first
			}
			pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			results <- pub.PublishEnvelope(pctx, envelope(t, contracts.OrderPlaced, "during-alarm"), nil)
		}()
	}
	if !logs.AwaitLine(time.Minute, "rabbitmq connection blocked", "low on memory") {
		t.Error(`no "rabbitmq connection blocked" log line with the broker's reason during the alarm`)
	}
	close(first)
	within := time.After(time.Minute)
wait:
	for returned := 0; returned < 3; returned++ {
		select {
		case err := <-results:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("publish during the alarm returned %v, want its context's deadline", err)
			}
		case <-within:
			t.Errorf("%d of 3 publishes with a 2s context still had not returned a minute into the alarm", 3-returned)
			break wait
		}
	}
	// Opening a channel waits for the broker's open-ok, which a blocked connection does
	// not read: it too is bounded by its context.
	opened := make(chan error, 1)
	go func() {
		octx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ch, err := conn.Channel(octx)
		if err == nil {
			_ = ch.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("opening a channel on the blocked connection returned %v, want its context's deadline", err)
		}
	case <-time.After(time.Minute):
		t.Error("opening a channel with a 2s context had not returned a minute into the alarm")
	}

	broker.Alarm(false)
	alarmOn = false
	if !logs.AwaitLine(time.Minute, "rabbitmq connection unblocked") {
		t.Error(`no "rabbitmq connection unblocked" log line after the alarm cleared`)
	}
	actx, acancel := context.WithTimeout(context.Background(), time.Minute)
	defer acancel()
	if err := pub.PublishEnvelope(actx, envelope(t, contracts.OrderPlaced, "after-alarm"), nil); err != nil {
		t.Fatalf("publish after the alarm cleared: %v", err)
	}

	// Closing waits for the broker's close-ok; during an alarm it must not wait for the
	// alarm to end (a service shutting down would hang).
	broker.Alarm(true)
	alarmOn = true
	go func() {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = pub.PublishEnvelope(pctx, envelope(t, contracts.OrderPlaced, "blocks-again"), nil)
	}()
	awaitConnState(t, broker, "alarm-unit/publish", "blocked")
	closed := make(chan error, 1)
	go func() { closed <- conn.Close() }()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Error("closing the blocked connection had not returned a minute into the alarm")
	}
}

// awaitConnState waits until the broker reports the connection named name in state.
func awaitConnState(t *testing.T, broker *testenv.Broker, name, state string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		conns, err := broker.Connections()
		if err != nil {
			t.Fatal(err)
		}
		if conns[name] == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection %q is not %s a minute on: the broker's connections are %v", name, state, conns)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
