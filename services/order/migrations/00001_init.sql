-- +goose Up
-- orders holds one row per order: what was ordered, where its saga is
-- (saga_phase, saga_step), the ids the saga obtained, and the lease of the
-- replica driving the saga.
CREATE TABLE orders (
    order_id         TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           BIGINT NOT NULL,
    -- status_seq counts status changes; order_events has one row per value.
    status_seq       BIGINT NOT NULL,
    cancel_reason    TEXT NOT NULL DEFAULT '',
    currency_code    TEXT NOT NULL DEFAULT '',
    total_minor      BIGINT NOT NULL DEFAULT 0,
    recipient        TEXT NOT NULL,
    line1            TEXT NOT NULL,
    line2            TEXT NOT NULL,
    city             TEXT NOT NULL,
    postal_code      TEXT NOT NULL,
    country_code     TEXT NOT NULL,
    account_id       TEXT NOT NULL DEFAULT '',
    authorization_id TEXT NOT NULL DEFAULT '',
    shipment_id      TEXT NOT NULL DEFAULT '',
    saga_phase       TEXT NOT NULL,
    saga_step        BIGINT NOT NULL,
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until_us   BIGINT NOT NULL DEFAULT 0,
    next_run_us      BIGINT NOT NULL DEFAULT 0,
    create_us        BIGINT NOT NULL,
    update_us        BIGINT NOT NULL,
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key),
    CONSTRAINT orders_saga_phase CHECK (saga_phase IN ('forward', 'compensate', 'done')),
    CONSTRAINT orders_total CHECK (total_minor >= 0)
);

CREATE INDEX orders_user_newest ON orders (user_id, create_us, order_id);
CREATE INDEX orders_newest ON orders (create_us, order_id);
CREATE INDEX orders_unfinished ON orders (saga_phase, lease_until_us);

-- order_lines holds the lines of an order, priced by the saga.
CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_no          BIGINT NOT NULL,
    item_id          TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_price_minor BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT order_lines_item UNIQUE (order_id, item_id),
    CONSTRAINT order_lines_quantity CHECK (quantity > 0),
    CONSTRAINT order_lines_price CHECK (unit_price_minor >= 0)
);

-- order_events records every status change of an order, in order, so that
-- WatchOrder streams each one even when several happen between two reads.
CREATE TABLE order_events (
    order_id         TEXT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL,
    status           BIGINT NOT NULL,
    cancel_reason    TEXT NOT NULL,
    authorization_id TEXT NOT NULL,
    shipment_id      TEXT NOT NULL,
    at_us            BIGINT NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- +goose Down
DROP TABLE order_events;
DROP TABLE order_lines;
DROP TABLE orders;
