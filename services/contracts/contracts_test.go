package contracts

import (
	"errors"
	"testing"
)

func TestDecodeRefusesMalformedEnvelopes(t *testing.T) {
	for _, body := range []string{
		`{not json`,
		`{"eventType":"order.placed","data":{}}`,
		`{"eventId":"1","data":{}}`,
		`{"eventId":"1","eventType":"order.placed"}`,
		`{"eventId":"1","eventType":"order.placed","data":null}`,
		`{"eventId":"1","eventType":"order.placed","data":[]}`,
		`{"eventId":"1","eventType":"order.placed","data":"x"}`,
	} {
		if _, err := Decode([]byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: want ErrMalformed, got %v", body, err)
		}
	}
	env, err := NewEnvelope(OrderPlaced, "orders", "o-1", "", OrderPlacedData{Checkout: Checkout{Saga: Saga{OrderID: "o-1", SagaMode: ModeChoreography}}})
	if err != nil {
		t.Fatal(err)
	}
	var data OrderPlacedData
	if err := env.DecodeData(&data); err != nil || data.OrderID != "o-1" {
		t.Fatalf("round trip: %+v %v", data, err)
	}
	bad, _ := NewEnvelope(OrderPlaced, "orders", "o-1", "", map[string]string{"orderId": "o-1", "sagaMode": "sideways"})
	if err := bad.DecodeData(&data); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a payload that fails its Check must be malformed, got %v", err)
	}
	if Exchange(CmdPaymentsRefund) != ExchangeCommands || Exchange(PaymentRefunded) != ExchangeEvents {
		t.Fatal("commands go to shop.commands, events to shop.events")
	}
}
