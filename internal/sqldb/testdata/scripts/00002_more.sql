-- +goose Up
-- +goose StatementBegin
INSERT INTO items (id, name, stock) VALUES (2, 'nut', 20);
INSERT INTO items (id, name, stock) VALUES (3, 'washer', 30);
UPDATE items SET stock = stock + 1 WHERE id = 1;
-- +goose StatementEnd

-- +goose Down
DELETE FROM items WHERE id IN (2, 3);
