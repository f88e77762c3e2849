-- +goose Up
-- The lab's service registry (package registry): every running instance upserts its
-- row every registry.Heartbeat and deletes it when it stops gracefully; a row whose
-- heartbeat is older than registry.StaleAfter is an instance that died without saying so.
CREATE TABLE instances (
    service      text        NOT NULL,
    instance     text        NOT NULL,
    url          text        NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, instance)
);

-- +goose Down
DROP TABLE instances;
