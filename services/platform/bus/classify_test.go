package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
)

// errDown stands for a dependency that is unreachable for a while (what pg.IsTransient
// reports in the services).
var errDown = errors.New("connect: connection refused")

// A transient failure is retried for as long as it lasts, well past the retries a
// poison message gets, and is handled once the dependency is back: it never reaches the
// DLQ. (Before, a database outage longer than the retry delays' sum dead-lettered every
// message in flight.)
func TestTransientFailureIsRetriedUntilTheDependencyIsBack(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	q := bus.Queue{Service: "flaky", Events: []string{contracts.OrderPlaced}, Retries: []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}}
	const outage = 8 // failed attempts: more than 1 + len(Retries)
	var attempts atomic.Int32
	handled := make(chan int, 1)
	h := func(ctx context.Context, d bus.Delivery) error {
		if n := attempts.Add(1); n <= outage {
			return fmt.Errorf("begin: %w", errDown)
		}
		handled <- d.Attempt
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	opts, subscribed := onSubscribed(bus.ConsumeOptions{Transient: func(err error) bool { return errors.Is(err, errDown) }})
	go func() { defer close(done); _ = bus.Consume(ctx, conn, pub, q, opts, h, quiet()) }()
	awaitSubscribed(t, subscribed)
	if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, "o1"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case attempt := <-handled:
		if attempt != outage+1 {
			t.Errorf("handled at attempt %d, want %d", attempt, outage+1)
		}
	case <-time.After(time.Minute):
		t.Fatalf("not handled after %d attempts: dead-lettered? %s holds %d", attempts.Load(), q.DLQ(), depth(t, conn, q.DLQ()))
	}
	if n := depth(t, conn, q.DLQ()); n != 0 {
		t.Fatalf("%s holds %d messages after a transient failure", q.DLQ(), n)
	}
	cancel()
	<-done
}

// A message that can never be handled (malformed, or a handler's permanent error) goes
// to the DLQ at its first failure: retrying it would only delay the DLQ entry.
func TestPermanentFailureIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	conn, _ := dial(t)
	pub := bus.NewPublisher(conn, quiet())
	q := bus.Queue{Service: "strict", Events: []string{contracts.OrderPlaced}, Retries: []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}}
	attempts := map[string]*atomic.Int32{"malformed": {}, "permanent": {}}
	h := func(ctx context.Context, d bus.Delivery) error {
		attempts[d.CorrelationID].Add(1)
		if d.CorrelationID == "malformed" {
			return fmt.Errorf("%w: no order id", contracts.ErrMalformed)
		}
		return bus.Permanent(errors.New("unknown currency"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	opts, subscribed := onSubscribed(bus.ConsumeOptions{Workers: 1})
	go func() { defer close(done); _ = bus.Consume(ctx, conn, pub, q, opts, h, quiet()) }()
	awaitSubscribed(t, subscribed)
	for corr := range attempts {
		if err := pub.PublishEnvelope(ctx, envelope(t, contracts.OrderPlaced, corr), nil); err != nil {
			t.Fatal(err)
		}
	}
	for range attempts {
		d := waitDLQ(t, conn, q.DLQ(), time.Minute)
		if bus.Attempt(d.Headers) != 2 || d.Headers["x-last-error"] == nil {
			t.Errorf("dead letter %s: attempt header %d, last error %v; want 2 and the error", d.CorrelationId, bus.Attempt(d.Headers), d.Headers["x-last-error"])
		}
	}
	for corr, n := range attempts {
		if got := n.Load(); got != 1 {
			t.Errorf("%s: handled %d times, want once", corr, got)
		}
	}
	cancel()
	<-done
}

func TestClassify(t *testing.T) {
	t.Parallel()
	down := func(err error) bool { return errors.Is(err, errDown) }
	for _, tc := range []struct {
		err  error
		want bus.Failure
	}{
		{errors.New("no saga row"), bus.FailPoison},
		{fmt.Errorf("handler panic: %v", "boom"), bus.FailPoison},
		{fmt.Errorf("decode: %w", contracts.ErrMalformed), bus.FailPermanent},
		{bus.Permanent(errors.New("x")), bus.FailPermanent},
		{fmt.Errorf("begin: %w", errDown), bus.FailTransient},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), bus.FailTransient},
	} {
		if got := bus.Classify(tc.err, down); got != tc.want {
			t.Errorf("Classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
