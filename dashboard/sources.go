package main

import (
	"context"
	"encoding/json"
	"net/http"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/dashboard/hub"
	"microlab/dashboard/ingest"
	"microlab/services/platform/control"
)

// The seams. Everything the dashboard's pages and APIs read from ingest, or send
// through hub, goes through one of these small interfaces, declared here by their
// consumer. main wires the real implementations; until ingest and hub land, the empty
// ones below keep the dashboard running (empty lists, no live updates).

// traceStore is what the trace views read (*ingest.Traces satisfies it).
type traceStore interface {
	// Summaries returns up to n traces passing f, newest first.
	Summaries(n int, f ingest.Filter) []ingest.TraceSummary
	// Trace returns a trace's spans; false if the store does not have it.
	Trace(id string) ([]ingest.Span, bool)
}

// eventStore is what the event views read (*ingest.Events satisfies it).
type eventStore interface {
	// Recent returns up to n events, newest first; only one conversation's with a
	// correlation id.
	Recent(n int, correlationID string) []ingest.Event
	// Get returns one event with its payload; false if the store does not have it.
	Get(id string) (ingest.Event, bool)
}

// sagaStore is what the saga views read (*ingest.Sagas satisfies it).
type sagaStore interface {
	// List returns up to n sagas, most recently started first, filtered by outcome and
	// mode when not empty.
	List(n int, outcome, mode string) []ingest.Saga
	// Get returns one order's saga; false if the store does not have it.
	Get(orderID string) (ingest.Saga, bool)
}

// broadcaster sends a message to every connected browser (never blocking: the hub
// drops and counts for a slow client). *hub.Hub satisfies it.
type broadcaster interface {
	Broadcast(m hub.Message)
}

// settingsStore is what the pages read of the lab's switches (control.Store satisfies
// it). Changes never go through it: they go through the control.Plane, the one code path
// the CLI and the exercises use too.
type settingsStore interface {
	List(ctx context.Context) ([]control.Entry, error)
	Faults(ctx context.Context) ([]control.Fault, error)
	Changes(ctx context.Context, limit int) ([]control.Change, error)
}

// channels opens AMQP channels (bus.Conn satisfies it): DLQ replay consumes and
// republishes on its own channels.
type channels interface {
	Channel(ctx context.Context) (*amqp.Channel, error)
}

// Sources are the parts main wires in. Nil fields get the empty implementations.
type Sources struct {
	Traces traceStore
	Events eventStore
	Sagas  sagaStore
	Hub    broadcaster
	// WS is the websocket endpoint (/ws) and OTLP the trace receiver (POST /v1/traces);
	// nil: not mounted. They are mounted outside the HTTP instrumentation (a websocket
	// needs the raw connection; the receiver is measured by ingest).
	WS   http.Handler
	OTLP http.Handler
}

func (s Sources) withDefaults() Sources {
	if s.Traces == nil {
		s.Traces = noTraces{}
	}
	if s.Events == nil {
		s.Events = noEvents{}
	}
	if s.Sagas == nil {
		s.Sagas = noSagas{}
	}
	if s.Hub == nil {
		s.Hub = noHub{}
	}
	return s
}

type noTraces struct{}

func (noTraces) Summaries(int, ingest.Filter) []ingest.TraceSummary { return nil }
func (noTraces) Trace(string) ([]ingest.Span, bool)                 { return nil, false }

type noEvents struct{}

func (noEvents) Recent(int, string) []ingest.Event { return nil }
func (noEvents) Get(string) (ingest.Event, bool)   { return ingest.Event{}, false }

type noSagas struct{}

func (noSagas) List(int, string, string) []ingest.Saga { return nil }
func (noSagas) Get(string) (ingest.Saga, bool)         { return ingest.Saga{}, false }

type noHub struct{}

func (noHub) Broadcast(hub.Message) {}

// broadcast sends v as a message of type typ.
func broadcast(b broadcaster, typ string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return // our own types: cannot happen
	}
	b.Broadcast(hub.Message{Type: typ, Data: data})
}
