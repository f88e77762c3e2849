package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"microlab/dashboard/hub"
	"microlab/dashboard/ingest"
	"microlab/dashboard/views"
)

// wire builds the live side: the bounded stores, the OTLP receiver and the wiretap that
// fill them, and the hub that streams what changed to the browsers. What goes on the
// websocket is coalesced: trace summaries (never raw spans) once per frame, message
// flow as counts per map edge per frame; events and saga updates as they happen.
func wire(ctx context.Context, cfg Config, log *slog.Logger) (Sources, error) {
	traces := ingest.NewTraces(cfg.MaxTraces, cfg.MaxSpansPerTrace)
	events := ingest.NewEvents(cfg.MaxEvents)
	sagas := ingest.NewSagas(cfg.MaxSagas)
	arch := views.ShopArch()

	h := hub.New(hub.Config{SendBuffer: cfg.ClientBuffer, OnConnect: func() []hub.Message {
		// A fresh page is never blank: it starts from the newest traces and sagas.
		out := []hub.Message{msg(log, "traces", traces.Summaries(50, ingest.Filter{}))}
		for _, sg := range sagas.List(50, "", "") {
			out = append(out, msg(log, "saga", sg))
		}
		return out
	}}, log)
	go func() { _ = h.Run(ctx) }()

	flow := hub.NewCoalescer(250*time.Millisecond, func(m map[string]int) { publish(log, h, "flow", m) })
	go flow.Run(ctx)

	// Spans arrive in batches from every service; the trace list is re-sent at most once
	// per frame, as summaries of the traces those spans touched. The touched set is
	// bounded by the store (an id per trace held), so nothing is dropped here.
	var (
		mu      sync.Mutex
		touched = map[string]bool{}
	)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			ids := touched
			touched = map[string]bool{}
			mu.Unlock()
			if len(ids) == 0 {
				continue
			}
			var out []ingest.TraceSummary
			for id := range ids {
				if sum, ok := traces.Summary(id); ok {
					out = append(out, sum)
				}
			}
			publish(log, h, "traces", out)
		}
	}()
	sink := func(spans []ingest.Span) {
		traces.Add(spans)
		mu.Lock()
		for _, s := range spans {
			touched[s.TraceID] = true
		}
		mu.Unlock()
	}

	go func() {
		err := ingest.Wiretap(ctx, cfg.AMQPURL, log, func(e ingest.Event) {
			events.Add(e)
			light := e
			light.Payload = nil // payloads on request (GET /api/events/{id}), not streamed
			publish(log, h, "event", light)
			if sg, ok := sagas.Apply(e); ok {
				publish(log, h, "saga", sg)
			}
			for _, k := range arch.FlowEdges(e.Source, e.Exchange, e.RoutingKey) {
				flow.Add(k, 1)
			}
		})
		if err != nil {
			log.Error("wiretap stopped: the event stream and saga timelines will stay empty", "err", err)
		}
	}()

	return Sources{Traces: traces, Events: events, Sagas: sagas, Hub: h,
		WS: http.HandlerFunc(h.ServeWS), OTLP: ingest.OTLPHandler(sink, log)}, nil
}

func msg(log *slog.Logger, typ string, v any) hub.Message {
	b, err := json.Marshal(v)
	if err != nil {
		log.Warn("websocket message not encodable", "type", typ, "err", err)
		b = []byte("null")
	}
	return hub.Message{Type: typ, Data: b}
}

func publish(log *slog.Logger, h *hub.Hub, typ string, v any) {
	if err := h.Publish(typ, v); err != nil {
		log.Warn("websocket message not encodable", "type", typ, "err", err)
	}
}
