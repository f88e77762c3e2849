-- +goose Up
-- One shipment per order. A failed attempt is recorded too (status 'failed'), so a
-- redelivered command answers the same way instead of trying again.
CREATE TABLE shipments (
    order_id    text PRIMARY KEY,
    shipment_id text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('scheduled', 'failed')),
    country     text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE shipments;
