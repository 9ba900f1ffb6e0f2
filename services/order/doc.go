// Package order is the order service (switchboard.order.v1.OrderService):
// it owns orders and runs the saga that places one across inventory,
// payment and shipping, which it calls only through their generated gRPC
// clients (Config.Inventory, Payment, Shipping).
//
// # The saga
//
// PlaceOrder stores the order PENDING, then a saga runs these steps, each
// one idempotent, each attempt bounded by Config.StepTimeout on a
// background context (never the caller's):
//
//  1. price: inventory.GetItem for every line; the server prices the
//     order and ignores client prices; all lines share one currency;
//  2. reserve: inventory.Reserve (idempotent by order id) → STOCK_RESERVED;
//  3. authorize: payment.GetAccount by owner (the user) and currency, then
//     payment.Authorize with key "<order id>:authorize" → PAYMENT_AUTHORIZED;
//  4. ship: shipping.CreateShipment (idempotent by order id) →
//     SHIPMENT_CREATED;
//  5. capture: payment.Capture with key "<order id>:capture";
//  6. commit: inventory.CommitReservation → CONFIRMED;
//  7. release: Config.OnConfirmed, which releases the shipment for pickup
//     (the shipping API has no call for it).
//
// The money is taken before the stock is sold because only the sale
// cannot be undone: inventory has no call to return committed stock
// (Release refuses a committed reservation), while captured money can be
// refunded. So every step before the commit has a compensation, and the
// commit is the last step that can fail.
//
// A step refused for a business reason (FAILED_PRECONDITION: not enough
// stock or funds; an unknown item; no account in the currency; a
// reservation expired before the commit) did not happen: the order turns
// CANCELLING with the reason at once and the steps before it are
// compensated in reverse. A transient failure (UNAVAILABLE,
// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED) is retried with jittered
// exponential backoff up to Config.MaxAttempts; then, like any other
// failure, the step may have happened and is compensated too. The
// compensations, in reverse: cancel the shipment, void the payment (or
// refund it once captured, keys "<order id>:void" and ":refund"), release
// the stock. A compensation whose forward step's answer was lost learns
// the id it needs by repeating that idempotent step (CreateShipment by
// order id, Authorize by key). Compensations never give up: one that keeps
// failing is retried by recovery every Config.RetryLater. When all are
// done the order is CANCELLED.
//
// A commit that fails without a refusal may still have sold the stock, so
// before compensating the saga settles it with inventory.Release: released
// (or already released or expired), the stock is back and the earlier
// steps are compensated; refused because the reservation is committed, the
// sale happened and the order is CONFIRMED; failing too, the saga waits at
// the commit and recovery repeats it after Config.RetryLater. Thus the
// saga never cancels an order whose stock it sold: a cancelled order's
// stock and money are both given back. Only CancelOrder, once the commit
// is under way or done (a CONFIRMED order), leaves the stock sold while
// the payment is refunded.
//
// # Persistence and recovery
//
// The saga's state (phase and step), the ids it obtained (account,
// authorization, shipment) and the status are persisted after every step,
// each as a conditional UPDATE fenced by the saga's lease and its current
// phase and step. A saga is driven by the replica holding its lease
// (lease_owner, lease_until), renewed before every attempt and claimed
// with a conditional UPDATE, so of two replicas only one drives a saga at
// a time. The recovery loop (started by Open, stopped by Close, every
// Config.RecoveryInterval) resumes unfinished sagas whose lease is free or
// expired, such as those of a crashed replica: every step is idempotent,
// so repeating the step that was in flight is safe.
//
// # Invariants, enforced by the database
//
//   - One order per user and idempotency key: UNIQUE (user_id,
//     idempotency_key) with INSERT ... ON CONFLICT DO NOTHING; concurrent
//     duplicates get the same order, and only the inserting call starts its
//     saga.
//   - One driver per saga: the lease is taken by a conditional UPDATE (free,
//     expired or already ours) and every saga write requires it.
//   - Status moves only along the saga: each change is a conditional UPDATE
//     on the expected phase, step or statuses, with its row count checked;
//     a cancel and a saga step racing cannot both win.
//   - Every status change is numbered (status_seq) and recorded in
//     order_events in the same transaction (primary key (order_id, seq)),
//     which WatchOrder streams from, so no change is missed.
//
// # API behaviour
//
// Orders belong to the user of the call (identity.UserFrom); another
// user's order is NOT_FOUND, never PERMISSION_DENIED. The operator service
// may read all orders with GetOrder and ListOrders. PlaceOrder returns the
// order once the saga is settled or shortly before the call's deadline; a
// business failure is returned as the order, CANCELLED with its
// cancel_reason (not as an error: the order exists and a retry with the
// same key must give the same answer). WatchOrder streams the current
// state and then every status change, until DELIVERED or CANCELLED.
// ShipmentStatusChanged moves CONFIRMED orders to SHIPPED and DELIVERED
// as the shipping events arrive.
package order
