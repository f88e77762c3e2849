-- The platform kit's tables, present in every service database. Versions are recorded in
-- goose_platform so they never collide with the service's own migrations.

-- +goose Up
-- The transactional outbox: a service writes its outgoing events here in the same
-- transaction as the state change that caused them; the relay publishes and marks them.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,
    event_type  text        NOT NULL,
    exchange    text        NOT NULL,
    routing_key text        NOT NULL,
    envelope    jsonb       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- The inbox: (consumer, event id) recorded in the same transaction as the effect, so a
-- redelivered message is recognised and skipped.
CREATE TABLE inbox (
    consumer    text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- +goose Down
DROP TABLE inbox;
DROP TABLE outbox;
