package shipping

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the shipping service's errors.
const Domain = "shipping.switchboard.dev"

// ResourceType names shipments in ResourceInfo details.
const ResourceType = "shipment"

// Reasons in the ErrorInfo of the errors the service returns.
const (
	ReasonNotFound       = "SHIPMENT_NOT_FOUND"
	ReasonAlreadyExists  = "SHIPMENT_ALREADY_EXISTS"
	ReasonNotCancellable = "SHIPMENT_NOT_CANCELLABLE"
	ReasonCancelled      = "SHIPMENT_CANCELLED"
	ReasonTooManyStreams = "TOO_MANY_TRACK_STREAMS"
	ReasonConflict       = "CONCURRENT_UPDATE"
	ReasonShuttingDown   = "SHUTTING_DOWN"
)

// PreconditionType is the type of the PreconditionFailure violations the
// service reports: the shipment's status does not allow the call.
const PreconditionType = "SHIPMENT_STATUS"

// Sentinel errors. Typed errors below match them with errors.Is.
var (
	// ErrNotFound: no such shipment.
	ErrNotFound = errors.New("shipment not found")
	// ErrCancelled: the shipment is cancelled, so it cannot be released.
	ErrCancelled = errors.New("shipment cancelled")
	// ErrTooManyStreams: this instance already serves Config.MaxTrackStreams
	// Track streams.
	ErrTooManyStreams = errors.New("too many Track streams")
	// ErrClosed: the service was closed.
	ErrClosed = errors.New("shipping service closed")
)

// retryTrackAfter is what RESOURCE_EXHAUSTED and UNAVAILABLE ask the
// client to wait.
const retryTrackAfter = time.Second

// NotFoundError says which shipment does not exist: by ShipmentID, or by
// OrderID when ShipmentID is empty. It matches ErrNotFound.
type NotFoundError struct {
	ShipmentID string
	OrderID    string
}

func (e *NotFoundError) Error() string {
	if e.ShipmentID == "" {
		return fmt.Sprintf("no shipment for order %q", e.OrderID)
	}
	return fmt.Sprintf("shipment %q not found", e.ShipmentID)
}

// Is reports whether target is ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// MismatchError says that the order already has a shipment whose address
// or items differ from those of a repeated CreateShipment.
type MismatchError struct {
	OrderID    string
	ShipmentID string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("order %q already has shipment %q with another address or other items", e.OrderID, e.ShipmentID)
}

// NotCancellableError says that a shipment cannot be cancelled because the
// carrier has picked it up: Status is where it is.
type NotCancellableError struct {
	ShipmentID string
	Status     shippingv1.ShipmentStatus
}

func (e *NotCancellableError) Error() string {
	return fmt.Sprintf("shipment %q is %s: only a shipment not yet picked up can be cancelled", e.ShipmentID, statusName(e.Status))
}

// CancelledError says that a shipment is cancelled and will not move. It
// matches ErrCancelled.
type CancelledError struct {
	ShipmentID string
	OrderID    string
}

func (e *CancelledError) Error() string {
	return fmt.Sprintf("shipment %q of order %q is cancelled", e.ShipmentID, e.OrderID)
}

// Is reports whether target is ErrCancelled.
func (e *CancelledError) Is(target error) bool { return target == ErrCancelled }

// as returns err as a P (a pointer to a typed error) when it is one,
// wrapped or not.
func as[P interface {
	*T
	error
}, T any](err error) (P, bool) {
	var e P
	ok := errors.As(err, &e)
	return e, ok
}

// newTable returns the one table that maps the service's domain errors to
// gRPC statuses at its edge. Unmapped errors become INTERNAL and are logged
// to logger.
func newTable(logger *slog.Logger) *status.Table {
	return &status.Table{
		Domain: Domain,
		Logger: logger,
		Rules: []status.Rule{
			{
				As:      func(err error) bool { _, ok := as[*NotFoundError](err); return ok },
				Code:    codes.NotFound,
				Reason:  ReasonNotFound,
				Message: func(err error) string { e, _ := as[*NotFoundError](err); return e.Error() },
				Details: func(err error) []proto.Message {
					e, _ := as[*NotFoundError](err)
					ri := &errdetails.ResourceInfo{ResourceType: ResourceType, ResourceName: e.ShipmentID}
					if e.ShipmentID == "" {
						ri.Description = "no shipment for order " + e.OrderID
					}
					return []proto.Message{ri}
				},
			},
			{
				As:      func(err error) bool { _, ok := as[*MismatchError](err); return ok },
				Code:    codes.AlreadyExists,
				Reason:  ReasonAlreadyExists,
				Message: func(err error) string { e, _ := as[*MismatchError](err); return e.Error() },
				Details: func(err error) []proto.Message {
					e, _ := as[*MismatchError](err)
					return []proto.Message{&errdetails.ResourceInfo{
						ResourceType: ResourceType,
						ResourceName: e.ShipmentID,
						Description:  "order " + e.OrderID + " already has this shipment, with another address or other items",
					}}
				},
			},
			{
				As:      func(err error) bool { _, ok := as[*NotCancellableError](err); return ok },
				Code:    codes.FailedPrecondition,
				Reason:  ReasonNotCancellable,
				Message: func(err error) string { e, _ := as[*NotCancellableError](err); return e.Error() },
				Details: func(err error) []proto.Message {
					e, _ := as[*NotCancellableError](err)
					return []proto.Message{&errdetails.PreconditionFailure{
						Violations: []*errdetails.PreconditionFailure_Violation{status.PreconditionViolation(
							PreconditionType, "shipments/"+e.ShipmentID,
							"shipment is "+statusName(e.Status)+"; only a shipment not yet picked up can be cancelled")},
					}}
				},
			},
			{
				As:      func(err error) bool { _, ok := as[*CancelledError](err); return ok },
				Code:    codes.FailedPrecondition,
				Reason:  ReasonCancelled,
				Message: func(err error) string { e, _ := as[*CancelledError](err); return e.Error() },
				Details: func(err error) []proto.Message {
					e, _ := as[*CancelledError](err)
					return []proto.Message{&errdetails.PreconditionFailure{
						Violations: []*errdetails.PreconditionFailure_Violation{status.PreconditionViolation(
							PreconditionType, "shipments/"+e.ShipmentID, "shipment is CANCELLED")},
					}}
				},
			},
			{
				Is:      ErrTooManyStreams,
				Code:    codes.ResourceExhausted,
				Reason:  ReasonTooManyStreams,
				Message: func(error) string { return "too many Track streams open on this server; retry later" },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.RetryInfo{RetryDelay: durationpb.New(retryTrackAfter)}}
				},
			},
			{
				Is:      ErrClosed,
				Code:    codes.Unavailable,
				Reason:  ReasonShuttingDown,
				Message: func(error) string { return "shipping service is shutting down; retry" },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.RetryInfo{RetryDelay: durationpb.New(retryTrackAfter)}}
				},
			},
			{
				// A transaction that kept failing with serialization
				// failures or deadlocks after sqldb.Tx's retries.
				As:      sqldb.Retryable,
				Code:    codes.Aborted,
				Reason:  ReasonConflict,
				Message: func(error) string { return "concurrent update; retry the call" },
			},
		},
	}
}
