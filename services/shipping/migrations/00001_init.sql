-- +goose Up
-- shipments holds one row per order. Its status only moves forward along
-- CREATED -> PICKED_UP -> IN_TRANSIT -> OUT_FOR_DELIVERY -> DELIVERED, or
-- CREATED -> CANCELLED, by conditional UPDATEs on the current status.
-- last_sequence is the sequence of the newest tracking event: each status
-- change increments it in the same UPDATE and inserts that event, so the
-- events of a shipment are numbered 1..last_sequence without gaps.
-- due_us is when the carrier takes the next step; it is set only while the
-- shipment is released (ready) and not terminal.
CREATE TABLE shipments (
    shipment_id     TEXT    NOT NULL PRIMARY KEY,
    order_id        TEXT    NOT NULL UNIQUE,
    recipient       TEXT    NOT NULL,
    line1           TEXT    NOT NULL,
    line2           TEXT    NOT NULL,
    city            TEXT    NOT NULL,
    postal_code     TEXT    NOT NULL,
    country_code    TEXT    NOT NULL,
    carrier         TEXT    NOT NULL,
    tracking_number TEXT    NOT NULL UNIQUE,
    status          TEXT    NOT NULL CHECK (status IN ('CREATED', 'PICKED_UP', 'IN_TRANSIT', 'OUT_FOR_DELIVERY', 'DELIVERED', 'CANCELLED')),
    ready           BOOLEAN NOT NULL DEFAULT FALSE,
    due_us          BIGINT,
    last_sequence   INTEGER NOT NULL CHECK (last_sequence >= 1),
    create_us       BIGINT  NOT NULL,
    update_us       BIGINT  NOT NULL,
    CHECK (due_us IS NULL OR (ready AND status NOT IN ('DELIVERED', 'CANCELLED'))),
    CHECK (ready OR status IN ('CREATED', 'CANCELLED'))
);

-- The carrier's work queue: shipments with a due step, oldest first.
CREATE INDEX shipments_due ON shipments (due_us) WHERE due_us IS NOT NULL;

-- shipment_items are the lines of a shipment, in the order given.
CREATE TABLE shipment_items (
    shipment_id TEXT    NOT NULL REFERENCES shipments (shipment_id) ON DELETE CASCADE,
    position    INTEGER NOT NULL CHECK (position >= 0),
    item_id     TEXT    NOT NULL,
    quantity    BIGINT  NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    PRIMARY KEY (shipment_id, position),
    UNIQUE (shipment_id, item_id)
);

-- tracking_events is the history of a shipment; the primary key makes a
-- sequence number impossible to use twice.
CREATE TABLE tracking_events (
    shipment_id TEXT    NOT NULL REFERENCES shipments (shipment_id) ON DELETE CASCADE,
    sequence    INTEGER NOT NULL CHECK (sequence >= 1),
    status      TEXT    NOT NULL CHECK (status IN ('CREATED', 'PICKED_UP', 'IN_TRANSIT', 'OUT_FOR_DELIVERY', 'DELIVERED', 'CANCELLED')),
    description TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    event_us    BIGINT  NOT NULL,
    PRIMARY KEY (shipment_id, sequence)
);

-- +goose Down
DROP TABLE tracking_events;
DROP TABLE shipment_items;
DROP TABLE shipments;
