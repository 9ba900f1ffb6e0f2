package status

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Rule maps the domain errors it matches to one gRPC status. Set Is or As;
// a Rule with neither matches nothing, and one with both matches when
// either does.
type Rule struct {
	// Is matches errors for which errors.Is(err, Is) is true.
	Is error
	// As is a custom matcher, typically errors.As into a typed error.
	As func(error) bool

	// Code is the status code. A Rule with codes.OK matches nothing: a
	// failure must never become a success.
	Code codes.Code
	// Reason is the ErrorInfo reason, UPPER_SNAKE_CASE; empty uses the
	// code's canonical name, e.g. "NOT_FOUND".
	Reason string

	// Message returns the public message. When it is nil or returns "",
	// a generic text for Code is used. Return err.Error() only when the
	// domain error's text is written for users: it reaches the caller.
	Message func(err error) string
	// Details returns extra details (BadRequest, PreconditionFailure,
	// ResourceInfo, RetryInfo...) attached after the ErrorInfo, as [New]
	// does; an *errdetails.ErrorInfo among them supplies metadata.
	Details func(err error) []proto.Message
}

// matches reports whether r applies to err.
func (r *Rule) matches(err error) bool {
	if r.Code == codes.OK {
		return false
	}
	return (r.Is != nil && errors.Is(err, r.Is)) || (r.As != nil && r.As(err))
}

// Table turns the errors a service's domain code returns into gRPC status
// errors, once, at the edge of its gRPC layer. Its fields must not change
// once Map is in use; Map is then safe for concurrent use, provided the
// Rules' functions are.
type Table struct {
	// Domain is the ErrorInfo domain of the errors the rules make and of
	// unmapped errors, e.g. "inventory.switchboard.dev".
	Domain string
	// Rules are tried in order; the first that matches wins.
	Rules []Rule
	// Logger receives unmapped errors at Error level. Nil means they are
	// not logged.
	Logger *slog.Logger
}

// grpcStatuser is implemented by errors that carry a gRPC status, such as
// those of google.golang.org/grpc/status and of this package.
type grpcStatuser interface {
	GRPCStatus() *grpcstatus.Status
}

// Map returns the gRPC status error to send for err:
//
//   - nil is nil;
//   - an error that carries a gRPC status (it has a GRPCStatus method that
//     returns a status with a code other than OK) is returned unchanged;
//     when it is wrapped, the status itself is returned, so that the
//     wrapping text, which may name internals, does not become the message;
//   - context.DeadlineExceeded and context.Canceled, wrapped or not, become
//     DEADLINE_EXCEEDED and CANCELLED with domain [KitDomain] and reason
//     [ReasonDeadlineExceeded] or [ReasonCanceled];
//   - otherwise the first Rule that matches decides code, reason, message
//     and details, with domain t.Domain;
//   - anything else becomes [Internal](t.Domain), and err is logged to
//     t.Logger with the message "unmapped error" and its text in the
//     attribute "error". This is the one place it is logged.
//
// Map does not allocate when err is nil.
func (t *Table) Map(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if st := carried(err); st != nil {
		return st
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Error(codes.DeadlineExceeded, KitDomain, ReasonDeadlineExceeded, genericMessage(codes.DeadlineExceeded))
	case errors.Is(err, context.Canceled):
		return Error(codes.Canceled, KitDomain, ReasonCanceled, genericMessage(codes.Canceled))
	}
	for i := range t.Rules {
		r := &t.Rules[i]
		if !r.matches(err) {
			continue
		}
		var msg string
		if r.Message != nil {
			msg = r.Message(err)
		}
		if msg == "" {
			msg = genericMessage(r.Code)
		}
		var details []proto.Message
		if r.Details != nil {
			details = r.Details(err)
		}
		return Error(r.Code, t.Domain, r.Reason, msg, details...)
	}
	if t.Logger != nil {
		t.Logger.LogAttrs(ctx, slog.LevelError, "unmapped error", slog.String("error", err.Error()))
	}
	return Internal(t.Domain)
}

// carried returns the gRPC status error err carries, or nil: err itself
// when it is one, the bare status error when err wraps one.
func carried(err error) error {
	if gs, ok := err.(grpcStatuser); ok {
		if st := gs.GRPCStatus(); st != nil && st.Code() != codes.OK {
			return err
		}
		return nil
	}
	var gs grpcStatuser
	if !errors.As(err, &gs) {
		return nil
	}
	if st := gs.GRPCStatus(); st != nil && st.Code() != codes.OK {
		return st.Err()
	}
	return nil
}
