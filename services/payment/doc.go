// Package payment is the payment service of the reference shop: it owns
// customer accounts, authorizations (holds) and a double-entry ledger, and
// serves switchboard.payment.v1.PaymentService. Money is int64 minor units
// of an ISO 4217 currency; no floating point touches it.
//
// # Chart of accounts
//
// Every account has one currency. Per currency there are three system
// accounts, made on the first OpenAccount in that currency, with ids
// derived from kind and currency ([SystemAccountID]) and owner ids
// "system:house", "system:holds" and "system:revenue":
//
//   - house funds opening credits; its balance is minus the credits it gave;
//   - holds holds the money of open authorizations: the sum of every
//     customer's held money;
//   - revenue receives captured money and pays refunds: captured minus
//     refunded, over all authorizations.
//
// A customer account (one per owner and currency) has available money,
// the sum of its own ledger entries, and held money, its share of the
// holds account. GetAccount reports balance = available + held.
//
// The operations post these transactions (each one ledger transaction,
// its entries summing to zero):
//
//	OpenAccount(credit c)   customer +c, house -c                 OPENING_CREDIT
//	Authorize(a)            customer -a, holds +a                  HOLD   (held += a)
//	Capture(k of a)         holds -k, revenue +k                   CAPTURE (held -= a)
//	                        holds -(a-k), customer +(a-k)          RELEASE (when k < a)
//	Void                    holds -a, customer +a                  RELEASE (held -= a)
//	Refund(r)               revenue -r, customer +r                REFUND
//
// # Invariants, and what enforces them
//
//   - The entries of every transaction, and so of the whole ledger, sum to
//     zero: a transaction's legs are checked to sum to zero before anything
//     is written, and its entries are written by one INSERT in the same
//     database transaction as the balances they move.
//   - An account's available money is the sum of its entries: each entry's
//     amount is added by the UPDATE that also numbers the entry.
//   - A customer's available and held money never go negative: each change
//     is a conditional UPDATE (available + delta >= 0) whose row count is
//     checked, never a read followed by a write, and CHECK constraints on
//     the table back it up.
//   - Captured <= authorized and refunded <= captured: the conditional
//     UPDATEs of authorizations, and CHECK constraints.
//   - An authorization moves AUTHORIZED -> CAPTURED | VOIDED, CAPTURED ->
//     PARTIALLY_REFUNDED | REFUNDED, PARTIALLY_REFUNDED -> itself |
//     REFUNDED; VOIDED and REFUNDED are final. Each transition is an UPDATE
//     ... WHERE status IN (the allowed ones); no row means the transition
//     was refused, and only then is the row read to explain why.
//   - One customer account per owner and currency: a unique constraint.
//   - Each account's entries are numbered 1, 2, ... without gaps: the
//     sequence comes from the account row's UPDATE ... RETURNING, and
//     (account_id, sequence) is unique.
//
// # Idempotency
//
// Every mutating call carries an idempotency key, scoped per method (so a
// saga may key every step of one order with the order id). The first call
// with a key claims it by inserting a row holding a hash of the whole
// request, in the same transaction as the call's effect; on success the
// response is stored in that row before commit. A later call with the same
// key and the same request returns the stored response, identical to the
// first, and moves no money; concurrent calls with one key wait on the
// key's unique index and then read the stored response. The same key with
// a different request is INVALID_ARGUMENT with a BadRequest violation of
// idempotency_key (reason IDEMPOTENCY_KEY_REUSED): it is a client bug that
// no retry fixes, which ABORTED would suggest. A call that fails stores
// nothing, so it may be retried with the same key (an Authorize refused
// for want of funds may succeed once money arrives). Keys are remembered
// for Config.IdempotencyRetention (7 days by default) and then pruned.
//
// # Concurrency
//
// On PostgreSQL transactions run at READ COMMITTED; the conditional
// UPDATEs take the row locks that order concurrent calls, always in the
// same order (idempotency key, authorization, customer account, then the
// house, holds and revenue accounts), so they cannot deadlock, and
// sqldb.DB.Tx retries serialization failures and deadlocks anyway. On
// SQLite transactions are serialized. Since every movement updates the
// currency's holds or revenue row, movements in one currency are
// serialized on that row for the length of a short transaction.
//
// # Errors
//
// Handlers map domain errors once, with one status.Table (domain
// payment.switchboard.dev): not enough money is FAILED_PRECONDITION with a
// PreconditionFailure of type FUNDS and subject accounts/<id>; a call the
// authorization's status does not allow (void a captured one) is
// FAILED_PRECONDITION of type STATUS, and too large a capture or refund of
// type AMOUNT, both with subject authorizations/<id>; unknown ids are
// NOT_FOUND with a ResourceInfo; a second account for an owner and
// currency is ALREADY_EXISTS with a ResourceInfo naming the existing
// account; an amount in another currency than the account's is
// INVALID_ARGUMENT with a BadRequest violation of amount.currency_code; a
// user reading someone else's account is PERMISSION_DENIED.
package payment
