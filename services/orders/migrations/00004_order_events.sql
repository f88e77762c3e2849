-- +goose Up
-- Event sourcing of the order aggregate (events.go): every state change of an order
-- (placed, each saga step, confirmed, cancelled) appended as one event, in the same
-- transaction as the change itself. Append-only: nothing updates or deletes a row.
-- version counts an order's events from 1 without gaps; the primary key makes two
-- writers that both read version N and append N+1 collide (optimistic concurrency: the
-- second gets a unique violation, its transaction rolls back and its message is retried).
CREATE TABLE order_events (
    order_id    text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    version     int         NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    -- {name, status, detail} of the step, and for order.placed the order as placed
    -- (placedData in events.go).
    data        jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, version)
);

-- One-time backfill: orders placed before the event store existed get their stream from
-- their step log (the step log has recorded every change since the start), so a replay
-- covers every order.
INSERT INTO order_events (order_id, version, type, data, occurred_at)
SELECT s.order_id,
       row_number() OVER (PARTITION BY s.order_id ORDER BY s.at, s.id),
       s.name || '.' || s.status,
       jsonb_build_object('name', s.name, 'status', s.status, 'detail', s.detail) ||
       CASE WHEN s.name = 'order' AND s.status = 'placed' THEN jsonb_build_object('order', jsonb_build_object(
           'userId', o.user_id, 'sagaMode', o.saga_mode, 'totalCents', o.total_cents, 'currency', o.currency,
           'shippingAddress', o.shipping_address, 'cardLast4', o.card_last4, 'traceId', o.trace_id,
           'createdAt', o.created_at,
           'items', (SELECT coalesce(jsonb_agg(jsonb_build_object('sku', i.sku, 'qty', i.qty, 'priceCents', i.price_cents) ORDER BY i.line), '[]')
                     FROM order_items i WHERE i.order_id = o.order_id)))
       ELSE '{}'::jsonb END,
       s.at
FROM order_steps s JOIN orders o USING (order_id);

-- Projection rebuilds (rebuild.go): one row per job, so any orders instance answers its
-- progress. At most one job runs at a time (the partial unique index): a second POST
-- while one runs is refused with 409.
CREATE TABLE projection_rebuilds (
    job_id      text PRIMARY KEY,
    projection  text        NOT NULL,
    status      text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    done        int         NOT NULL DEFAULT 0,
    total       int         NOT NULL DEFAULT 0,
    error       text        NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Touched with every batch: a running job not touched for a minute was abandoned (its
    -- instance stopped) and no longer blocks a new one.
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX projection_rebuilds_one_running ON projection_rebuilds (projection) WHERE status = 'running';

-- +goose Down
DROP TABLE projection_rebuilds;
DROP TABLE order_events;
