package payment

import (
	"time"

	"github.com/google/uuid"
)

// AccountKind says what an account is in the chart of accounts.
type AccountKind string

// The kinds of account. See the package documentation for the chart of
// accounts.
const (
	// KindCustomer is an owner's account; its available money and its held
	// money never go negative.
	KindCustomer AccountKind = "customer"
	// KindHouse, one per currency, funds opening credits; its balance is
	// minus the credits it has given.
	KindHouse AccountKind = "house"
	// KindHolds, one per currency, holds the money of open authorizations.
	KindHolds AccountKind = "holds"
	// KindRevenue, one per currency, receives captured money and pays
	// refunds.
	KindRevenue AccountKind = "revenue"
)

// SystemOwnerPrefix starts the owner id of every system account
// ("system:house", "system:holds", "system:revenue"). Customer owner ids
// may not start with it.
const SystemOwnerPrefix = "system:"

// systemNamespace is the UUID namespace of the system accounts' ids, which
// are name-based (UUIDv5) so that every replica derives the same id for,
// say, the USD holds account without a lookup.
var systemNamespace = uuid.MustParse("6f0c2a4e-3c55-4b43-9a57-0d2b8f1e7c11")

// SystemAccountID returns the id of the system account of kind in
// currency.
func SystemAccountID(kind AccountKind, currency string) string {
	return uuid.NewSHA1(systemNamespace, []byte(string(kind)+"/"+currency)).String()
}

// Account is an account and its balances, in minor units of its currency.
type Account struct {
	// ID is the account id (a UUID).
	ID string `json:"id"`
	// Kind says whether it is a customer or a system account.
	Kind AccountKind `json:"kind"`
	// OwnerID is the user id of a customer account, SystemOwnerPrefix plus
	// the kind for a system account.
	OwnerID string `json:"owner_id"`
	// Currency is the ISO 4217 code of every amount on the account.
	Currency string `json:"currency"`
	// Available is the sum of the account's ledger entries: the money that
	// can be authorized.
	Available int64 `json:"available"`
	// Held is the money of the account's open authorizations, which sits
	// in the holds account.
	Held int64 `json:"held"`
	// CreateTime is when the account was opened.
	CreateTime time.Time `json:"create_time"`
}

// Balance returns the account's total money, holds included.
func (a Account) Balance() int64 { return a.Available + a.Held }

// AuthorizationStatus is where an authorization is in its life.
type AuthorizationStatus string

// The statuses of an authorization. AUTHORIZED goes to CAPTURED or VOIDED;
// CAPTURED and PARTIALLY_REFUNDED go to PARTIALLY_REFUNDED or REFUNDED;
// VOIDED and REFUNDED are final.
const (
	StatusAuthorized        AuthorizationStatus = "AUTHORIZED"
	StatusCaptured          AuthorizationStatus = "CAPTURED"
	StatusVoided            AuthorizationStatus = "VOIDED"
	StatusPartiallyRefunded AuthorizationStatus = "PARTIALLY_REFUNDED"
	StatusRefunded          AuthorizationStatus = "REFUNDED"
)

// Authorization is a hold on a customer account and what became of it.
type Authorization struct {
	// ID is the authorization id (a UUID).
	ID string `json:"id"`
	// AccountID is the customer account the money is held on.
	AccountID string `json:"account_id"`
	// OrderID is the order it pays for, or "".
	OrderID string `json:"order_id"`
	// Currency is the account's currency.
	Currency string `json:"currency"`
	// Amount is the amount authorized.
	Amount int64 `json:"amount"`
	// Captured is the amount captured: 0 until captured.
	Captured int64 `json:"captured"`
	// Refunded is the amount refunded so far, at most Captured.
	Refunded int64 `json:"refunded"`
	// Status is the current status.
	Status AuthorizationStatus `json:"status"`
	// CreateTime is when the authorization was made.
	CreateTime time.Time `json:"create_time"`
	// UpdateTime is when it last changed.
	UpdateTime time.Time `json:"update_time"`
}

// subject is what the authorization's events are about: its order, or
// itself when it pays for no order.
func (a Authorization) subject() string {
	if a.OrderID != "" {
		return a.OrderID
	}
	return a.ID
}

// Refund is the result of a refund: the authorization after it, and the id
// of the refund's ledger transaction.
type Refund struct {
	// Authorization is the authorization after the refund.
	Authorization Authorization `json:"authorization"`
	// RefundID is the id of the refund's ledger transaction.
	RefundID string `json:"refund_id"`
	// Amount is the amount this refund returned.
	Amount int64 `json:"amount"`
}

// EntryKind says which operation wrote a ledger entry.
type EntryKind string

// The kinds of ledger entry.
const (
	EntryOpeningCredit EntryKind = "OPENING_CREDIT"
	EntryHold          EntryKind = "HOLD"
	EntryRelease       EntryKind = "RELEASE"
	EntryCapture       EntryKind = "CAPTURE"
	EntryRefund        EntryKind = "REFUND"
)

// Entry is one side of a ledger transaction. The entries of a transaction
// sum to zero.
type Entry struct {
	// ID is the entry id (a UUID).
	ID string
	// TransactionID is the ledger transaction the entry belongs to.
	TransactionID string
	// AccountID is the account the entry is posted to.
	AccountID string
	// Sequence is the entry's position in the account's ledger, from 1.
	Sequence int64
	// Amount is signed: positive credits the account, negative debits it.
	Amount int64
	// Currency is the account's currency.
	Currency string
	// Kind is the operation that wrote the entry.
	Kind EntryKind
	// AuthorizationID is the authorization the entry belongs to, or "".
	AuthorizationID string
	// CreateTime is when the entry was written.
	CreateTime time.Time
}

// Idempotency identifies a mutating call for replay: the client's key and
// a hash of the whole request. The same key with the same hash returns the
// stored result; with another hash it fails with ErrIdempotencyKeyReused.
type Idempotency struct {
	// Key is the client's idempotency key.
	Key string
	// RequestHash is a hash of the request, hex.
	RequestHash string
}

// OpenAccountParams are the arguments of Store.OpenAccount.
type OpenAccountParams struct {
	// OwnerID owns the account.
	OwnerID string
	// Currency is the account's currency.
	Currency string
	// OpeningCredit, when positive, is moved from the house account.
	OpeningCredit int64
}

// AuthorizeParams are the arguments of Store.Authorize.
type AuthorizeParams struct {
	// AccountID is the customer account to hold money on.
	AccountID string
	// OrderID is the order the money is for, or "".
	OrderID string
	// Amount is positive, in Currency.
	Amount int64
	// Currency must be the account's.
	Currency string
}

// CaptureParams are the arguments of Store.Capture.
type CaptureParams struct {
	// AuthorizationID is the authorization to capture.
	AuthorizationID string
	// Amount to take; 0 takes the whole authorized amount.
	Amount int64
	// Currency of Amount; checked when Amount is set.
	Currency string
}

// VoidParams are the arguments of Store.Void.
type VoidParams struct {
	// AuthorizationID is the authorization to void.
	AuthorizationID string
	// Reason is kept on the ledger transaction.
	Reason string
}

// RefundParams are the arguments of Store.Refund.
type RefundParams struct {
	// AuthorizationID is the authorization whose captured money to return.
	AuthorizationID string
	// Amount to return; 0 returns all that is left.
	Amount int64
	// Currency of Amount; checked when Amount is set.
	Currency string
	// Reason is kept on the ledger transaction.
	Reason string
}
