package control_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"microlab/services/platform/control"
)

// Every bad fault is refused with one line that says what is wrong, before anything
// is stored.
func TestFaultSpecValidate(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		spec control.FaultSpec
		want string // normalised String(), or the error's text
		err  bool
	}{
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "300ms±50ms"}, "latency=300ms±50ms", false},
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "0.3s+-50ms", On: "http"}, "latency=300ms±50ms on=http", false},
		{control.FaultSpec{Service: "catalog", Kind: "error_rate", Value: "1"}, "error_rate=1", false},
		{control.FaultSpec{Service: "orders", Kind: "duplicate_delivery"}, "duplicate_delivery=1", false},
		{control.FaultSpec{Service: "inventory", Kind: "down", For: "1h"}, "down", false},
		{control.FaultSpec{Service: "payments", Instance: "payments-2", Kind: "crash"}, "crash", false},
		{control.FaultSpec{Service: "catalog", Kind: "error_rate", Value: "1.5"}, "want a fraction from 0 to 1", true},
		{control.FaultSpec{Service: "catalog", Kind: "error_rate", Value: "NaN"}, "want a fraction from 0 to 1", true},
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "-1s"}, "bad latency", true},
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "100ms±1s"}, "jitter", true},
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "1s", For: "0s"}, "bad for=", true},
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "1s", For: "61m"}, "at most 1h", true},
		{control.FaultSpec{Service: "payments", Kind: "latency", Value: "1s", On: "disk"}, "want http, messages or both", true},
		{control.FaultSpec{Service: "payments", Kind: "down", Value: "3"}, "takes no value", true},
		{control.FaultSpec{Service: "payments", Kind: "meltdown"}, "unknown fault", true},
		{control.FaultSpec{Service: "billing", Kind: "down"}, "unknown service", true},
		{control.FaultSpec{Service: "payments", Instance: "orders-1", Kind: "down"}, "not an instance of payments", true},
		{control.FaultSpec{Service: "orders", Kind: "poison", Value: "0"}, "from 1 to 1000", true},
		{control.FaultSpec{Service: "payments", Kind: "poison", Value: "3"}, "poison=3", false},
		{control.FaultSpec{Service: "gateway", Kind: "poison"}, "poison: gateway consumes no messages; pick a service with a queue: orders, payments, inventory, shipping, notifications", true},
		{control.FaultSpec{Service: "users", Kind: "poison", Value: "2"}, "poison: users consumes no messages", true},
		{control.FaultSpec{Service: "catalog", Instance: "catalog-1", Kind: "poison"}, "poison: catalog consumes no messages", true},
		// Faults that could never fire where they are aimed.
		{control.FaultSpec{Service: "users", Kind: "crash_after_commit"}, "crash_after_commit: users consumes no messages", true},
		{control.FaultSpec{Service: "payments", Kind: "crash_after_commit"}, "crash_after_commit", false},
		{control.FaultSpec{Service: "catalog", Kind: "duplicate_delivery", Value: "2"}, "duplicate_delivery=2", false}, // product.price_changed
		{control.FaultSpec{Service: "gateway", Kind: "duplicate_delivery"}, "duplicate_delivery: gateway publishes no messages", true},
		{control.FaultSpec{Service: "users", Kind: "duplicate_delivery", Value: "2"}, "duplicate_delivery=2", false},
		{control.FaultSpec{Service: "gateway", Kind: "latency", Value: "1s", On: "messages"}, "gateway consumes no messages; use on=http", true},
		{control.FaultSpec{Service: "gateway", Kind: "latency", Value: "1s"}, "latency=1s", false},
	} {
		f, err := tc.spec.Validate(now)
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%+v: want one-line error with %q, got %v", tc.spec, tc.want, err)
			}
			continue
		}
		if err != nil || f.String() != tc.want {
			t.Errorf("%+v: got %q, %v; want %q", tc.spec, f.String(), err, tc.want)
		}
	}
	f, _ := control.FaultSpec{Service: "payments", Kind: "latency", Value: "1s"}.Validate(now)
	if f.Expires.Sub(now) != control.DefaultFaultFor {
		t.Errorf("default expiry %s, want %s", f.Expires.Sub(now), control.DefaultFaultFor)
	}
	spec, err := control.ParseFaultArgs("payments", []string{"latency=300ms", "for=5m", "on=messages"})
	if err != nil || spec != (control.FaultSpec{Service: "payments", Kind: "latency", Value: "300ms", For: "5m", On: "messages"}) {
		t.Errorf("ParseFaultArgs: %+v %v", spec, err)
	}
	if _, err := control.ParseFaultArgs("payments", []string{"down", "crash"}); err == nil {
		t.Error("two faults in one command were accepted")
	}
}

// Faults are stored with their expiry, show in the snapshot every instance reads, fire
// once when one-shot, and are cleared by target or by reset; each change is on the
// timeline.
func TestFaultLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := openStore(t, ctx)
	plane := &control.Plane{Store: store}

	if _, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "catalog", Kind: "error_rate", Value: "2"}, "test"); !control.IsInvalid(err) {
		t.Fatalf("a bad fault: %v, want an InvalidError", err)
	}
	lat, ch, err := plane.AddFault(ctx, control.FaultSpec{Service: "payments", Kind: "latency", Value: "300ms", For: "5m"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Key != "fault payments" || !strings.Contains(ch.New, "latency=300ms for 5m0s") {
		t.Errorf("timeline entry %+v", ch)
	}
	crash, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "payments", Instance: "payments-2", Kind: "crash"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	short, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "orders", Kind: "down", For: "1s"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.FaultsFor("payments", "payments-1", time.Now()); len(got) != 1 || got[0].ID != lat.ID {
		t.Errorf("payments-1 sees %+v, want the service's latency only", got)
	}
	if got := s.FaultsFor("payments", "payments-2", time.Now()); len(got) != 2 {
		t.Errorf("payments-2 sees %+v, want latency and its own crash", got)
	}
	// A fault never outlives its expiry.
	if got := s.FaultsFor("orders", "orders-1", short.Expires.Add(time.Millisecond)); len(got) != 0 {
		t.Errorf("an expired fault is still in force: %+v", got)
	}
	for time.Now().Before(short.Expires) {
		time.Sleep(50 * time.Millisecond) // the subject is the expiry itself
	}
	if s, err = store.Load(ctx); err != nil || len(s.FaultsFor("orders", "orders-1", time.Now())) != 0 {
		t.Errorf("after its expiry the store still serves the fault: %+v %v", s.Faults, err)
	}

	// A one-shot fault fires once.
	if err := plane.Claim(ctx, crash, "payments-2"); err != nil {
		t.Fatal(err)
	}
	if err := plane.Claim(ctx, crash, "payments-2"); !errors.Is(err, control.ErrFaultGone) {
		t.Errorf("a crash fault claimed twice: %v", err)
	}
	chs, err := plane.ClearFaults(ctx, "payments", "test")
	if err != nil || len(chs) != 1 || chs[0].New != "cleared" {
		t.Fatalf("clear payments: %+v %v", chs, err)
	}
	if _, err := plane.Set(ctx, control.SagaMode, "orchestration", "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := plane.AddFault(ctx, control.FaultSpec{Service: "inventory", Kind: "down"}, "test"); err != nil {
		t.Fatal(err)
	}
	chs, err = plane.Reset(ctx, "test")
	if err != nil || len(chs) != 2 {
		t.Fatalf("reset: %+v %v; want the saga mode back and the fault cleared", chs, err)
	}
	s, err = store.Load(ctx)
	if err != nil || s.SagaMode() != "choreography" || len(s.Faults) != 0 {
		t.Fatalf("after reset: mode %s, faults %+v (%v)", s.SagaMode(), s.Faults, err)
	}
	timeline, err := store.Changes(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range timeline {
		keys = append(keys, c.Key+": "+c.Old+" → "+c.New)
	}
	joined := strings.Join(keys, "\n")
	for _, want := range []string{"fault payments-2: crash → fired in payments-2", "fault payments: latency=300ms → cleared",
		"saga.mode: orchestration → choreography", "fault inventory: down → cleared"} {
		if !strings.Contains(joined, want) {
			t.Errorf("timeline lacks %q:\n%s", want, joined)
		}
	}
}
