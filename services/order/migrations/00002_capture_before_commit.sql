-- +goose Up
-- The saga now captures the payment (step 5) before it commits the stock
-- (step 6); it used to commit at step 5 and capture at step 6. A saga
-- going forward at the old step 6 had committed and was about to capture:
-- it goes on at the new step 5, which captures and then commits again (the
-- commit is idempotent by order id). One at the old step 5 had not
-- committed, and the new step 5 captures before it commits, so it keeps
-- its number. Compensating sagas need no change: neither step has a
-- compensation of its own, so both numbers undo the same steps.
UPDATE orders SET saga_step = 5 WHERE saga_phase = 'forward' AND saga_step = 6;

-- +goose Down
-- The same change is safe the other way: a saga at the new step 6 had
-- captured and was about to commit; the old step 5 commits and then
-- captures again (the capture is idempotent by key).
UPDATE orders SET saga_step = 5 WHERE saga_phase = 'forward' AND saga_step = 6;
