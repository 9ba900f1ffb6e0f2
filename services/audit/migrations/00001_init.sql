-- +goose Up
-- audit_head is the head of the chain: one row holding the sequence number
-- and the hash (lower-case hex) of the newest record. Appending updates it
-- first, with UPDATE ... RETURNING, so concurrent appends serialize on its
-- row lock (PostgreSQL) or on the single writer (SQLite), and each takes
-- the next number and the previous hash in its own transaction: the log is
-- numbered 1..seq without gaps, and a rolled-back append leaves no trace.
-- Before the first record, seq is 0 and hash is 32 zero bytes.
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL CHECK (seq >= 0),
    hash TEXT    NOT NULL CHECK (length(hash) = 64)
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- audit_log holds one record per event, never updated or deleted by the
-- service. payload is the marshalled switchboard.events.v1.Envelope;
-- prev_hash and hash are lower-case hex SHA-256 values, hash covering
-- prev_hash and the record's canonical encoding (see the package
-- documentation). event_us is 0 when the event carried no time.
CREATE TABLE audit_log (
    seq        BIGINT NOT NULL PRIMARY KEY CHECK (seq >= 1),
    event_id   TEXT   NOT NULL UNIQUE,
    event_type TEXT   NOT NULL,
    source     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    event_us   BIGINT NOT NULL,
    record_us  BIGINT NOT NULL,
    payload    BYTEA  NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);

-- Query filters by subject or type, in sequence order, and by event time.
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_type ON audit_log (event_type, seq);
CREATE INDEX audit_log_event_time ON audit_log (event_us, seq);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE audit_head;
