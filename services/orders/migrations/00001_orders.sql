-- +goose Up
-- An order as the customer placed it, and where its saga has brought it. Only the last
-- four digits of the card are kept: the full number travels once, in order.placed (the
-- lab's cards are public test numbers; a real shop would carry a payment token).
CREATE TABLE orders (
    order_id         text PRIMARY KEY,
    user_id          text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    cancel_reason    text        NOT NULL DEFAULT '',
    -- The mode the saga runs in, fixed when the order is placed: switching the lab
    -- setting never strands an order half-way through the other mode.
    saga_mode        text        NOT NULL CHECK (saga_mode IN ('choreography', 'orchestration')),
    total_cents      bigint      NOT NULL CHECK (total_cents >= 0),
    currency         text        NOT NULL,
    shipping_address jsonb       NOT NULL,
    card_last4       text        NOT NULL,
    trace_id         text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- GET /orders: a user's orders, newest first, paged by (created_at, order_id).
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, order_id DESC);

CREATE TABLE order_items (
    order_id    text   NOT NULL REFERENCES orders ON DELETE CASCADE,
    line        int    NOT NULL,
    sku         text   NOT NULL,
    qty         int    NOT NULL CHECK (qty > 0),
    -- The price when the order was placed: a later catalog change does not alter it.
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (order_id, line)
);

-- The saga's step log, shared by both modes: what happened to the order, read in order
-- of occurrence (at: an event's own time; id breaks ties), for the customer, the dashboard's saga timeline and the learner.
CREATE TABLE order_steps (
    id       bigserial PRIMARY KEY,
    order_id text        NOT NULL REFERENCES orders ON DELETE CASCADE,
    name     text        NOT NULL,
    status   text        NOT NULL,
    detail   text        NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_steps_by_order ON order_steps (order_id, id);

-- Idempotency-Key: one order per (user, key). request_hash (sha256 of the canonical
-- request) tells a retry of the same request from a different request reusing the key.
-- The key is claimed first in the placing transaction, before the order row exists, so
-- the foreign key is checked at commit.
CREATE TABLE idempotency_keys (
    user_id      text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    order_id     text        NOT NULL REFERENCES orders ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- The orchestrator's persisted state machine (orchestration mode only), one row per
-- saga. Every reply locks its row (SELECT ... FOR UPDATE): one step at a time per saga,
-- whichever orders instance handles it. deadline is when the current step times out
-- (NULL once final); attempts counts re-sent compensations in the current state.
CREATE TABLE sagas (
    order_id   text PRIMARY KEY REFERENCES orders ON DELETE CASCADE,
    state      text        NOT NULL CHECK (state IN ('authorizing', 'reserving', 'scheduling',
                                                     'refunding', 'compensating', 'confirmed', 'cancelled')),
    reason     text        NOT NULL DEFAULT '',
    -- The replies a compensation still waits for (stock.released, payment.refunded).
    awaiting   text[]      NOT NULL DEFAULT '{}',
    deadline   timestamptz,
    attempts   int         NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The timeout scanner's query: live sagas whose deadline has passed, oldest first.
CREATE INDEX sagas_due ON sagas (deadline) WHERE state NOT IN ('confirmed', 'cancelled');

-- +goose Down
DROP TABLE sagas;
DROP TABLE idempotency_keys;
DROP TABLE order_steps;
DROP TABLE order_items;
DROP TABLE orders;
