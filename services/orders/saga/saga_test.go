package saga

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"microlab/services/contracts"
)

// situations are the saga values worth distinguishing: every state, and the compensating
// state with each subset of replies still missing.
func situations() map[string]Saga {
	return map[string]Saga{
		"authorizing":                {State: Authorizing},
		"reserving":                  {State: Reserving},
		"scheduling":                 {State: Scheduling},
		"refunding":                  {State: Refunding, Reason: contracts.ReasonOutOfStock, Awaiting: []string{contracts.PaymentRefunded}},
		"compensating(both)":         {State: Compensating, Reason: contracts.ReasonShippingFailed, Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
		"compensating(released)":     {State: Compensating, Reason: contracts.ReasonShippingFailed, Awaiting: []string{contracts.PaymentRefunded}},
		"compensating(refunded)":     {State: Compensating, Reason: contracts.ReasonShippingFailed, Awaiting: []string{contracts.StockReleased}},
		"confirmed":                  {State: Confirmed},
		"cancelled":                  {State: Cancelled, Reason: contracts.ReasonPaymentDeclined},
		"refunding(timeout)":         {State: Refunding, Reason: contracts.ReasonTimeout, Awaiting: []string{contracts.PaymentRefunded}},
		"compensating(timeout,both)": {State: Compensating, Reason: contracts.ReasonTimeout, Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
	}
}

func refund(reason string) Command { return Command{Type: contracts.CmdPaymentsRefund, Reason: reason} }
func release(reason string) Command {
	return Command{Type: contracts.CmdInventoryRelease, Reason: reason}
}

// TestTransitionExhaustive checks every (situation, message type) pair: the pairs in the
// table move the saga; every other pair is ignored and changes nothing.
func TestTransitionExhaustive(t *testing.T) {
	t.Parallel()
	type key struct{ situation, event string }
	moves := map[key]Result{
		{"authorizing", contracts.PaymentAuthorized}: {Saga: Saga{State: Reserving},
			Commands: []Command{{Type: contracts.CmdInventoryReserve}}},
		{"authorizing", contracts.PaymentDeclined}: {Saga: Saga{State: Cancelled, Reason: contracts.ReasonPaymentDeclined}, Ended: true},
		{"reserving", contracts.StockReserved}: {Saga: Saga{State: Scheduling},
			Commands: []Command{{Type: contracts.CmdShippingSchedule}}},
		{"reserving", contracts.StockRejected}: {Saga: Saga{State: Refunding, Reason: contracts.ReasonOutOfStock,
			Awaiting: []string{contracts.PaymentRefunded}}, Commands: []Command{refund(contracts.ReasonOutOfStock)}},
		{"scheduling", contracts.ShipmentScheduled}: {Saga: Saga{State: Confirmed}, Ended: true},
		{"scheduling", contracts.ShipmentFailed}: {Saga: Saga{State: Compensating, Reason: contracts.ReasonShippingFailed,
			Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
			Commands: []Command{release(contracts.ReasonShippingFailed), refund(contracts.ReasonShippingFailed)}},
		{"refunding", contracts.PaymentRefunded}:          {Saga: Saga{State: Cancelled, Reason: contracts.ReasonOutOfStock}, Ended: true},
		{"refunding(timeout)", contracts.PaymentRefunded}: {Saga: Saga{State: Cancelled, Reason: contracts.ReasonTimeout}, Ended: true},
		// Cancelled only once BOTH compensations are confirmed, in either order.
		{"compensating(both)", contracts.StockReleased}: {Saga: Saga{State: Compensating, Reason: contracts.ReasonShippingFailed,
			Awaiting: []string{contracts.PaymentRefunded}}},
		{"compensating(both)", contracts.PaymentRefunded}: {Saga: Saga{State: Compensating, Reason: contracts.ReasonShippingFailed,
			Awaiting: []string{contracts.StockReleased}}},
		{"compensating(released)", contracts.PaymentRefunded}: {Saga: Saga{State: Cancelled, Reason: contracts.ReasonShippingFailed}, Ended: true},
		{"compensating(refunded)", contracts.StockReleased}:   {Saga: Saga{State: Cancelled, Reason: contracts.ReasonShippingFailed}, Ended: true},
		{"compensating(timeout,both)", contracts.StockReleased}: {Saga: Saga{State: Compensating, Reason: contracts.ReasonTimeout,
			Awaiting: []string{contracts.PaymentRefunded}}},
		{"compensating(timeout,both)", contracts.PaymentRefunded}: {Saga: Saga{State: Compensating, Reason: contracts.ReasonTimeout,
			Awaiting: []string{contracts.StockReleased}}},
	}
	messages := append(slices.Clone(contracts.Events), contracts.Commands...)
	messages = append(messages, "", "no.such.event")
	used := map[key]bool{}
	for name, s := range situations() {
		for _, ev := range messages {
			k := key{name, ev}
			t.Run(fmt.Sprintf("%s+%s", name, ev), func(t *testing.T) {
				in := clone(s)
				got := Transition(s, ev)
				if !reflect.DeepEqual(s, in) {
					t.Fatalf("Transition modified its input: %+v, was %+v", s, in)
				}
				want, ok := moves[k]
				if !ok {
					want = Result{Saga: s, Ignored: true}
				}
				used[k] = true
				if !equal(got, want) {
					t.Fatalf("Transition(%+v, %q)\n got %+v\nwant %+v", s, ev, got, want)
				}
			})
		}
	}
	for k := range moves {
		if !used[k] {
			t.Errorf("table entry %v was never exercised", k)
		}
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]Result{
		// A forward step without a reply is compensated as if it had failed.
		"authorizing": {Saga: Saga{State: Refunding, Reason: contracts.ReasonTimeout, Awaiting: []string{contracts.PaymentRefunded}},
			Commands: []Command{refund(contracts.ReasonTimeout)}},
		"reserving": {Saga: Saga{State: Compensating, Reason: contracts.ReasonTimeout,
			Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
			Commands: []Command{release(contracts.ReasonTimeout), refund(contracts.ReasonTimeout)}},
		"scheduling": {Saga: Saga{State: Compensating, Reason: contracts.ReasonTimeout,
			Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
			Commands: []Command{release(contracts.ReasonTimeout), refund(contracts.ReasonTimeout)}},
		// A compensation without a reply is sent again, for what is still missing only.
		"refunding": {Saga: Saga{State: Refunding, Reason: contracts.ReasonOutOfStock, Awaiting: []string{contracts.PaymentRefunded}},
			Commands: []Command{refund(contracts.ReasonOutOfStock)}},
		"refunding(timeout)": {Saga: Saga{State: Refunding, Reason: contracts.ReasonTimeout, Awaiting: []string{contracts.PaymentRefunded}},
			Commands: []Command{refund(contracts.ReasonTimeout)}},
		"compensating(both)": {Saga: Saga{State: Compensating, Reason: contracts.ReasonShippingFailed,
			Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
			Commands: []Command{release(contracts.ReasonShippingFailed), refund(contracts.ReasonShippingFailed)}},
		"compensating(released)": {Saga: Saga{State: Compensating, Reason: contracts.ReasonShippingFailed,
			Awaiting: []string{contracts.PaymentRefunded}}, Commands: []Command{refund(contracts.ReasonShippingFailed)}},
		"compensating(refunded)": {Saga: Saga{State: Compensating, Reason: contracts.ReasonShippingFailed,
			Awaiting: []string{contracts.StockReleased}}, Commands: []Command{release(contracts.ReasonShippingFailed)}},
		"compensating(timeout,both)": {Saga: Saga{State: Compensating, Reason: contracts.ReasonTimeout,
			Awaiting: []string{contracts.StockReleased, contracts.PaymentRefunded}},
			Commands: []Command{release(contracts.ReasonTimeout), refund(contracts.ReasonTimeout)}},
		// Final states wait for nothing.
		"confirmed": {Saga: Saga{State: Confirmed}, Ignored: true},
		"cancelled": {Saga: Saga{State: Cancelled, Reason: contracts.ReasonPaymentDeclined}, Ignored: true},
	} {
		t.Run(name, func(t *testing.T) {
			s, ok := situations()[name]
			if !ok {
				t.Fatalf("no situation %q", name)
			}
			in := clone(s)
			got := Timeout(s)
			if !reflect.DeepEqual(s, in) {
				t.Fatalf("Timeout modified its input")
			}
			if !equal(got, want) {
				t.Fatalf("Timeout(%+v)\n got %+v\nwant %+v", s, got, want)
			}
		})
	}
	if got := len(situations()); got != 11 {
		t.Fatalf("TestTimeout covers 11 situations, there are %d", got)
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	want := Result{Saga: Saga{State: Authorizing}, Commands: []Command{{Type: contracts.CmdPaymentsAuthorize}}}
	if got := Start(); !equal(got, want) {
		t.Fatalf("Start() = %+v, want %+v", got, want)
	}
}

// TestEveryPathEnds walks every sequence of replies and timeouts (bounded depth) from
// Start: final states are absorbing, "Ended" is reported exactly once, on entering one,
// every non-final state has a way forward on timeout, and a cancelled saga has a reason.
func TestEveryPathEnds(t *testing.T) {
	t.Parallel()
	inputs := append(slices.Clone(contracts.Events), "timeout")
	var walk func(s Saga, depth int, path []string)
	walk = func(s Saga, depth int, path []string) {
		if depth == 0 {
			return
		}
		for _, in := range inputs {
			var r Result
			if in == "timeout" {
				r = Timeout(s)
			} else {
				r = Transition(s, in)
			}
			p := append(slices.Clone(path), in)
			switch {
			case s.State.Final() && !r.Ignored:
				t.Fatalf("%v: a final saga moved: %+v", p, r)
			case r.Ended != (!s.State.Final() && r.Saga.State.Final()):
				t.Fatalf("%v: Ended=%v for %s -> %s", p, r.Ended, s.State, r.Saga.State)
			case r.Saga.State == Cancelled && r.Saga.Reason == "":
				t.Fatalf("%v: cancelled without a reason", p)
			case in == "timeout" && !s.State.Final() && len(r.Commands) == 0 && !r.Ended:
				t.Fatalf("%v: timeout in %s does nothing", p, s.State)
			case (r.Saga.State == Refunding || r.Saga.State == Compensating) && len(r.Saga.Awaiting) == 0:
				t.Fatalf("%v: compensating with nothing awaited", p)
			}
			if !r.Ignored {
				walk(r.Saga, depth-1, p)
			}
		}
	}
	walk(Start().Saga, 6, nil)
}

func TestFinal(t *testing.T) {
	t.Parallel()
	for _, s := range States() {
		if want := s == Confirmed || s == Cancelled; s.Final() != want {
			t.Errorf("%s.Final() = %v", s, s.Final())
		}
	}
}

func clone(s Saga) Saga {
	s.Awaiting = slices.Clone(s.Awaiting)
	return s
}

// equal compares results treating nil and empty slices alike.
func equal(a, b Result) bool {
	return a.Saga.State == b.Saga.State && a.Saga.Reason == b.Saga.Reason &&
		slices.Equal(a.Saga.Awaiting, b.Saga.Awaiting) && slices.Equal(a.Commands, b.Commands) &&
		a.Ignored == b.Ignored && a.Ended == b.Ended
}
