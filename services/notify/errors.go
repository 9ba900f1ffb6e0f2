package notify

import (
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the notify service's errors.
const Domain = "notify.switchboard.dev"

// Reasons in the ErrorInfo of the errors the service returns.
const (
	ReasonInvalidPageToken = "INVALID_PAGE_TOKEN"
	ReasonUserRequired     = "USER_REQUIRED"
	ReasonNotOwner         = "NOT_OWN_NOTIFICATIONS"
	ReasonConflict         = "CONCURRENT_UPDATE"
)

// Sentinel errors. Typed errors below match them with errors.Is.
var (
	// ErrNotFound: no such notification.
	ErrNotFound = errors.New("notification not found")
	// ErrInvalidPageToken: a ListNotifications page token this service
	// did not make.
	ErrInvalidPageToken = errors.New("invalid page token")
	// ErrUserRequired: the call carries no verified user, and the caller
	// may not list everyone's notifications.
	ErrUserRequired = errors.New("a signed-in user is required")
	// ErrNotOwner: a user asked for another user's notifications.
	ErrNotOwner = errors.New("only your own notifications")
	// ErrUnknownRecipient: an event names a user or an order notify has
	// not heard of yet. It is transient: the event that introduces the
	// user or the order comes on another subject and may arrive later.
	ErrUnknownRecipient = errors.New("unknown recipient")
	// ErrRejected: the mail server refused the message for good (a 5xx
	// reply to MAIL, RCPT or DATA). Senders wrap it; the sender loop then
	// gives up at once instead of retrying.
	ErrRejected = errors.New("message rejected")
)

// UnknownUserError says no UserRegistered was handled for the user yet.
// It matches ErrUnknownRecipient.
type UnknownUserError struct {
	UserID string
}

func (e *UnknownUserError) Error() string {
	return fmt.Sprintf("no address known for user %q yet", e.UserID)
}

// Is reports whether target is ErrUnknownRecipient.
func (e *UnknownUserError) Is(target error) bool { return target == ErrUnknownRecipient }

// UnknownOrderError says no event naming the order's user was handled
// yet. It matches ErrUnknownRecipient.
type UnknownOrderError struct {
	OrderID string
}

func (e *UnknownOrderError) Error() string {
	return fmt.Sprintf("the user of order %q is not known yet", e.OrderID)
}

// Is reports whether target is ErrUnknownRecipient.
func (e *UnknownOrderError) Is(target error) bool { return target == ErrUnknownRecipient }

// newTable returns the one table that maps the service's domain errors to
// gRPC statuses at its edge. Unmapped errors become INTERNAL and are logged
// to logger.
func newTable(logger *slog.Logger) *status.Table {
	return &status.Table{
		Domain: Domain,
		Logger: logger,
		Rules: []status.Rule{
			{
				Is:      ErrInvalidPageToken,
				Code:    codes.InvalidArgument,
				Reason:  ReasonInvalidPageToken,
				Message: func(error) string { return "page_token is not a token from an earlier ListNotifications" },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
						status.FieldViolation("page_token", "is not a token from an earlier ListNotifications"),
					}}}
				},
			},
			{
				Is:      ErrUserRequired,
				Code:    codes.Unauthenticated,
				Reason:  ReasonUserRequired,
				Message: func(error) string { return "a signed-in user is required" },
			},
			{
				Is:      ErrNotOwner,
				Code:    codes.PermissionDenied,
				Reason:  ReasonNotOwner,
				Message: func(error) string { return "a user may list only their own notifications" },
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
