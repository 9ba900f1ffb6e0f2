package payment

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

// Domain is the ErrorInfo domain of the payment service's errors.
const Domain = "payment.switchboard.dev"

// ErrorInfo reasons of the payment service's errors.
const (
	ReasonAccountNotFound       = "ACCOUNT_NOT_FOUND"
	ReasonAuthorizationNotFound = "AUTHORIZATION_NOT_FOUND"
	ReasonAccountExists         = "ACCOUNT_EXISTS"
	ReasonInsufficientFunds     = "INSUFFICIENT_FUNDS"
	ReasonInvalidStatus         = "INVALID_STATUS"
	ReasonAmountExceeded        = "AMOUNT_EXCEEDED"
	ReasonSystemAccount         = "SYSTEM_ACCOUNT"
	ReasonCurrencyMismatch      = "CURRENCY_MISMATCH"
	ReasonIdempotencyKeyReused  = "IDEMPOTENCY_KEY_REUSED"
	ReasonConcurrentUpdate      = "CONCURRENT_UPDATE"
	ReasonNotAccountOwner       = "NOT_ACCOUNT_OWNER"
)

// PreconditionFailure violation types.
const (
	// ViolationFunds: the account's available money is too small.
	ViolationFunds = "FUNDS"
	// ViolationStatus: the authorization's status does not allow the call.
	ViolationStatus = "STATUS"
	// ViolationAmount: more than the authorization allows was asked for.
	ViolationAmount = "AMOUNT"
	// ViolationAccountKind: the call needs a customer account.
	ViolationAccountKind = "ACCOUNT_KIND"
)

// Resource types named in ResourceInfo details.
const (
	ResourceAccount       = "switchboard.payment.v1.Account"
	ResourceAuthorization = "switchboard.payment.v1.Authorization"
)

// ErrIdempotencyKeyReused is returned when the idempotency key was first
// used with a different request. It maps to INVALID_ARGUMENT with a BadRequest
// violation of idempotency_key: retrying cannot help, the client must use a
// new key for a new request.
var ErrIdempotencyKeyReused = errors.New("idempotency key was used with a different request")

// errConcurrentUpdate: a transaction met a conflict it could not resolve
// by itself (it maps to ABORTED; the client retries the call).
var errConcurrentUpdate = errors.New("concurrent update")

// NotFoundError is returned when no account or authorization has the id
// (or no account the owner and currency) asked for.
type NotFoundError struct {
	// Resource is ResourceAccount or ResourceAuthorization.
	Resource string
	// ID is the id asked for; empty for a lookup by owner.
	ID string
	// OwnerID and Currency are the owner lookup's arguments.
	OwnerID, Currency string
}

func (e *NotFoundError) Error() string {
	if e.ID == "" {
		return fmt.Sprintf("no %s account for owner %q", e.Currency, e.OwnerID)
	}
	if e.Resource == ResourceAuthorization {
		return fmt.Sprintf("authorization %q not found", e.ID)
	}
	return fmt.Sprintf("account %q not found", e.ID)
}

// name returns the resource name: accounts/<id> or authorizations/<id>.
func (e *NotFoundError) name() string {
	switch {
	case e.ID == "":
		return ""
	case e.Resource == ResourceAuthorization:
		return "authorizations/" + e.ID
	}
	return "accounts/" + e.ID
}

// AccountExistsError is returned when the owner already has an account in
// the currency, opened with another idempotency key.
type AccountExistsError struct {
	// AccountID is the existing account.
	AccountID string
	// OwnerID and Currency are those asked for.
	OwnerID, Currency string
}

func (e *AccountExistsError) Error() string {
	return fmt.Sprintf("owner %q already has a %s account", e.OwnerID, e.Currency)
}

// CurrencyMismatchError is returned when an amount is not in the currency
// of the account it is for. It maps to INVALID_ARGUMENT with a BadRequest violation of
// Field.
type CurrencyMismatchError struct {
	// Field is the request field at fault, e.g. "amount.currency_code".
	Field string
	// Want is the account's currency, Got the request's.
	Want, Got string
}

func (e *CurrencyMismatchError) Error() string {
	return fmt.Sprintf("amount is in %s, the account is in %s", e.Got, e.Want)
}

// InsufficientFundsError is returned when the account has less available
// money than the authorization asks for.
type InsufficientFundsError struct {
	// AccountID is the account.
	AccountID string
	// Requested is the amount asked for, Available what the account had
	// when the hold was refused.
	Requested, Available int64
}

func (e *InsufficientFundsError) Error() string {
	return fmt.Sprintf("requested %d, available %d", e.Requested, e.Available)
}

func (e *InsufficientFundsError) violation() *errdetails.PreconditionFailure_Violation {
	return status.PreconditionViolation(ViolationFunds, "accounts/"+e.AccountID, e.Error())
}

// StatusError is returned when the authorization's status does not allow
// the operation, e.g. voiding a captured authorization.
type StatusError struct {
	// AuthorizationID is the authorization.
	AuthorizationID string
	// Operation is "capture", "void" or "refund".
	Operation string
	// Status is the authorization's status.
	Status AuthorizationStatus
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("cannot %s an authorization that is %s", e.Operation, e.Status)
}

func (e *StatusError) violation() *errdetails.PreconditionFailure_Violation {
	return status.PreconditionViolation(ViolationStatus, "authorizations/"+e.AuthorizationID, e.Error())
}

// AmountError is returned when a capture asks for more than was
// authorized, or a refund for more than is left to refund.
type AmountError struct {
	// AuthorizationID is the authorization.
	AuthorizationID string
	// Operation is "capture" or "refund".
	Operation string
	// Requested is the amount asked for, Limit the most allowed.
	Requested, Limit int64
}

func (e *AmountError) Error() string {
	return fmt.Sprintf("%s of %d exceeds the %d allowed", e.Operation, e.Requested, e.Limit)
}

func (e *AmountError) violation() *errdetails.PreconditionFailure_Violation {
	return status.PreconditionViolation(ViolationAmount, "authorizations/"+e.AuthorizationID, e.Error())
}

// SystemAccountError is returned when money is to be held on a system
// account: only customer accounts hold authorizations.
type SystemAccountError struct {
	// AccountID is the system account named.
	AccountID string
}

func (e *SystemAccountError) Error() string {
	return fmt.Sprintf("account %q is a system account", e.AccountID)
}

func (e *SystemAccountError) violation() *errdetails.PreconditionFailure_Violation {
	return status.PreconditionViolation(ViolationAccountKind, "accounts/"+e.AccountID,
		"money can only be held on customer accounts")
}

// preconditionError is implemented by the errors that map to
// FAILED_PRECONDITION with one PreconditionFailure violation.
type preconditionError interface {
	error
	violation() *errdetails.PreconditionFailure_Violation
}

func as[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}

func matches[T error](err error) bool {
	_, ok := as[T](err)
	return ok
}

// messageOf returns the text of the error of type T in err's chain. The
// typed errors' texts are written for callers and name nothing internal;
// the wrapping added on the way up, which might, is dropped.
func messageOf[T error](err error) string {
	if e, ok := as[T](err); ok {
		return e.Error()
	}
	return ""
}

// preconditionRule maps errors of type T to FAILED_PRECONDITION with
// reason and T's PreconditionFailure violation.
func preconditionRule[T preconditionError](reason string) status.Rule {
	return status.Rule{
		As: matches[T], Code: codes.FailedPrecondition, Reason: reason, Message: messageOf[T],
		Details: func(err error) []proto.Message {
			e, _ := as[T](err)
			return []proto.Message{&errdetails.PreconditionFailure{
				Violations: []*errdetails.PreconditionFailure_Violation{e.violation()},
			}}
		},
	}
}

// notFoundRule maps NotFoundErrors of resource to NOT_FOUND with reason
// and a ResourceInfo.
func notFoundRule(resource, reason string) status.Rule {
	return status.Rule{
		As: func(err error) bool {
			e, ok := as[*NotFoundError](err)
			return ok && e.Resource == resource
		},
		Code: codes.NotFound, Reason: reason, Message: messageOf[*NotFoundError],
		Details: func(err error) []proto.Message {
			e, _ := as[*NotFoundError](err)
			ri := &errdetails.ResourceInfo{ResourceType: e.Resource, ResourceName: e.name()}
			if e.ID == "" {
				ri.Owner = e.OwnerID
				ri.Description = "no " + e.Currency + " account"
			}
			return []proto.Message{ri}
		},
	}
}

// newStatusTable returns the one table that maps the service's domain
// errors to gRPC statuses at its edge.
func newStatusTable(logger *slog.Logger) *status.Table {
	return &status.Table{
		Domain: Domain,
		Logger: logger,
		Rules: []status.Rule{
			notFoundRule(ResourceAccount, ReasonAccountNotFound),
			notFoundRule(ResourceAuthorization, ReasonAuthorizationNotFound),
			{
				As: matches[*AccountExistsError], Code: codes.AlreadyExists,
				Reason: ReasonAccountExists, Message: messageOf[*AccountExistsError],
				Details: func(err error) []proto.Message {
					e, _ := as[*AccountExistsError](err)
					return []proto.Message{&errdetails.ResourceInfo{
						ResourceType: ResourceAccount,
						ResourceName: "accounts/" + e.AccountID,
						Owner:        e.OwnerID,
						Description:  "the owner's " + e.Currency + " account",
					}}
				},
			},
			{
				As: matches[*CurrencyMismatchError], Code: codes.InvalidArgument,
				Reason: ReasonCurrencyMismatch, Message: messageOf[*CurrencyMismatchError],
				Details: func(err error) []proto.Message {
					e, _ := as[*CurrencyMismatchError](err)
					return []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
						status.FieldViolation(e.Field, "must be "+e.Want+", the account's currency"),
					}}}
				},
			},
			{
				Is: ErrIdempotencyKeyReused, Code: codes.InvalidArgument,
				Reason:  ReasonIdempotencyKeyReused,
				Message: func(error) string { return ErrIdempotencyKeyReused.Error() },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
						status.FieldViolation("idempotency_key", "was used with a different request; use a new key"),
					}}}
				},
			},
			preconditionRule[*InsufficientFundsError](ReasonInsufficientFunds),
			preconditionRule[*StatusError](ReasonInvalidStatus),
			preconditionRule[*AmountError](ReasonAmountExceeded),
			preconditionRule[*SystemAccountError](ReasonSystemAccount),
			{
				As:   func(err error) bool { return errors.Is(err, errConcurrentUpdate) || sqldb.Retryable(err) },
				Code: codes.Aborted, Reason: ReasonConcurrentUpdate,
				Message: func(error) string { return "concurrent update; retry the call" },
			},
		},
	}
}
