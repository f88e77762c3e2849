package contracts

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode holds Decode, the first thing every consumer does with a message body, to
// its contract whatever the bytes (a consumer's queue takes anything anyone publishes):
// it never panics, and it returns either
//   - an error wrapping ErrMalformed (so the consumer dead-letters the message instead
//     of treating it as a failure worth retrying forever) and a zero Envelope, or
//   - an envelope with the fields consumers rely on set (eventId, eventType, data) that
//     survives what a relay does to it: encoded as the bus encodes it (json.Marshal) and
//     decoded again it is the same envelope, and encoding that gives the same bytes.
//
// Its data is then decoded as the payload its type names, as bus.Typed does: that too
// never panics, fails only with ErrMalformed, and a payload it accepts round-trips.
//
// The seed corpus is in testdata/fuzz/FuzzDecode: envelopes as NewEnvelope builds them,
// the bodies other tests send, and odd JSON (duplicate and case-folded keys, nulls,
// unicode, huge numbers, bad times).
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := Decode(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			if !reflect.DeepEqual(e, Envelope{}) {
				t.Fatalf("an error came with a non-zero envelope: %+v", e)
			}
			return
		}
		if e.EventID == "" || e.EventType == "" || len(e.Data) == 0 || !json.Valid(e.Data) {
			t.Fatalf("accepted an envelope without its required fields: %+v", e)
		}

		wire, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("a decoded envelope does not encode: %v (%+v)", err, e)
		}
		again, err := Decode(wire)
		if err != nil {
			t.Fatalf("a re-encoded envelope does not decode: %v\n%s", err, wire)
		}
		sameEnvelope(t, e, again)
		if wire2, err := json.Marshal(again); err != nil || !bytes.Equal(wire, wire2) {
			t.Fatalf("encoding is not stable:\n%s\n%s (%v)", wire, wire2, err)
		}

		checkPayload(t, e)
	})
}

// sameEnvelope compares an envelope with what it became after json.Marshal and Decode:
// the same fields, the same instant in the same offset (the location may go from a zero
// offset to UTC: both are written "Z"), and the same data once normalized the way
// json.Marshal writes a RawMessage (compacted, <, > and & escaped).
func sameEnvelope(t *testing.T, want, got Envelope) {
	t.Helper()
	_, wantOff := want.OccurredAt.Zone()
	_, gotOff := got.OccurredAt.Zone()
	var compact, normal bytes.Buffer
	if err := json.Compact(&compact, want.Data); err != nil {
		t.Fatalf("data is not JSON: %v", err)
	}
	json.HTMLEscape(&normal, compact.Bytes())
	switch {
	case got.EventID != want.EventID, got.EventType != want.EventType, got.Version != want.Version,
		got.Source != want.Source, got.CorrelationID != want.CorrelationID, got.CausationID != want.CausationID:
		t.Fatalf("fields changed in a round trip:\n%+v\n%+v", want, got)
	case !got.OccurredAt.Equal(want.OccurredAt) || gotOff != wantOff:
		t.Fatalf("occurredAt changed in a round trip: %v -> %v", want.OccurredAt, got.OccurredAt)
	case !bytes.Equal(got.Data, normal.Bytes()):
		t.Fatalf("data changed in a round trip:\n%s\n%s", want.Data, got.Data)
	}
}

// payloads maps every message type to a new value of its payload type, as the services'
// bus.Typed handlers decode them.
var payloads = map[string]func() any{
	UserRegistered:       func() any { return new(UserRegisteredData) },
	OrderPlaced:          func() any { return new(OrderPlacedData) },
	PaymentAuthorized:    func() any { return new(PaymentAuthorizedData) },
	PaymentDeclined:      func() any { return new(PaymentDeclinedData) },
	PaymentRefunded:      func() any { return new(PaymentRefundedData) },
	StockReserved:        func() any { return new(StockReservedData) },
	StockRejected:        func() any { return new(StockRejectedData) },
	StockReleased:        func() any { return new(StockReleasedData) },
	ShipmentScheduled:    func() any { return new(ShipmentScheduledData) },
	ShipmentFailed:       func() any { return new(ShipmentFailedData) },
	OrderConfirmed:       func() any { return new(OrderConfirmedData) },
	OrderCancelled:       func() any { return new(OrderCancelledData) },
	NotificationSent:     func() any { return new(NotificationSentData) },
	ProductPriceChanged:  func() any { return new(ProductPriceChangedData) },
	CmdPaymentsAuthorize: func() any { return new(PaymentsAuthorizeData) },
	CmdPaymentsRefund:    func() any { return new(PaymentRefundData) },
	CmdInventoryReserve:  func() any { return new(InventoryReserveData) },
	CmdInventoryRelease:  func() any { return new(InventoryReleaseData) },
	CmdShippingSchedule:  func() any { return new(ShippingScheduleData) },
}

// checkPayload decodes e's data as its type's payload (an unknown type as the richest
// one, order.placed): an error wraps ErrMalformed; a success encodes and decodes again
// to an equal value that still passes its Check.
func checkPayload(t *testing.T, e Envelope) {
	t.Helper()
	newPayload, ok := payloads[e.EventType]
	if !ok {
		newPayload = payloads[OrderPlaced]
	}
	v := newPayload()
	if err := e.DecodeData(v); err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("DecodeData error does not wrap ErrMalformed: %v", err)
		}
		return
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("a decoded %s payload does not encode: %v", e.EventType, err)
	}
	w := newPayload()
	if err := (Envelope{EventType: e.EventType, Data: raw}).DecodeData(w); err != nil {
		t.Fatalf("a re-encoded %s payload does not decode: %v\n%s", e.EventType, err, raw)
	}
	if !reflect.DeepEqual(v, w) {
		t.Fatalf("%s payload changed in a round trip:\n%+v\n%+v", e.EventType, v, w)
	}
}

// TestPayloadsCoverEveryType keeps FuzzDecode's table complete as types are added.
func TestPayloadsCoverEveryType(t *testing.T) {
	for _, typ := range append(append([]string(nil), Events...), Commands...) {
		if _, ok := payloads[typ]; !ok {
			t.Errorf("FuzzDecode has no payload type for %s", typ)
		}
	}
}
