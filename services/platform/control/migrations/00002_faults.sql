-- +goose Up
-- Injected faults in force (one-shot ones until they fire). A row past expires_at is
-- no longer in force; it is deleted at the next change.
CREATE TABLE faults (
    id         bigserial PRIMARY KEY,
    service    text        NOT NULL,
    instance   text        NOT NULL DEFAULT '',
    kind       text        NOT NULL,
    value      text        NOT NULL DEFAULT '',
    "on"       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    source     text        NOT NULL
);

-- +goose Down
DROP TABLE faults;
