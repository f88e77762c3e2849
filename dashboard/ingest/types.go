// Package ingest is how the dashboard sees the lab: an OTLP/HTTP trace receiver fed by
// every service's second exporter, and an AMQP wiretap that sees every message. Both
// feed bounded stores (ring buffers whose sizes and byte budgets come from config), so
// memory stays flat under hours of load, and under telemetry of any size.
package ingest

import (
	"encoding/json"
	"time"
)

// Span is one received span, flattened for the dashboard.
type Span struct {
	TraceID  string            `json:"traceId"`
	SpanID   string            `json:"spanId"`
	ParentID string            `json:"parentId,omitempty"`
	Service  string            `json:"service"`
	Name     string            `json:"name"`
	Kind     string            `json:"kind"` // server, client, producer, consumer, internal
	Start    time.Time         `json:"start"`
	Duration time.Duration     `json:"durationNs"`
	Error    bool              `json:"error"`
	Status   string            `json:"status,omitempty"` // the status message on error
	Attrs    map[string]string `json:"attrs,omitempty"`
	Events   []SpanEvent       `json:"events,omitempty"`
}

// SpanEvent is an event recorded on a span (an exception, "step failed").
type SpanEvent struct {
	Name  string            `json:"name"`
	At    time.Time         `json:"at"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// TraceSummary is what the live trace list shows of a trace (never its raw spans).
type TraceSummary struct {
	TraceID     string        `json:"traceId"`
	RootService string        `json:"rootService"`
	RootName    string        `json:"rootName"`
	Start       time.Time     `json:"start"`
	Duration    time.Duration `json:"durationNs"`
	Spans       int           `json:"spans"`
	Services    []string      `json:"services"`
	Error       bool          `json:"error"`
}

// Event is one message seen by the wiretap.
type Event struct {
	ID            string            `json:"id"` // message id (the envelope's eventId)
	Type          string            `json:"type"`
	Source        string            `json:"source"`
	CorrelationID string            `json:"correlationId"`
	Exchange      string            `json:"exchange"`
	RoutingKey    string            `json:"routingKey"`
	At            time.Time         `json:"at"`
	TraceID       string            `json:"traceId,omitempty"` // from the traceparent header
	Headers       map[string]string `json:"headers,omitempty"`
	Payload       json.RawMessage   `json:"payload"` // the envelope's data
	// Truncated says the dashboard cut something of this message to stay within its
	// memory budget: a value or the payload ends in "…[truncated N bytes]" (a payload
	// so cut is a JSON string), or headers are missing.
	Truncated bool `json:"truncated,omitempty"`
}

// SagaStep is one step on an order's saga timeline, derived from the events.
type SagaStep struct {
	Event        string        `json:"event"`   // the message type (payment.authorized, payments.refund, ...)
	Service      string        `json:"service"` // who published it
	At           time.Time     `json:"at"`
	Since        time.Duration `json:"sinceStartNs"` // since the order was placed
	Failed       bool          `json:"failed"`       // a step that failed (declined, rejected, shipment failed)
	Compensation bool          `json:"compensation"` // a step that undoes another (refund, release)
	Reason       string        `json:"reason,omitempty"`
}

// Saga is one order's timeline.
type Saga struct {
	OrderID string     `json:"orderId"`
	Mode    string     `json:"mode"`    // choreography or orchestration
	Outcome string     `json:"outcome"` // pending, confirmed, cancelled
	Reason  string     `json:"reason,omitempty"`
	TraceID string     `json:"traceId,omitempty"`
	Start   time.Time  `json:"start"`
	Steps   []SagaStep `json:"steps"`
}
