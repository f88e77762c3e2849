// Package inbox is the idempotent consumer. Brokers deliver at least once: a message is
// redelivered when a consumer crashes before its ack, and the outbox relay may publish a
// row twice. The inbox records (consumer, event id) in the same transaction as the
// handler's effect; a second delivery finds the row, is acked and skipped.
//
// The lab can switch it off, and then a duplicate applies twice: the bug it prevents.
package inbox

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/pg"
)

// Middleware runs the handler inside one transaction (carried in ctx, see pg.InTx) and,
// when enabled() is true, first claims the message's id for consumer. Every handler runs
// in a transaction even with the inbox off, so its outbox rows stay atomic with it.
//
// Duplicates are counted in tel's inbox_duplicates_total (tel may be nil).
func Middleware(pool *pgxpool.Pool, consumer string, enabled func() bool, log *slog.Logger, tel *observability.Telemetry) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		return func(ctx context.Context, d bus.Delivery) error {
			if d.MessageID == "" {
				return fmt.Errorf("%w: no message id", contracts.ErrMalformed)
			}
			return pg.InTx(ctx, pool, func(ctx context.Context) error {
				if enabled() {
					tag, err := pg.Q(ctx, pool).Exec(ctx, `INSERT INTO inbox (consumer, event_id, event_type)
						VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, consumer, d.MessageID, d.Type)
					if err != nil {
						return fmt.Errorf("inbox claim: %w", err)
					}
					if tag.RowsAffected() == 0 {
						log.InfoContext(ctx, "duplicate skipped by inbox", "message_id", d.MessageID, "type", d.Type)
						if tel != nil {
							tel.Metrics.InboxDuplicates.WithLabelValues(d.Queue, bus.TypeLabel(d.Type)).Inc()
						}
						return nil
					}
				}
				return next(ctx, d)
			})
		}
	}
}
