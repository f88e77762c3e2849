-- +goose Up
-- Every (simulated) email the shop sent. Only ids are kept: the address and the text
-- would be personal data this lab has no reason to store.
--
-- Deliberately no unique key on (order_id, kind): the inbox is what stops a redelivered
-- order.confirmed from mailing the customer twice; with the inbox off the duplicate
-- email shows up here.
CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    user_id    text        NOT NULL,
    order_id   text,
    kind       text        NOT NULL CHECK (kind IN ('order_confirmed', 'order_cancelled', 'welcome')),
    channel    text        NOT NULL DEFAULT 'email' CHECK (channel IN ('email')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_order ON notifications (order_id, created_at) WHERE order_id IS NOT NULL;
CREATE INDEX notifications_user ON notifications (user_id, created_at);

-- +goose Down
DROP TABLE notifications;
