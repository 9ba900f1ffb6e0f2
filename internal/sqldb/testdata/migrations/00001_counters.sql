-- +goose Up
CREATE TABLE counters (
    name       TEXT PRIMARY KEY,
    value      BIGINT NOT NULL,
    updated_us BIGINT NOT NULL
);

-- +goose Down
DROP TABLE counters;
