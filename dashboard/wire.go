package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"microlab/dashboard/hub"
	"microlab/dashboard/ingest"
	"microlab/dashboard/views"
)

// wire builds the live side: the bounded stores, the OTLP receiver and the wiretap that
// fill them, and the hub that streams what changed to the browsers. What goes on the
// websocket is coalesced: trace summaries (never raw spans) once per frame, message
// flow as counts per map edge per frame; events and saga updates as they happen.
//
// The stores' sizes are exported on reg: dashboard_store_bytes against
// dashboard_store_budget_bytes, and what was cut (dashboard_store_truncated_total).
func wire(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (Sources, error) {
	traces := ingest.NewTracesWithin(cfg.MaxTraces, cfg.MaxSpansPerTrace,
		ingest.Budget{Bytes: cfg.MaxTraceBytes, ValueBytes: cfg.MaxSpanValue})
	events := ingest.NewEventsWithin(cfg.MaxEvents, ingest.Budget{Bytes: cfg.MaxEventBytes, ValueBytes: cfg.MaxEventValue})
	if err := registerStoreMetrics(reg, traces, events); err != nil {
		return Sources{}, err
	}
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
			light := events.Add(e) // as stored: cut to the budget
			// Payloads and headers on request (GET /api/events/{id}), not streamed: a
			// message on the websocket stays a few hundred bytes, whatever was sent.
			light.Payload, light.Headers = nil, nil
			publish(log, h, "event", light)
			if sg, ok := sagas.Apply(e); ok { // the whole payload: the saga keeps only short fields
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

// registerStoreMetrics exports what the trace and event stores hold, against their
// budgets, and how much they cut or dropped to stay within them.
func registerStoreMetrics(reg prometheus.Registerer, traces *ingest.Traces, events *ingest.Events) error {
	if reg == nil {
		return nil
	}
	gauge := func(name, help, store string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"store": store}}, f)
	}
	counter := func(name, help, store string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"store": store}}, f)
	}
	const (
		bytesHelp  = "Estimated bytes the store holds."
		budgetHelp = "The most bytes the store may hold (MAX_TRACE_BYTES, MAX_EVENT_BYTES)."
		cutHelp    = "Items stored with a value cut to the store's value limit."
	)
	for _, c := range []prometheus.Collector{
		gauge("dashboard_store_bytes", bytesHelp, "traces", func() float64 { return float64(traces.Stats().Bytes) }),
		gauge("dashboard_store_budget_bytes", budgetHelp, "traces", func() float64 { return float64(traces.Stats().BudgetBytes) }),
		counter("dashboard_store_truncated_total", cutHelp, "traces", func() float64 { return float64(traces.Stats().TruncatedSpans) }),
		counter("dashboard_store_dropped_spans_total", "Spans refused because their trace was at a cap (MAX_SPANS_PER_TRACE, a 16th of MAX_TRACE_BYTES).",
			"traces", func() float64 { return float64(traces.Stats().DroppedSpans) }),
		gauge("dashboard_store_bytes", bytesHelp, "events", func() float64 { return float64(events.Stats().Bytes) }),
		gauge("dashboard_store_budget_bytes", budgetHelp, "events", func() float64 { return float64(events.Stats().BudgetBytes) }),
		counter("dashboard_store_truncated_total", cutHelp, "events", func() float64 { return float64(events.Stats().TruncatedEvents) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register store metrics: %w", err)
		}
	}
	return nil
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
