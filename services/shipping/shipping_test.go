package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/testenv"
)

// start runs shipping in-process against its own database and vhost, and returns its
// environment, the test's bus, and a tap of everything shipping emits.
//
// It runs ONE worker: messages are then handled in the order they were published, and
// (through the outbox, relayed in row order) what they emit arrives in that order too.
// So when a message published later has been answered, an earlier one that was to
// emit nothing has been handled, and anything it did emit is already in the tap.
func start(t *testing.T) (testenv.Env, *testenv.Bus, <-chan amqp.Delivery) {
	t.Helper()
	env := testenv.ServiceEnv(t, "shipping", true)
	env["AMQP_WORKERS"] = "1"
	testenv.Run(t, run, env, nil)
	b := testenv.Dial(t, env["AMQP_URL"])
	return env, b, b.Tap(t, contracts.ExchangeEvents, contracts.ShipmentScheduled, contracts.ShipmentFailed)
}

func checkout(order, mode, country string) contracts.Checkout {
	return contracts.Checkout{
		Saga:            contracts.Saga{OrderID: order, SagaMode: mode},
		Items:           []contracts.Item{{SKU: "LAB-MUG", Qty: 1}},
		ShippingAddress: contracts.Address{Name: "A", Street: "S", City: "C", PostalCode: "P", Country: country},
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	env, b, out := start(t)
	for _, tc := range []struct {
		name, typ, mode, country string
		want                     string // emitted type; "" = nothing
	}{
		{"choreography cue", contracts.StockReserved, contracts.ModeChoreography, "DE", contracts.ShipmentScheduled},
		{"orchestration command", contracts.CmdShippingSchedule, contracts.ModeOrchestration, "FR", contracts.ShipmentScheduled},
		{"unserved country", contracts.CmdShippingSchedule, contracts.ModeOrchestration, "XX", contracts.ShipmentFailed},
		{"cue ignored in orchestration", contracts.StockReserved, contracts.ModeOrchestration, "DE", ""},
	} {
		order := testenv.Name("o")
		env2 := b.Publish(t, tc.typ, order, contracts.StockReservedData{Checkout: checkout(order, tc.mode, tc.country)})
		if tc.want == "" {
			// A sentinel behind it: the first thing emitted after this must be the
			// sentinel's answer (see start).
			sentinel := testenv.Name("sync")
			sent := b.Publish(t, contracts.CmdShippingSchedule, sentinel,
				contracts.ShippingScheduleData{Checkout: checkout(sentinel, contracts.ModeOrchestration, "DE")})
			select {
			case d := <-out:
				var e contracts.Envelope
				if err := json.Unmarshal(d.Body, &e); err != nil {
					t.Fatal(err)
				}
				if e.CausationID != sent.EventID {
					t.Fatalf("%s: unexpected %s (corr=%s cause=%s)", tc.name, d.Type, e.CorrelationID, e.CausationID)
				}
			case <-time.After(time.Minute):
				t.Fatalf("%s: the sentinel behind it was never answered", tc.name)
			}
			if code := shipmentStatus(t, env, order); code != http.StatusNotFound {
				t.Fatalf("%s: GET shipment: %d, want 404 (nothing scheduled)", tc.name, code)
			}
			continue
		}
		select {
		case d := <-out:
			var e contracts.Envelope
			if err := json.Unmarshal(d.Body, &e); err != nil {
				t.Fatal(err)
			}
			if d.Type != tc.want || e.CorrelationID != order || e.CausationID != env2.EventID || d.MessageId != e.EventID {
				t.Fatalf("%s: got %s corr=%s cause=%s", tc.name, d.Type, e.CorrelationID, e.CausationID)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s: nothing emitted", tc.name)
		}
		if code := shipmentStatus(t, env, order); code != http.StatusOK {
			t.Fatalf("%s: GET shipment: %d", tc.name, code)
		}
	}
}

// shipmentStatus is the status code of GET /shipments/{order}.
func shipmentStatus(t *testing.T, env testenv.Env, order string) int {
	t.Helper()
	resp, err := http.Get("http://" + env["HTTP_ADDR"] + "/shipments/" + order)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// A schedule request that arrives after the order was cancelled (an orchestrator that
// timed out and compensated) must not ship: it is answered with shipment.failed.
func TestLateScheduleAfterCancellation(t *testing.T) {
	t.Parallel()
	env, b, out := start(t)
	order := testenv.Name("o")
	b.Publish(t, contracts.OrderCancelled, order, contracts.OrderCancelledData{
		Saga: contracts.Saga{OrderID: order, SagaMode: contracts.ModeOrchestration}, UserID: "u", Reason: contracts.ReasonTimeout})
	// Wait for the tombstone, so the schedule really is the later of the two.
	deadline := time.Now().Add(time.Minute)
	for {
		if shipmentStatus(t, env, order) == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cancellation never recorded")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Publish(t, contracts.CmdShippingSchedule, order, contracts.ShippingScheduleData{Checkout: checkout(order, contracts.ModeOrchestration, "DE")})
	select {
	case d := <-out:
		if d.Type != contracts.ShipmentFailed {
			t.Fatalf("got %s, want shipment.failed", d.Type)
		}
	case <-time.After(time.Minute):
		t.Fatal("no answer to the late schedule")
	}
	var sh Shipment
	resp, err := http.Get("http://" + env["HTTP_ADDR"] + "/shipments/" + order)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&sh); err != nil || sh.Status != "cancelled" {
		t.Fatalf("shipment %+v (%v), want cancelled", sh, err)
	}
}
