-- +goose Up
-- The whole shop in ONE schema of ONE database: what users, catalog, inventory, orders,
-- payments and shipping keep in six databases of their own lives here side by side, so
-- a checkout is one transaction across all of it (and a JOIN could read any of it: the
-- coupling the microservices pay to avoid). The seed rows (demo accounts, products and
-- their stock) are inserted from Go at start-up, from services/shop, the same source
-- users, catalog and inventory are checked against.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text        NOT NULL UNIQUE CHECK (email = lower(email)),
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- catalog's products and inventory's stock in one row: in one database there is no
-- reason to split what a product is from how many there are.
CREATE TABLE products (
    sku         text PRIMARY KEY CHECK (sku ~ '^[A-Z0-9-]{1,64}$'),
    name        text   NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    currency    text   NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    -- The last line of defence against overselling, as in inventory.
    on_hand     int    NOT NULL CHECK (on_hand >= 0)
);

CREATE TABLE orders (
    order_id         uuid PRIMARY KEY,
    user_id          text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    cancel_reason    text        NOT NULL DEFAULT '',
    total_cents      bigint      NOT NULL CHECK (total_cents >= 0),
    currency         text        NOT NULL,
    shipping_address jsonb       NOT NULL,
    card_last4       text        NOT NULL,
    trace_id         text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, order_id DESC);

CREATE TABLE order_items (
    order_id    uuid   NOT NULL REFERENCES orders ON DELETE CASCADE,
    line        int    NOT NULL,
    sku         text   NOT NULL REFERENCES products,
    qty         int    NOT NULL CHECK (qty > 0),
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (order_id, line)
);

-- What happened to the order, step by step: the same log the saga keeps, written by
-- one call chain instead of by events.
CREATE TABLE order_steps (
    id       bigserial PRIMARY KEY,
    order_id uuid        NOT NULL REFERENCES orders ON DELETE CASCADE,
    name     text        NOT NULL,
    status   text        NOT NULL,
    detail   text        NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_steps_by_order ON order_steps (order_id, id);

-- Idempotency-Key, as orders keeps it: one order per (user, key).
CREATE TABLE idempotency_keys (
    user_id      text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    order_id     uuid        NOT NULL REFERENCES orders ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- Stock taken by an order (inventory's reservations). A confirmed order keeps its rows;
-- a failed checkout never leaves any: the transaction that took them rolled back.
CREATE TABLE reservations (
    order_id uuid NOT NULL REFERENCES orders ON DELETE CASCADE,
    sku      text NOT NULL REFERENCES products,
    qty      int  NOT NULL CHECK (qty > 0),
    PRIMARY KEY (order_id, sku)
);

-- payments' append-only ledger. A declined card leaves a 'decline' row; money that a
-- rolled-back checkout authorized and captured leaves nothing (no refund is needed:
-- the authorization never committed).
CREATE TABLE payments (
    id           bigserial PRIMARY KEY,
    order_id     uuid        NOT NULL REFERENCES orders ON DELETE CASCADE,
    payment_id   text        NOT NULL DEFAULT '',
    kind         text        NOT NULL CHECK (kind IN ('authorize', 'decline', 'capture')),
    amount_cents bigint      NOT NULL CHECK (amount_cents >= 0),
    reason       text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_by_order ON payments (order_id, id);

-- One shipment per order; a country no carrier serves leaves a 'failed' row.
CREATE TABLE shipments (
    order_id    uuid PRIMARY KEY REFERENCES orders ON DELETE CASCADE,
    shipment_id text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('scheduled', 'failed')),
    country     text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE shipments;
DROP TABLE payments;
DROP TABLE reservations;
DROP TABLE idempotency_keys;
DROP TABLE order_steps;
DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE users;
