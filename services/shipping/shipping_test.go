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
func start(t *testing.T) (testenv.Env, *testenv.Bus, <-chan amqp.Delivery) {
	t.Helper()
	env := testenv.ServiceEnv(t, "shipping", true)
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
			select {
			case d := <-out:
				t.Fatalf("%s: unexpected %s", tc.name, d.Type)
			case <-time.After(time.Second):
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
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: nothing emitted", tc.name)
		}
		resp, err := http.Get("http://" + env["HTTP_ADDR"] + "/shipments/" + order)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: GET shipment: %d", tc.name, resp.StatusCode)
		}
	}
}
