-- +goose Up
-- A fault a diagnosis exercise holds hidden: the services, the timeline, the
-- announcements and every list say an exercise holds a hidden fault, not where nor how
-- much, until the learner answers or asks for the reveal (RevealFaults).
ALTER TABLE faults ADD COLUMN hidden boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE faults DROP COLUMN hidden;
