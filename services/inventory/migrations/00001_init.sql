-- +goose Up
-- items holds the catalogue and its stock. The CHECK constraints are the
-- last line of defence: the service changes stock only with conditional
-- UPDATEs that never break them, so a violation would be a bug.
CREATE TABLE items (
    item_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    on_hand     BIGINT NOT NULL,
    reserved    BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    update_us   BIGINT NOT NULL,
    CONSTRAINT items_price_not_negative CHECK (price_minor >= 0),
    CONSTRAINT items_on_hand_not_negative CHECK (on_hand >= 0),
    CONSTRAINT items_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT items_reserved_within_on_hand CHECK (reserved <= on_hand)
);

-- reservations holds the stock held for each order, keyed by the order id
-- (the idempotency key of Reserve).
CREATE TABLE reservations (
    order_id  TEXT PRIMARY KEY,
    status    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    create_us BIGINT NOT NULL,
    expire_us BIGINT NOT NULL,
    update_us BIGINT NOT NULL,
    CONSTRAINT reservations_status_known
        CHECK (status IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED'))
);

-- The expiry loop looks for held reservations past their expiry.
CREATE INDEX reservations_status_expire ON reservations (status, expire_us);

-- reservation_lines holds the items of each reservation, each item once.
CREATE TABLE reservation_lines (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    line_no  BIGINT NOT NULL,
    item_id  TEXT NOT NULL REFERENCES items (item_id),
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT reservation_lines_item_once UNIQUE (order_id, item_id),
    CONSTRAINT reservation_lines_quantity_positive CHECK (quantity > 0)
);

-- +goose Down
DROP TABLE reservation_lines;
DROP INDEX reservations_status_expire;
DROP TABLE reservations;
DROP TABLE items;
