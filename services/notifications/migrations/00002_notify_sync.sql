-- +goose Up
-- notifications.mode=sync: orders calls POST /notify before it confirms an order, then
-- emits order.confirmed as usual. `via` says which path sent a notification, so that
-- the event does not mail a customer a second time after the call did, and the unique
-- index makes the call idempotent on the order id (orders retries it until it works).
-- Event-sent rows stay without a unique key: with the inbox off, a redelivered
-- order.confirmed still visibly mails twice.
ALTER TABLE notifications ADD COLUMN via text NOT NULL DEFAULT 'event' CHECK (via IN ('event', 'http'));
CREATE UNIQUE INDEX notifications_sync_once ON notifications (order_id, kind) WHERE via = 'http';

-- +goose Down
DROP INDEX notifications_sync_once;
ALTER TABLE notifications DROP COLUMN via;
