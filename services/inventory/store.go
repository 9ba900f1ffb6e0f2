package inventory

import (
	"context"
	"embed"
	"time"
)

// Migrations are the goose migrations of the inventory's database, in the
// directory "migrations". Open applies them.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Status is where a reservation is in its life.
type Status string

// The statuses of a reservation. HELD is the only one that holds stock; the
// others are final.
const (
	StatusHeld      Status = "HELD"
	StatusCommitted Status = "COMMITTED"
	StatusReleased  Status = "RELEASED"
	StatusExpired   Status = "EXPIRED"
)

// Item is a product with its stock.
type Item struct {
	// ID is the stock keeping unit.
	ID string
	// Name and Description are shown to shoppers.
	Name        string
	Description string
	// PriceMinor is the price of one unit in minor units of Currency.
	PriceMinor int64
	// Currency is an ISO 4217 code.
	Currency string
	// OnHand counts the units in stock, reserved ones included.
	OnHand int64
	// Reserved counts the units held by reservations.
	Reserved int64
	// Version increases by one with every change to the item.
	Version int64
	// Updated is when the item last changed.
	Updated time.Time
}

// Level returns the item's stock level.
func (i Item) Level() Level {
	return Level{ItemID: i.ID, OnHand: i.OnHand, Reserved: i.Reserved, Version: i.Version, Updated: i.Updated}
}

// Level is the stock of one item at one version: what Subscribe streams.
type Level struct {
	ItemID   string
	OnHand   int64
	Reserved int64
	// Version is the item's version; 0 means the item does not exist.
	Version int64
	Updated time.Time
}

// Available returns the units that can still be reserved.
func (l Level) Available() int64 { return l.OnHand - l.Reserved }

// Line is a quantity of one item in a reservation.
type Line struct {
	ItemID   string
	Quantity int64
}

// Reservation is stock held for one order.
type Reservation struct {
	// OrderID is the order and the reservation's key.
	OrderID string
	// Lines are the items held, in the order of the request.
	Lines []Line
	// Status is where the reservation is in its life.
	Status Status
	// Created is when it was made; Expires is when a held reservation is
	// released by the expiry loop.
	Created time.Time
	Expires time.Time
}

// ItemInput is one item of a bulk import or a seed: it creates the item or
// updates it. Empty Name and Description, and HasPrice false, keep the
// current values of an existing item; a new item needs a name and a price.
type ItemInput struct {
	ID          string
	Name        string
	Description string
	HasPrice    bool
	PriceMinor  int64
	Currency    string
	// Quantity is the new number of units on hand (a count, not a delta).
	Quantity int64
}

// Outcome is what a bulk import did with one item.
type Outcome int

// The outcomes of an imported item.
const (
	Created Outcome = iota + 1
	Updated
	Rejected
)

// Reasons a store rejects an imported item for, as RecordItemError reasons.
const (
	ReasonNameRequired  = "NAME_REQUIRED"
	ReasonPriceRequired = "PRICE_REQUIRED"
	ReasonBelowReserved = "BELOW_RESERVED"
)

// RecordResult is the outcome of one imported item; Field, Reason and
// Description say why a rejected item was rejected.
type RecordResult struct {
	Outcome     Outcome
	Field       string
	Reason      string
	Description string
}

// Store keeps items, stock and reservations. Every invariant is enforced by
// the database itself, with conditional updates whose row counts are
// checked, so that concurrent callers (in this process or in other
// replicas) can never drive stock negative or change a reservation that has
// left HELD:
//
//   - 0 <= reserved <= on_hand for every item;
//   - a reservation holds all its lines or none;
//   - one reservation per order id;
//   - a reservation leaves HELD exactly once, and gives its stock back or
//     sells it exactly once.
//
// Methods that change stock return the levels they committed, in item id
// order, so that the caller can publish them; they are returned even with
// an error when the change was committed nonetheless (see Commit). An
// implementation is safe for concurrent use. Times are passed in, so that
// callers and tests control the clock.
type Store interface {
	// Item returns one item, or an *ItemNotFoundError.
	Item(ctx context.Context, id string) (Item, error)
	// Items returns up to limit items whose id sorts after after, in id
	// order.
	Items(ctx context.Context, after string, limit int) ([]Item, error)
	// Levels returns the levels of the items of ids that exist, in no
	// particular order.
	Levels(ctx context.Context, ids []string) ([]Level, error)

	// RecordItems creates or updates items in one transaction, and returns
	// one result per input. An update whose quantity is below the units
	// reserved, or a new item without name or price, is rejected without
	// failing the others.
	RecordItems(ctx context.Context, items []ItemInput, now time.Time) ([]RecordResult, []Level, error)
	// CreateMissing creates the items that do not exist yet, in one
	// transaction, and leaves the others untouched. Every input must have a
	// name and a price.
	CreateMissing(ctx context.Context, items []ItemInput, now time.Time) (created int, levels []Level, err error)

	// Reserve holds lines (each item at most once) for orderID until
	// expires: all lines or none. When orderID already has a reservation it
	// returns it as it is, whatever its status, and changes nothing; a
	// *ReservationMismatchError if its lines differ. Errors: an
	// *ItemNotFoundError for an unknown item, an *InsufficientStockError
	// naming every short item.
	Reserve(ctx context.Context, orderID string, lines []Line, now, expires time.Time) (Reservation, []Level, error)
	// Release gives a held reservation's stock back (status RELEASED). A
	// released or expired reservation is returned as it is; a committed one
	// gives a *ReservationStateError; an unknown one a
	// *ReservationNotFoundError.
	Release(ctx context.Context, orderID, reason string, now time.Time) (Reservation, []Level, error)
	// Commit sells a held reservation's stock (status COMMITTED): on_hand
	// and reserved both drop. A committed reservation is returned as it is;
	// a released or expired one gives a *ReservationStateError. A held
	// reservation past its expiry that the expiry loop has not reached yet
	// is expired on the spot (committed, with its levels) and gives a
	// *ReservationStateError with status EXPIRED.
	Commit(ctx context.Context, orderID string, now time.Time) (Reservation, []Level, error)
	// ExpireDue expires up to limit held reservations whose expiry is not
	// after now, oldest first, and gives their stock back, in one
	// transaction. It returns how many it expired.
	ExpireDue(ctx context.Context, now time.Time, limit int) (expired int, levels []Level, err error)
}
