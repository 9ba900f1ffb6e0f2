package status

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Details returns the details of type T (such as *errdetails.BadRequest)
// in the status err carries, in order. It accepts errors that wrap a
// status, and returns nil when err is nil, carries no status or has no
// detail of type T. Details that cannot be decoded are skipped.
func Details[T proto.Message](err error) []T {
	if err == nil {
		return nil
	}
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return nil
	}
	var out []T
	for _, d := range st.Details() {
		if m, ok := d.(T); ok {
			out = append(out, m)
		}
	}
	return out
}

// first returns the first detail of type T in err, or T's zero value.
func first[T proto.Message](err error) T {
	var zero T
	if err == nil {
		return zero
	}
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return zero
	}
	for _, d := range st.Details() {
		if m, ok := d.(T); ok {
			return m
		}
	}
	return zero
}

// Info returns the ErrorInfo of the status err carries, or nil when there
// is none. Errors built by this package carry exactly one.
func Info(err error) *errdetails.ErrorInfo {
	return first[*errdetails.ErrorInfo](err)
}

// Reason returns the ErrorInfo reason of the status err carries, or ""
// when there is none. Clients switch on it together with the domain in
// [Info]; the message is for people.
func Reason(err error) string {
	return Info(err).GetReason()
}

// BadRequest returns the first BadRequest detail of the status err
// carries, or nil.
func BadRequest(err error) *errdetails.BadRequest {
	return first[*errdetails.BadRequest](err)
}

// PreconditionFailure returns the first PreconditionFailure detail of the
// status err carries, or nil.
func PreconditionFailure(err error) *errdetails.PreconditionFailure {
	return first[*errdetails.PreconditionFailure](err)
}

// ResourceInfo returns the first ResourceInfo detail of the status err
// carries, or nil.
func ResourceInfo(err error) *errdetails.ResourceInfo {
	return first[*errdetails.ResourceInfo](err)
}

// RetryDelay returns how long the server asked the client to wait before
// retrying, from the first RetryInfo detail of the status err carries. ok
// is false when there is no RetryInfo or its delay is invalid or negative;
// a RetryInfo without a delay means zero. Delays too long for a
// time.Duration are clamped to its maximum.
func RetryDelay(err error) (delay time.Duration, ok bool) {
	ri := first[*errdetails.RetryInfo](err)
	if ri == nil {
		return 0, false
	}
	d := ri.GetRetryDelay()
	if d == nil {
		return 0, true
	}
	if d.CheckValid() != nil {
		return 0, false
	}
	delay = d.AsDuration()
	if delay < 0 {
		return 0, false
	}
	return delay, true
}
