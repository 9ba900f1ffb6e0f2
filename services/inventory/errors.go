package inventory

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the inventory's errors.
const Domain = "inventory.switchboard.dev"

// ErrorInfo reasons of the inventory's errors, for clients to switch on.
const (
	ReasonItemNotFound        = "ITEM_NOT_FOUND"
	ReasonReservationNotFound = "RESERVATION_NOT_FOUND"
	ReasonOutOfStock          = "OUT_OF_STOCK"
	ReasonReservationMismatch = "RESERVATION_MISMATCH"
	// ReasonReservationStatePrefix is followed by the status that forbids
	// the operation: RESERVATION_COMMITTED, RESERVATION_RELEASED,
	// RESERVATION_EXPIRED.
	ReasonReservationStatePrefix = "RESERVATION_"
	ReasonTooManyItems           = "TOO_MANY_ITEMS"
	ReasonTooManySubscriptions   = "TOO_MANY_SUBSCRIPTIONS"
	ReasonSubscriberTooSlow      = "SUBSCRIBER_TOO_SLOW"
)

// Types of the PreconditionFailure violations the inventory reports.
const (
	// ViolationStock: an item has fewer units available than requested;
	// the subject is "items/<id>".
	ViolationStock = "STOCK"
	// ViolationStatus: a reservation's status forbids the operation; the
	// subject is "reservations/<order id>".
	ViolationStatus = "STATUS"
)

// ItemNotFoundError says an item does not exist.
type ItemNotFoundError struct{ ItemID string }

func (e *ItemNotFoundError) Error() string { return fmt.Sprintf("item %q not found", e.ItemID) }

// ReservationNotFoundError says an order has no reservation.
type ReservationNotFoundError struct{ OrderID string }

func (e *ReservationNotFoundError) Error() string {
	return fmt.Sprintf("no reservation for order %q", e.OrderID)
}

// Shortage is one item a reservation could not get enough of.
type Shortage struct {
	ItemID    string
	Requested int64
	Available int64
}

// InsufficientStockError lists every item of a reservation without enough
// stock available.
type InsufficientStockError struct{ Shortages []Shortage }

func (e *InsufficientStockError) Error() string {
	return fmt.Sprintf("not enough stock for %d item(s)", len(e.Shortages))
}

// ReservationStateError says a reservation's status forbids an operation.
type ReservationStateError struct {
	OrderID string
	// Status is the reservation's status.
	Status Status
	// Op is the operation refused: "commit" or "release".
	Op string
}

func (e *ReservationStateError) Error() string {
	return fmt.Sprintf("cannot %s the reservation of order %q: it is %s", e.Op, e.OrderID, e.Status)
}

// ReservationMismatchError says Reserve was repeated for an order with
// other lines than its existing reservation.
type ReservationMismatchError struct{ OrderID string }

func (e *ReservationMismatchError) Error() string {
	return fmt.Sprintf("order %q already has a reservation with other lines", e.OrderID)
}

// itemName and reservationName are the resource names used in details.
func itemName(id string) string        { return "items/" + id }
func reservationName(id string) string { return "reservations/" + id }

// errorAs reports whether err is or wraps a T; asError returns that T.
func errorAs[T error](err error) bool {
	var t T
	return errors.As(err, &t)
}

func asError[T error](err error) (t T) {
	errors.As(err, &t)
	return t
}

// message returns the text of the T in err, without the wrapping that
// names internal steps: the typed errors' texts are written for callers.
func message[T error](err error) string { return asError[T](err).Error() }

func details(m ...proto.Message) []proto.Message { return m }

// newTable returns the one table that maps the inventory's domain errors to
// gRPC statuses at the edge of its gRPC layer.
func newTable(logger *slog.Logger) *status.Table {
	t := &status.Table{
		Domain: Domain,
		Logger: logger,
		Rules: []status.Rule{
			{
				As: errorAs[*ItemNotFoundError], Code: codes.NotFound, Reason: ReasonItemNotFound,
				Message: message[*ItemNotFoundError],
				Details: func(err error) []proto.Message {
					return details(&errdetails.ResourceInfo{
						ResourceType: "item", ResourceName: itemName(asError[*ItemNotFoundError](err).ItemID),
						Description: "no item with this id",
					})
				},
			},
			{
				As: errorAs[*ReservationNotFoundError], Code: codes.NotFound, Reason: ReasonReservationNotFound,
				Message: message[*ReservationNotFoundError],
				Details: func(err error) []proto.Message {
					return details(&errdetails.ResourceInfo{
						ResourceType: "reservation", ResourceName: reservationName(asError[*ReservationNotFoundError](err).OrderID),
						Description: "no reservation for this order",
					})
				},
			},
			{
				As: errorAs[*InsufficientStockError], Code: codes.FailedPrecondition, Reason: ReasonOutOfStock,
				Message: message[*InsufficientStockError],
				Details: func(err error) []proto.Message {
					e := asError[*InsufficientStockError](err)
					pf := &errdetails.PreconditionFailure{}
					for _, s := range e.Shortages {
						pf.Violations = append(pf.Violations, status.PreconditionViolation(ViolationStock, itemName(s.ItemID),
							fmt.Sprintf("%d requested, %d available", s.Requested, s.Available)))
					}
					return details(pf)
				},
			},
			{
				As: errorAs[*ReservationMismatchError], Code: codes.AlreadyExists, Reason: ReasonReservationMismatch,
				Message: message[*ReservationMismatchError],
				Details: func(err error) []proto.Message {
					return details(&errdetails.ResourceInfo{
						ResourceType: "reservation", ResourceName: reservationName(asError[*ReservationMismatchError](err).OrderID),
						Description: "repeat Reserve with the same lines, or use another order id",
					})
				},
			},
		},
	}
	for _, st := range []Status{StatusCommitted, StatusReleased, StatusExpired, StatusHeld} {
		t.Rules = append(t.Rules, stateRule(st))
	}
	return t
}

// stateRule maps a *ReservationStateError with status st to
// FAILED_PRECONDITION with reason RESERVATION_<st>.
func stateRule(st Status) status.Rule {
	return status.Rule{
		As: func(err error) bool {
			var e *ReservationStateError
			return errors.As(err, &e) && e.Status == st
		},
		Code:    codes.FailedPrecondition,
		Reason:  ReasonReservationStatePrefix + string(st),
		Message: message[*ReservationStateError],
		Details: func(err error) []proto.Message {
			e := asError[*ReservationStateError](err)
			return details(&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
				status.PreconditionViolation(ViolationStatus, reservationName(e.OrderID),
					fmt.Sprintf("reservation is %s; %s needs HELD", e.Status, e.Op)),
			}})
		},
	}
}

// errTooManyItems ends a RecordItems stream longer than limit messages.
func errTooManyItems(limit int) error {
	return status.InvalidArgument(Domain, ReasonTooManyItems,
		fmt.Sprintf("at most %d items per RecordItems call: split the import", limit),
		status.FieldViolation("item_id", fmt.Sprintf("at most %d messages per stream", limit)))
}

// errTooManySubscriptions ends a Subscribe stream that follows more than
// MaxSubscriptions ids.
var errTooManySubscriptions = status.InvalidArgument(Domain, ReasonTooManySubscriptions,
	fmt.Sprintf("at most %d item ids per Subscribe stream", MaxSubscriptions),
	status.FieldViolation("subscribe_item_ids", fmt.Sprintf("at most %d ids followed at once", MaxSubscriptions)))

// errTooSlow ends a subscriber that keeps falling behind.
func errTooSlow(retryAfter time.Duration) error {
	return status.ResourceExhausted(Domain, ReasonSubscriberTooSlow,
		"subscriber reads too slowly and stays behind the stock changes", retryAfter)
}
