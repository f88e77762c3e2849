package observability

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// FaultEvent records a `lab.fault` event on the span in ctx (an HTTP server span, a
// consumer span, a publish span): the lab injected this fault here, so a trace shows why
// a step was slow, failed or was sent twice, rather than leaving the learner to guess.
func FaultEvent(ctx context.Context, kind, value string, id int64) {
	trace.SpanFromContext(ctx).AddEvent("lab.fault", trace.WithAttributes(
		attribute.String("lab.fault.kind", kind),
		attribute.String("lab.fault.value", value),
		attribute.Int64("lab.fault.id", id),
	))
}
