// Package observability is how every microlab process is seen from outside: one Setup
// per process builds its tracer provider (OTLP to Jaeger and, optionally, to the
// dashboard), the W3C propagators, a JSON slog logger that stamps each line with the
// trace, span and correlation ids in its context, and a Prometheus registry with the
// metrics listed in docs/observability.md.
//
// Telemetry comes from wrappers — HTTP middleware and client transport (otelhttp), the
// AMQP header carrier with publish/process spans, pgx tracing — so handlers stay about
// the shop. Hand-made spans exist only where they teach something (the outbox wait, a
// failed saga step).
//
// A nil *Telemetry is valid and does nothing: platform tests that don't care about
// telemetry pass nil.
//
// The package imports nothing from services but contracts (a test checks it).
package observability
