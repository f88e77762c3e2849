// Package contracts is the only vocabulary the shop's services share: the message
// envelope, the event and command types (which are also the AMQP routing keys), the
// payloads, and the names of exchanges. Services never import each other; if two services
// need to agree on something, it lives here.
package contracts

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Exchanges. shop.events is a topic exchange keyed by event type; shop.commands is a
// direct exchange keyed by command type (orchestration mode only); shop.dlx receives
// messages a service gave up on, routed by the service's DLQ name; lab.control is a
// fanout every instance listens on for setting changes.
const (
	ExchangeEvents   = "shop.events"
	ExchangeCommands = "shop.commands"
	ExchangeDLX      = "shop.dlx"
	ExchangeControl  = "lab.control"
)

// Event types. Each is also the routing key on shop.events.
const (
	UserRegistered    = "user.registered"
	OrderPlaced       = "order.placed"
	PaymentAuthorized = "payment.authorized"
	PaymentDeclined   = "payment.declined"
	PaymentRefunded   = "payment.refunded"
	StockReserved     = "stock.reserved"
	StockRejected     = "stock.rejected"
	StockReleased     = "stock.released"
	ShipmentScheduled = "shipment.scheduled"
	ShipmentFailed    = "shipment.failed"
	OrderConfirmed    = "order.confirmed"
	OrderCancelled    = "order.cancelled"
	NotificationSent  = "notification.sent"
	// ProductPriceChanged: catalog changed a product's price. Nothing in the checkout
	// depends on it (orders asks catalog for the price when an order is placed); the
	// gateway drops its cached copies of the product (docs/patterns/gateway-caching.md).
	ProductPriceChanged = "product.price_changed"
)

// Command types (orchestration mode). Each is also the routing key on shop.commands.
const (
	CmdPaymentsAuthorize = "payments.authorize"
	CmdPaymentsRefund    = "payments.refund"
	CmdInventoryReserve  = "inventory.reserve"
	CmdInventoryRelease  = "inventory.release"
	CmdShippingSchedule  = "shipping.schedule"
)

// Events lists every event type; Commands every command type.
var (
	Events = []string{UserRegistered, OrderPlaced, PaymentAuthorized, PaymentDeclined,
		PaymentRefunded, StockReserved, StockRejected, StockReleased, ShipmentScheduled,
		ShipmentFailed, OrderConfirmed, OrderCancelled, NotificationSent, ProductPriceChanged}
	Commands = []string{CmdPaymentsAuthorize, CmdPaymentsRefund, CmdInventoryReserve,
		CmdInventoryRelease, CmdShippingSchedule}
)

// IsCommand reports whether a type is a command (published on shop.commands).
func IsCommand(t string) bool {
	for _, c := range Commands {
		if c == t {
			return true
		}
	}
	return false
}

// Known reports whether t is one of the shop's event or command types.
func Known(t string) bool {
	for _, e := range Events {
		if e == t {
			return true
		}
	}
	return IsCommand(t)
}

// Exchange returns the exchange a message of this type is published to.
func Exchange(t string) string {
	if IsCommand(t) {
		return ExchangeCommands
	}
	return ExchangeEvents
}

// AMQP header names.
const (
	HeaderAttempt     = "x-attempt"
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// EnvelopeVersion is the current envelope schema version.
const EnvelopeVersion = 1

// Envelope wraps every message on the bus. The same fields are mirrored in AMQP
// properties (message_id = EventID, type = EventType, app_id = Source,
// correlation_id = CorrelationID) so tools that never parse the body (the management
// UI, the dashboard's wiretap) still see them.
type Envelope struct {
	EventID       string          `json:"eventId"`
	EventType     string          `json:"eventType"`
	Version       int             `json:"version"`
	OccurredAt    time.Time       `json:"occurredAt"`
	Source        string          `json:"source"`
	CorrelationID string          `json:"correlationId"`
	CausationID   string          `json:"causationId,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// ErrMalformed marks a message that cannot be understood; retrying will not help, but the
// consumer still retries it a few times before dead-lettering so a learner sees the path.
var ErrMalformed = errors.New("malformed message")

// NewEnvelope builds an envelope with a fresh event id. causationID is the id of the
// message that caused this one ("" for messages caused by an API call).
func NewEnvelope(eventType, source, correlationID, causationID string, data any) (Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s data: %w", eventType, err)
	}
	return Envelope{
		EventID:       uuid.NewString(),
		EventType:     eventType,
		Version:       EnvelopeVersion,
		OccurredAt:    time.Now().UTC(),
		Source:        source,
		CorrelationID: correlationID,
		CausationID:   causationID,
		Data:          raw,
	}, nil
}

// Decode parses an envelope and checks the fields every consumer relies on.
func Decode(body []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case e.EventID == "":
		return Envelope{}, fmt.Errorf("%w: missing eventId", ErrMalformed)
	case e.EventType == "":
		return Envelope{}, fmt.Errorf("%w: missing eventType", ErrMalformed)
	case len(e.Data) == 0:
		return Envelope{}, fmt.Errorf("%w: missing data", ErrMalformed)
	case e.Data[0] != '{':
		// Every payload is an object; "data": null would decode into a zero payload.
		return Envelope{}, fmt.Errorf("%w: data must be a JSON object", ErrMalformed)
	}
	return e, nil
}

// DecodeData unmarshals the envelope's data into v, strictly enough that a payload of the
// wrong shape is reported as malformed rather than silently zero-valued.
func (e Envelope) DecodeData(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("%w: %s data: %v", ErrMalformed, e.EventType, err)
	}
	if c, ok := v.(interface{ Check() error }); ok {
		if err := c.Check(); err != nil {
			return fmt.Errorf("%w: %s data: %v", ErrMalformed, e.EventType, err)
		}
	}
	return nil
}
