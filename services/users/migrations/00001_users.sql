-- +goose Up
-- Emails are stored lower-cased (the service normalises them), so the UNIQUE constraint
-- is the one place that decides "this address is taken", even between two instances
-- registering the same address at the same moment.
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text        NOT NULL UNIQUE CHECK (email = lower(email)),
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE users;
