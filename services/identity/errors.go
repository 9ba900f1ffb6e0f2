package identity

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

// Domain is the ErrorInfo domain of the identity service's errors.
const Domain = "identity.switchboard.dev"

// ResourceType names users in ResourceInfo details.
const ResourceType = "user"

// Reasons in the ErrorInfo of the errors the service returns.
//
//nolint:gosec // G101: error reasons, not credentials
const (
	// ReasonUserNotFound (NOT_FOUND): no user has the id.
	ReasonUserNotFound = "USER_NOT_FOUND"
	// ReasonEmailTaken (ALREADY_EXISTS): the e-mail address is registered.
	ReasonEmailTaken = "EMAIL_TAKEN"
	// ReasonInvalidCredentials (UNAUTHENTICATED): wrong e-mail or password;
	// which one is never said.
	ReasonInvalidCredentials = "INVALID_CREDENTIALS"
	// ReasonLoginThrottled (RESOURCE_EXHAUSTED): too many logins of the
	// account; RetryInfo says when to try again.
	ReasonLoginThrottled = "LOGIN_THROTTLED"
	// ReasonRefreshTokenInvalid (UNAUTHENTICATED): not a refresh token
	// this service issued.
	ReasonRefreshTokenInvalid = "REFRESH_TOKEN_INVALID"
	// ReasonRefreshTokenExpired (UNAUTHENTICATED): the refresh token has
	// expired; log in again.
	ReasonRefreshTokenExpired = "REFRESH_TOKEN_EXPIRED"
	// ReasonRefreshTokenReused (UNAUTHENTICATED): the refresh token was
	// used before; its whole family is now revoked.
	ReasonRefreshTokenReused = "REFRESH_TOKEN_REUSED"
	// ReasonRefreshTokenRevoked (UNAUTHENTICATED): the refresh token's
	// family was revoked (by RevokeToken or after a reuse).
	ReasonRefreshTokenRevoked = "REFRESH_TOKEN_REVOKED"
	// ReasonNotOwnUser (PERMISSION_DENIED): a user asked for another
	// user.
	ReasonNotOwnUser = "NOT_OWN_USER"
	// ReasonRevocationUnavailable (UNAVAILABLE): the revocation store did
	// not record the revocation; retry.
	ReasonRevocationUnavailable = "REVOCATION_UNAVAILABLE"
)

// Sentinel errors. The typed errors below match them with errors.Is.
var (
	// ErrUserNotFound: no user has the id.
	ErrUserNotFound = errors.New("user not found")
	// ErrEmailTaken: the e-mail address is registered already.
	ErrEmailTaken = errors.New("e-mail address already registered")
	// ErrInvalidCredentials: the e-mail address or the password is wrong.
	ErrInvalidCredentials = errors.New("invalid e-mail address or password")
	// ErrLoginThrottled: the account has had too many logins in the
	// throttle window.
	ErrLoginThrottled = errors.New("too many login attempts")
	// ErrRefreshTokenInvalid: not a refresh token this service issued.
	ErrRefreshTokenInvalid = errors.New("refresh token invalid")
	// ErrRefreshTokenExpired: the refresh token has expired.
	ErrRefreshTokenExpired = errors.New("refresh token expired")
	// ErrRefreshTokenReused: the refresh token was used already; its
	// family has been revoked.
	ErrRefreshTokenReused = errors.New("refresh token already used; its session is revoked")
	// ErrRefreshTokenRevoked: the refresh token's family is revoked.
	ErrRefreshTokenRevoked = errors.New("refresh token revoked")
	// ErrNotOwnUser: a user asked for another user's record.
	ErrNotOwnUser = errors.New("a user may only read their own record")
	// ErrRevocationUnavailable: the revocation store failed.
	ErrRevocationUnavailable = errors.New("token revocation store unavailable")
)

// retryRevocationAfter is the RetryInfo of ErrRevocationUnavailable.
const retryRevocationAfter = time.Second

// NotFoundError names the user that does not exist. It matches
// ErrUserNotFound.
type NotFoundError struct {
	// UserID is the id asked for.
	UserID string
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("user %q not found", e.UserID) }

// Is reports whether target is ErrUserNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrUserNotFound }

// EmailTakenError says that an e-mail address is registered. It matches
// ErrEmailTaken.
type EmailTakenError struct {
	// Email is the normalised address.
	Email string
	// existing is the account that holds it, for the idempotent replay
	// check of Register; never sent to the caller.
	existing Account
}

func (e *EmailTakenError) Error() string {
	return fmt.Sprintf("e-mail address %q already registered", e.Email)
}

// Is reports whether target is ErrEmailTaken.
func (e *EmailTakenError) Is(target error) bool { return target == ErrEmailTaken }

// ThrottledError says that logins of an account are throttled until
// RetryAfter has passed. It matches ErrLoginThrottled.
type ThrottledError struct {
	// RetryAfter is how long to wait before the next attempt.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many login attempts; retry in %v", e.RetryAfter.Round(time.Second))
}

// Is reports whether target is ErrLoginThrottled.
func (e *ThrottledError) Is(target error) bool { return target == ErrLoginThrottled }

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

// unauthenticated is a rule for a sentinel that becomes UNAUTHENTICATED
// with the sentinel's text as the message.
func unauthenticated(sentinel error, reason string) status.Rule {
	return status.Rule{
		Is:      sentinel,
		Code:    codes.Unauthenticated,
		Reason:  reason,
		Message: func(error) string { return sentinel.Error() },
	}
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
				Reason:  ReasonUserNotFound,
				Message: func(err error) string { e, _ := as[*NotFoundError](err); return e.Error() },
				Details: func(err error) []proto.Message {
					e, _ := as[*NotFoundError](err)
					return []proto.Message{&errdetails.ResourceInfo{ResourceType: ResourceType, ResourceName: e.UserID}}
				},
			},
			{
				As:      func(err error) bool { _, ok := as[*EmailTakenError](err); return ok },
				Code:    codes.AlreadyExists,
				Reason:  ReasonEmailTaken,
				Message: func(error) string { return "e-mail address already registered" },
				Details: func(err error) []proto.Message {
					e, _ := as[*EmailTakenError](err)
					return []proto.Message{&errdetails.ResourceInfo{
						ResourceType: ResourceType,
						ResourceName: e.Email,
						Description:  "a user with this e-mail address exists",
					}}
				},
			},
			unauthenticated(ErrInvalidCredentials, ReasonInvalidCredentials),
			{
				As:      func(err error) bool { _, ok := as[*ThrottledError](err); return ok },
				Code:    codes.ResourceExhausted,
				Reason:  ReasonLoginThrottled,
				Message: func(error) string { return "too many login attempts for this account; retry later" },
				Details: func(err error) []proto.Message {
					e, _ := as[*ThrottledError](err)
					return []proto.Message{&errdetails.RetryInfo{RetryDelay: durationpb.New(max(e.RetryAfter, 0))}}
				},
			},
			unauthenticated(ErrRefreshTokenInvalid, ReasonRefreshTokenInvalid),
			unauthenticated(ErrRefreshTokenExpired, ReasonRefreshTokenExpired),
			unauthenticated(ErrRefreshTokenReused, ReasonRefreshTokenReused),
			unauthenticated(ErrRefreshTokenRevoked, ReasonRefreshTokenRevoked),
			{
				Is:      ErrNotOwnUser,
				Code:    codes.PermissionDenied,
				Reason:  ReasonNotOwnUser,
				Message: func(error) string { return ErrNotOwnUser.Error() },
			},
			{
				Is:      ErrRevocationUnavailable,
				Code:    codes.Unavailable,
				Reason:  ReasonRevocationUnavailable,
				Message: func(error) string { return "the token could not be revoked now; retry" },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.RetryInfo{RetryDelay: durationpb.New(retryRevocationAfter)}}
				},
			},
		},
	}
}
