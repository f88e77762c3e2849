-- +goose Up
-- The CQRS read model of the order history (read.model=cqrs; history.go): one
-- denormalised row per order, kept from events only (order.placed, order.confirmed,
-- order.cancelled on the queue orders-history.events), never from the tables above.
-- A row can exist before its order.placed has arrived (events may come out of order):
-- created_at is NULL until then, and such a row is not listed.
CREATE TABLE order_history (
    order_id      text PRIMARY KEY,
    user_id       text        NOT NULL,
    status        text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    cancel_reason text        NOT NULL DEFAULT '',
    saga_mode     text        NOT NULL DEFAULT '',
    total_cents   bigint      NOT NULL DEFAULT 0,
    currency      text        NOT NULL DEFAULT '',
    -- The lines as order.placed carried them: [{sku, qty, priceCents}].
    items         jsonb       NOT NULL DEFAULT '[]',
    trace_id      text        NOT NULL DEFAULT '',
    created_at    timestamptz,
    -- When the read model last changed the row, for a learner comparing it with the
    -- event's occurredAt (read_model_apply_lag_seconds measures the same thing).
    applied_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The history page: a user's orders, newest first, paged by (created_at, order_id) like
-- GET /orders on the write side.
CREATE INDEX order_history_by_user ON order_history (user_id, created_at DESC, order_id DESC)
    WHERE created_at IS NOT NULL;

-- One-time backfill: orders placed before the read model existed have had their events
-- consumed already, so they are copied from the write side once, here. From now on the
-- read model consumes all the time (whatever read.model says) and follows events only;
-- an event of a copied order still in flight applies idempotently on top.
INSERT INTO order_history (order_id, user_id, status, cancel_reason, saga_mode, total_cents, currency,
                           items, trace_id, created_at)
SELECT o.order_id, o.user_id, o.status, o.cancel_reason, o.saga_mode, o.total_cents, o.currency,
       coalesce((SELECT jsonb_agg(jsonb_build_object('sku', i.sku, 'qty', i.qty, 'priceCents', i.price_cents) ORDER BY i.line)
                 FROM order_items i WHERE i.order_id = o.order_id), '[]'),
       o.trace_id, o.created_at
FROM orders o;

-- +goose Down
DROP TABLE order_history;
