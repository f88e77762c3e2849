-- +goose Up
-- The lab's settings: one row per setting that differs from (or was ever set from) its
-- default. revision comes from one sequence so every change is totally ordered.
CREATE SEQUENCE settings_revision;
CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      text        NOT NULL,
    revision   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Every change, for the dashboard's timeline.
CREATE TABLE setting_changes (
    revision   bigint PRIMARY KEY,
    key        text        NOT NULL,
    old_value  text        NOT NULL,
    new_value  text        NOT NULL,
    source     text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE setting_changes;
DROP TABLE settings;
DROP SEQUENCE settings_revision;
