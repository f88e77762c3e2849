package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/testenv"
)

// start runs shipping in-process against its own database and vhost, and returns a
// publisher into that vhost and a channel of everything shipping emits.
func start(t *testing.T) (testenv.Env, *bus.Publisher, <-chan amqp.Delivery) {
	t.Helper()
	env := testenv.ServiceEnv(t, "shipping", true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, env.Get, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitReady(t, "http://"+env["HTTP_ADDR"])

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := bus.Dial(ctx, env["AMQP_URL"], "shipping-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{contracts.ShipmentScheduled, contracts.ShipmentFailed} {
		if err := ch.QueueBind(q.Name, k, contracts.ExchangeEvents, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	out, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return env, bus.NewPublisher(conn, log), out
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("service never became ready")
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
	env, pub, out := start(t)
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
		env2, err := contracts.NewEnvelope(tc.typ, "test", order, "", contracts.StockReservedData{Checkout: checkout(order, tc.mode, tc.country)})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.PublishEnvelope(context.Background(), env2, nil); err != nil {
			t.Fatal(err)
		}
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
