package bus

import (
	"context"
	"log/slog"
	"time"
)

// Log logs every handled message at debug level and every failure at warn level, with
// the trace and correlation ids (from ctx) so one order can be followed in logs.
func Log(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d Delivery) error {
			start := time.Now()
			err := next(ctx, d)
			// trace_id, span_id and correlation_id come from ctx (observability.NewLogger).
			attrs := []any{"type", d.Type, "message_id", d.MessageID, "attempt", d.Attempt, "duration_ms", time.Since(start).Milliseconds()}
			if err != nil {
				log.WarnContext(ctx, "message failed", append(attrs, "err", err)...)
			} else {
				log.DebugContext(ctx, "message handled", attrs...)
			}
			return err
		}
	}
}
