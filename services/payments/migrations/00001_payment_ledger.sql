-- +goose Up
-- payments keeps an append-only ledger: every decision is a new row, nothing is updated.
-- What an order "has" (authorized, captured, refunded) is always the sum of its rows, so
-- the ledger doubles as the audit trail a learner reads to see what happened, in order.
--
-- Deliberately no unique key on (order_id, kind): the inbox is what keeps a redelivered
-- message from authorizing twice. Switch the inbox off and a duplicate shows up here as
-- a second 'authorize' row, which is the bug the lab demonstrates.
--
-- A 'refund' of 0 cents for an order that was never authorized is a tombstone: the
-- orchestrator gave up on the order (a step timed out) before the authorization arrived,
-- and the row tells a late authorize to decline instead of holding the customer's money.
CREATE TABLE payment_ledger (
    id           bigserial PRIMARY KEY,
    order_id     text        NOT NULL,
    payment_id   text        NOT NULL DEFAULT '',
    kind         text        NOT NULL CHECK (kind IN ('authorize', 'decline', 'capture', 'refund')),
    amount_cents bigint      NOT NULL CHECK (amount_cents >= 0),
    reason       text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_ledger_order ON payment_ledger (order_id, id);

-- +goose Down
DROP TABLE payment_ledger;
