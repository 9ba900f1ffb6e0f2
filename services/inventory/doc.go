// Package inventory is the inventory service of the reference shop
// (switchboard.inventory.v1.InventoryService): it owns the catalogue of
// items, their stock, and the reservations orders hold on it.
//
// # Invariants
//
// The database enforces them, never a read followed by a write:
//
//   - Stock never goes negative: 0 <= reserved <= on_hand for every item,
//     so available = on_hand - reserved is never negative. Reserving is one
//     conditional UPDATE per line (... WHERE on_hand - reserved >= q)
//     whose matched row decides; CHECK constraints back it up.
//   - A reservation holds all its lines or none: its lines are taken in one
//     transaction, rolled back as a whole when one is short.
//   - One reservation per order id (the primary key): Reserve is idempotent
//     by order id, and a concurrent repeat waits for the first and returns
//     its reservation.
//   - A reservation leaves HELD once: Release, CommitReservation and the
//     expiry loop each move it with a conditional UPDATE (... WHERE status
//     = 'HELD') and only the one that matched touches the stock, so stock is
//     given back or sold exactly once.
//   - An imported quantity is never below the units reserved (... WHERE
//     reserved <= q).
//
// # Life of a reservation
//
//	Reserve ──▶ HELD ──CommitReservation──▶ COMMITTED  (on_hand -= q, reserved -= q)
//	             │ ├────Release───────────▶ RELEASED   (reserved -= q)
//	             │ └────expiry loop───────▶ EXPIRED    (reserved -= q)
//
// Repeating an operation that already happened returns the reservation as
// it is; committing a released or expired reservation, or releasing a
// committed one, fails with FAILED_PRECONDITION. A held reservation past
// its expiry that the loop has not reached yet cannot be committed: the
// commit expires it on the spot.
//
// # Live levels
//
// Every stock change this process commits (Reserve, Release,
// CommitReservation, expiry, RecordItems, Seed) is published, after its
// transaction commits, to an in-process hub that fans it out to Subscribe
// streams through bounded queues without ever blocking the publisher. The
// hub sees the changes of this process only: with several replicas, a
// subscriber sees the changes made through its own replica (and fresh
// snapshots on every subscribe or resync).
package inventory
