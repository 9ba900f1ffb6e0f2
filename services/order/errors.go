package order

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the order service's errors.
const Domain = "order.switchboard.dev"

// Reasons of the order service's errors, in their ErrorInfo.
const (
	ReasonOrderNotFound     = "ORDER_NOT_FOUND"
	ReasonOrderShipped      = "ORDER_SHIPPED"
	ReasonKeyReused         = "IDEMPOTENCY_KEY_REUSED"
	ReasonInvalidPageToken  = "INVALID_PAGE_TOKEN"
	ReasonUserRequired      = "USER_REQUIRED"
	ReasonConflict          = "CONFLICT"
	ReasonDependency        = "DEPENDENCY_UNAVAILABLE"
	ReasonClosing           = "SERVICE_CLOSING"
	ReasonInvalidTransition = "INVALID_TRANSITION"
)

// ViolationStatus is the PreconditionFailure violation type of an order
// whose status forbids the call; its subject is "orders/<id>".
const ViolationStatus = "STATUS"

const (
	retryAfterUnavailable = time.Second
	resourceTypeOrder     = "order"
	subjectPrefixOrder    = "orders/"
)

// Sentinel errors of the order service.
var (
	// ErrStale: the order changed under a conditional update (another
	// request or replica got there first).
	ErrStale = errors.New("order changed concurrently")
	// ErrInvalidPageToken: a ListOrders page token this service did not
	// make.
	ErrInvalidPageToken = errors.New("invalid page token")
	// ErrUserRequired: the call carries no verified user.
	ErrUserRequired = errors.New("a signed-in user is required")
	// ErrUnavailable: a service the call depends on did not answer; the
	// caller may retry.
	ErrUnavailable = errors.New("a dependency is unavailable")
	// ErrClosing: the service is shutting down.
	ErrClosing = errors.New("order service is closing")
	// ErrInvalidTransition: a shipment status change that the order's
	// status does not allow (ShipmentStatusChanged).
	ErrInvalidTransition = errors.New("invalid order status transition")
)

// NotFoundError says an order does not exist, or is not the caller's: the
// two look the same so that no caller learns of others' orders.
type NotFoundError struct {
	OrderID string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("order %q not found", e.OrderID) }

// ShippedError says an order can no longer be cancelled: the carrier has
// its parcel.
type ShippedError struct {
	OrderID string
}

func (e *ShippedError) Error() string { return fmt.Sprintf("order %q has shipped", e.OrderID) }

// KeyReusedError says the user already placed a different order with the
// same idempotency key.
type KeyReusedError struct {
	OrderID string
}

func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("idempotency key already used for order %q with a different request", e.OrderID)
}

// errorAs returns a Rule matcher for the typed error T.
func errorAs[T error](err error) bool {
	var t T
	return errors.As(err, &t)
}

// newTable returns the one table that maps the order service's errors to
// gRPC statuses at its edge.
func newTable(logger *slog.Logger) *status.Table {
	return &status.Table{
		Domain: Domain,
		Logger: logger,
		Rules: []status.Rule{
			{
				As: errorAs[*NotFoundError], Code: codes.NotFound, Reason: ReasonOrderNotFound,
				Message: func(err error) string {
					var e *NotFoundError
					errors.As(err, &e)
					return e.Error()
				},
				Details: func(err error) []proto.Message {
					var e *NotFoundError
					errors.As(err, &e)
					return []proto.Message{&errdetails.ResourceInfo{ResourceType: resourceTypeOrder, ResourceName: e.OrderID}}
				},
			},
			{
				As: errorAs[*ShippedError], Code: codes.FailedPrecondition, Reason: ReasonOrderShipped,
				Message: func(error) string { return "the order has shipped and can no longer be cancelled" },
				Details: func(err error) []proto.Message {
					var e *ShippedError
					errors.As(err, &e)
					return []proto.Message{&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
						status.PreconditionViolation(ViolationStatus, subjectPrefixOrder+e.OrderID, "the carrier has picked the parcel up"),
					}}}
				},
			},
			{
				As: errorAs[*KeyReusedError], Code: codes.AlreadyExists, Reason: ReasonKeyReused,
				Message: func(error) string {
					return "the idempotency key was already used for a different order"
				},
				Details: func(err error) []proto.Message {
					var e *KeyReusedError
					errors.As(err, &e)
					return []proto.Message{&errdetails.ResourceInfo{
						ResourceType: resourceTypeOrder, ResourceName: e.OrderID,
						Description: "placed earlier with this idempotency key",
					}}
				},
			},
			{
				Is: ErrInvalidPageToken, Code: codes.InvalidArgument, Reason: ReasonInvalidPageToken,
				Message: func(error) string { return "invalid page token" },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
						status.FieldViolation("page_token", "is not a token from an earlier ListOrders"),
					}}}
				},
			},
			{
				Is: ErrUserRequired, Code: codes.Unauthenticated, Reason: ReasonUserRequired,
				Message: func(error) string { return "a signed-in user is required" },
			},
			{
				Is: ErrStale, Code: codes.Aborted, Reason: ReasonConflict,
				Message: func(error) string { return "the order changed concurrently; retry" },
			},
			{
				Is: ErrInvalidTransition, Code: codes.FailedPrecondition, Reason: ReasonInvalidTransition,
				Message: func(error) string { return "the order's status does not allow this change" },
				Details: func(error) []proto.Message { return []proto.Message{&errdetails.PreconditionFailure{}} },
			},
			{
				Is: ErrUnavailable, Code: codes.Unavailable, Reason: ReasonDependency,
				Message: func(error) string { return "a service the order depends on is unavailable; retry" },
				Details: retryInfo,
			},
			{
				Is: ErrClosing, Code: codes.Unavailable, Reason: ReasonClosing,
				Message: func(error) string { return "the order service is shutting down; retry" },
				Details: retryInfo,
			},
		},
	}
}

func retryInfo(error) []proto.Message {
	return []proto.Message{&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfterUnavailable)}}
}
