-- +goose Up
-- notify_users is what notify knows of each user, from UserRegistered:
-- where to send their mail.
CREATE TABLE notify_users (
    user_id      TEXT   NOT NULL PRIMARY KEY,
    email        TEXT   NOT NULL,
    display_name TEXT   NOT NULL,
    update_us    BIGINT NOT NULL
);

-- notify_orders maps an order to the user who placed it, from OrderPlaced,
-- OrderConfirmed and OrderCancelled, for the shipment events, which name
-- the order but not the user.
CREATE TABLE notify_orders (
    order_id TEXT NOT NULL PRIMARY KEY,
    user_id  TEXT NOT NULL
);

-- notifications holds every message, rendered, from the moment the event
-- that caused it is handled: one per event at most (event_id is UNIQUE).
-- A PENDING row waits for the sender loop, which claims it by moving
-- next_attempt_us past the send timeout and counting the attempt, and
-- then marks it SENT or FAILED (finish_us set), or PENDING again with a
-- later next_attempt_us. Only the claimer of an attempt may finish it:
-- every change is conditional on status = 'PENDING' and attempts.
CREATE TABLE notifications (
    notification_id TEXT    NOT NULL PRIMARY KEY,
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    recipient_name  TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    template        TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    error           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_us BIGINT,
    create_us       BIGINT  NOT NULL,
    finish_us       BIGINT,
    CHECK ((status = 'PENDING') = (next_attempt_us IS NOT NULL)),
    CHECK ((status = 'PENDING') = (finish_us IS NULL))
);

-- The sender's work queue: pending notifications, the longest due first.
CREATE INDEX notifications_due ON notifications (next_attempt_us) WHERE status = 'PENDING';
-- ListNotifications: finished notifications newest first, per user or all.
CREATE INDEX notifications_user ON notifications (user_id, finish_us, notification_id) WHERE finish_us IS NOT NULL;
CREATE INDEX notifications_finished ON notifications (finish_us, notification_id) WHERE finish_us IS NOT NULL;

-- +goose Down
DROP TABLE notifications;
DROP TABLE notify_orders;
DROP TABLE notify_users;
