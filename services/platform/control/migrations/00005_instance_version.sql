-- +goose Up
-- The version an instance runs (its VERSION: v1, or v2 for catalog's canary), so a
-- client of the registry can split traffic between versions (deploy.catalog.weights).
-- Rows written before the column existed ran the only version there was.
ALTER TABLE instances ADD COLUMN version text NOT NULL DEFAULT 'v1';

-- +goose Down
ALTER TABLE instances DROP COLUMN version;
