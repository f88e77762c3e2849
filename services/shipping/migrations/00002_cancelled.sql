-- +goose Up
-- A shipment can be cancelled: an order cancelled after a slow shipping.schedule (the
-- orchestrator timed out and compensated) must not ship. A cancellation that arrives
-- before the schedule leaves a 'cancelled' row behind, a tombstone the late schedule
-- finds.
ALTER TABLE shipments DROP CONSTRAINT shipments_status_check;
ALTER TABLE shipments ADD CONSTRAINT shipments_status_check CHECK (status IN ('scheduled', 'failed', 'cancelled'));

-- +goose Down
DELETE FROM shipments WHERE status = 'cancelled';
ALTER TABLE shipments DROP CONSTRAINT shipments_status_check;
ALTER TABLE shipments ADD CONSTRAINT shipments_status_check CHECK (status IN ('scheduled', 'failed'));
