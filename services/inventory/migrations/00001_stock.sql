-- +goose Up
-- inventory owns how many of each product there are; catalog owns names and prices and
-- seeds the same SKUs. The CHECK is the last line of defence against overselling: even
-- a buggy reservation path cannot take stock below zero, it fails instead.
CREATE TABLE stock (
    sku     text PRIMARY KEY,
    on_hand int  NOT NULL CHECK (on_hand >= 0)
);

-- The seed stock. LAB-UNICORN is never in stock: exactly-once delivery does not exist.
INSERT INTO stock (sku, on_hand) VALUES
    ('LAB-MUG',      1000000),
    ('LAB-TEE',      1000000),
    ('LAB-HOODIE',   1000000),
    ('LAB-STICKERS', 1000000),
    ('LAB-NOTEBOOK', 1000000),
    ('LAB-PEN',      1000000),
    ('LAB-CAP',      1000000),
    ('LAB-SOCKS',    1000000),
    ('LAB-POSTER',   1000000),
    ('LAB-BOTTLE',   1000000),
    ('LAB-LANYARD',  1000000),
    ('LAB-UNICORN',        0);

-- One row per order line taken out of stock. A surrogate key and deliberately no
-- UNIQUE (order_id, sku): the inbox is what stops a redelivered reserve, and with the
-- inbox switched off the duplicate must visibly reserve twice (the lab's lesson).
CREATE TABLE reservations (
    id         bigserial PRIMARY KEY,
    order_id   text        NOT NULL,
    sku        text        NOT NULL REFERENCES stock (sku),
    qty        int         NOT NULL CHECK (qty > 0),
    status     text        NOT NULL CHECK (status IN ('reserved', 'released')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_order ON reservations (order_id);

-- Tombstones: an order whose stock was released, whether or not anything had been
-- reserved. The orchestrator may time out and compensate before a slow reserve arrives;
-- the tombstone makes that late reserve reject instead of taking stock for an order
-- that is already cancelled.
CREATE TABLE releases (
    order_id   text PRIMARY KEY,
    reason     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE releases;
DROP TABLE reservations;
DROP TABLE stock;
