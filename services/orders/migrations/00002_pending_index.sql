-- +goose Up
-- The choreography deadline scan (overdue.go) looks at pending orders only: a partial
-- index keeps it cheap however many finished orders the table holds.
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'pending';

-- +goose Down
DROP INDEX orders_pending;
