-- +goose Up
-- catalog owns what a product is called and what it costs; inventory owns how many there
-- are (it seeds the same SKUs with stock). Prices are integer cents: money is never a float.
CREATE TABLE products (
    sku         text PRIMARY KEY CHECK (sku ~ '^[A-Z0-9-]{1,64}$'),
    name        text   NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    currency    text   NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$')
);

-- The seed catalog (the README lists it). LAB-UNICORN is the one inventory never has in
-- stock: exactly-once delivery does not exist.
INSERT INTO products (sku, name, price_cents, currency) VALUES
    ('LAB-MUG',      'Lab mug',               1200, 'EUR'),
    ('LAB-TEE',      'Trace tee',             2500, 'EUR'),
    ('LAB-HOODIE',   'Saga hoodie',           5500, 'EUR'),
    ('LAB-STICKERS', 'Sticker pack',           400, 'EUR'),
    ('LAB-NOTEBOOK', 'Outbox notebook',        900, 'EUR'),
    ('LAB-PEN',      'Idempotent pen',         250, 'EUR'),
    ('LAB-CAP',      'Circuit-breaker cap',   1800, 'EUR'),
    ('LAB-SOCKS',    'Retry socks',           1100, 'EUR'),
    ('LAB-POSTER',   'Topology poster',       1500, 'EUR'),
    ('LAB-BOTTLE',   'Queue bottle',          2000, 'EUR'),
    ('LAB-LANYARD',  'Span lanyard',           350, 'EUR'),
    ('LAB-UNICORN',  'Exactly-once unicorn',  9900, 'EUR');

-- +goose Down
DROP TABLE products;
