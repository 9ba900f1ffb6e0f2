-- +goose Up
CREATE TABLE items (
    id    BIGINT PRIMARY KEY,
    name  TEXT NOT NULL,
    stock BIGINT NOT NULL
);
CREATE TABLE item_log (
    item_id BIGINT NOT NULL,
    stock   BIGINT NOT NULL
);
-- +goose StatementBegin
CREATE TRIGGER items_log AFTER UPDATE OF stock ON items
BEGIN
    INSERT INTO item_log (item_id, stock) VALUES (NEW.id, NEW.stock);
    UPDATE items SET name = name || ';' WHERE id = NEW.id;
END;
-- +goose StatementEnd
INSERT INTO items (id, name, stock) VALUES (1, 'bolt', 10);

-- +goose Down
DROP TRIGGER items_log;
DROP TABLE item_log;
DROP TABLE items;
