package status

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// KitDomain is the ErrorInfo domain of errors the kit itself raises, such
// as those [Table.Map] makes from context errors.
const KitDomain = "kit.switchboard.dev"

// Reasons the kit sets in the ErrorInfo of errors it makes itself.
const (
	// ReasonInternal is the reason of every error made by [Internal],
	// including unmapped errors in [Table.Map].
	ReasonInternal = "INTERNAL"
	// ReasonCanceled is the reason [Table.Map] gives context.Canceled.
	ReasonCanceled = "CANCELLED"
	// ReasonDeadlineExceeded is the reason [Table.Map] gives
	// context.DeadlineExceeded.
	ReasonDeadlineExceeded = "DEADLINE_EXCEEDED"
)

// internalMessage is the only message an INTERNAL error made here carries.
const internalMessage = "internal error"

// codeText holds, per code, its canonical UPPER_SNAKE_CASE name (the
// default reason) and a generic public message.
var codeText = [...]struct{ name, msg string }{
	codes.OK:                 {"OK", "ok"},
	codes.Canceled:           {"CANCELLED", "request canceled"},
	codes.Unknown:            {"UNKNOWN", "unknown error"},
	codes.InvalidArgument:    {"INVALID_ARGUMENT", "invalid argument"},
	codes.DeadlineExceeded:   {"DEADLINE_EXCEEDED", "deadline exceeded"},
	codes.NotFound:           {"NOT_FOUND", "not found"},
	codes.AlreadyExists:      {"ALREADY_EXISTS", "already exists"},
	codes.PermissionDenied:   {"PERMISSION_DENIED", "permission denied"},
	codes.ResourceExhausted:  {"RESOURCE_EXHAUSTED", "resource exhausted"},
	codes.FailedPrecondition: {"FAILED_PRECONDITION", "failed precondition"},
	codes.Aborted:            {"ABORTED", "aborted"},
	codes.OutOfRange:         {"OUT_OF_RANGE", "out of range"},
	codes.Unimplemented:      {"UNIMPLEMENTED", "not implemented"},
	codes.Internal:           {"INTERNAL", internalMessage},
	codes.Unavailable:        {"UNAVAILABLE", "service unavailable"},
	codes.DataLoss:           {"DATA_LOSS", internalMessage},
	codes.Unauthenticated:    {"UNAUTHENTICATED", "unauthenticated"},
}

// codeName returns the canonical name of c, "UNKNOWN" for codes outside
// the gRPC set.
func codeName(c codes.Code) string {
	if int(c) < len(codeText) {
		return codeText[c].name
	}
	return codeText[codes.Unknown].name
}

// genericMessage returns a public message for c that says nothing beyond
// the code itself.
func genericMessage(c codes.Code) string {
	if int(c) < len(codeText) {
		return codeText[c].msg
	}
	return codeText[codes.Unknown].msg
}

// New returns a status with code c and message msg whose first detail is
// an ErrorInfo with domain and reason, followed by details in order. An
// empty reason becomes the code's canonical name (e.g. "NOT_FOUND").
//
// Reasons should be UPPER_SNAKE_CASE constants that clients can switch on;
// msg is shown to callers and must not contain internals. To add ErrorInfo
// metadata, pass an *errdetails.ErrorInfo among details: its Metadata is
// merged into the leading ErrorInfo (later entries win) and it is not
// attached a second time, so the status carries exactly one ErrorInfo;
// its Reason and Domain are ignored.
//
// New never panics. Invalid UTF-8 in msg, domain, reason and metadata is
// replaced with U+FFFD; nil details are skipped, and a detail that cannot
// be marshalled is dropped while the others are kept. For codes.OK it
// returns a status without details, whose Err is nil.
func New(c codes.Code, domain, reason, msg string, details ...proto.Message) *grpcstatus.Status {
	st := grpcstatus.New(c, validUTF8(msg))
	if c == codes.OK {
		return st
	}
	if reason == "" {
		reason = codeName(c)
	}
	info := &errdetails.ErrorInfo{Reason: validUTF8(reason), Domain: validUTF8(domain)}
	all := make([]protoadapt.MessageV1, 1, len(details)+1)
	all[0] = info
	for _, d := range details {
		if d == nil || !d.ProtoReflect().IsValid() {
			continue
		}
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			mergeMetadata(info, ei.GetMetadata())
			continue
		}
		all = append(all, protoadapt.MessageV1Of(d))
	}
	if withAll, err := st.WithDetails(all...); err == nil {
		return withAll
	}
	// Some detail does not marshal (in practice: invalid UTF-8 in a string
	// field). Attach them one at a time and keep those that do.
	for _, d := range all {
		if next, err := st.WithDetails(d); err == nil {
			st = next
		}
	}
	return st
}

// mergeMetadata copies md into info.Metadata with keys and values made
// valid UTF-8.
func mergeMetadata(info *errdetails.ErrorInfo, md map[string]string) {
	if len(md) == 0 {
		return
	}
	if info.Metadata == nil {
		info.Metadata = make(map[string]string, len(md))
	}
	for k, v := range md {
		info.Metadata[validUTF8(k)] = validUTF8(v)
	}
}

// validUTF8 returns s with invalid UTF-8 replaced by U+FFFD, so that it
// can be marshalled into a proto3 string field. Valid strings are returned
// as they are, without allocating.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Error returns New(c, domain, reason, msg, details...).Err(): an error
// whose GRPCStatus method returns that status. It returns nil for
// codes.OK.
func Error(c codes.Code, domain, reason, msg string, details ...proto.Message) error {
	return New(c, domain, reason, msg, details...).Err()
}

// InvalidArgument returns an INVALID_ARGUMENT error carrying ErrorInfo and
// a BadRequest with violations (nil entries are skipped). The BadRequest is
// attached even when there are no violations.
func InvalidArgument(domain, reason, msg string, violations ...*errdetails.BadRequest_FieldViolation) error {
	return Error(codes.InvalidArgument, domain, reason, msg,
		&errdetails.BadRequest{FieldViolations: nonNil(violations)})
}

// FieldViolation returns a BadRequest field violation for field, a path
// such as "items[2].quantity", with a description of what is wrong.
func FieldViolation(field, description string) *errdetails.BadRequest_FieldViolation {
	return &errdetails.BadRequest_FieldViolation{Field: validUTF8(field), Description: validUTF8(description)}
}

// NotFound returns a NOT_FOUND error with the message
// `<resourceType> "<resourceName>" not found`, carrying ErrorInfo and a
// ResourceInfo naming the resource.
func NotFound(domain, reason, resourceType, resourceName string) error {
	return resourceError(codes.NotFound, domain, reason, resourceType, resourceName, "not found")
}

// AlreadyExists returns an ALREADY_EXISTS error with the message
// `<resourceType> "<resourceName>" already exists`, carrying ErrorInfo and
// a ResourceInfo naming the resource.
func AlreadyExists(domain, reason, resourceType, resourceName string) error {
	return resourceError(codes.AlreadyExists, domain, reason, resourceType, resourceName, "already exists")
}

func resourceError(c codes.Code, domain, reason, resourceType, resourceName, what string) error {
	label := resourceType
	if label == "" {
		label = "resource"
	}
	msg := fmt.Sprintf("%s %q %s", label, resourceName, what)
	return Error(c, domain, reason, msg, &errdetails.ResourceInfo{
		ResourceType: validUTF8(resourceType),
		ResourceName: validUTF8(resourceName),
	})
}

// FailedPrecondition returns a FAILED_PRECONDITION error carrying ErrorInfo
// and a PreconditionFailure with violations (nil entries are skipped). The
// PreconditionFailure is attached even when there are no violations.
func FailedPrecondition(domain, reason, msg string, violations ...*errdetails.PreconditionFailure_Violation) error {
	return Error(codes.FailedPrecondition, domain, reason, msg,
		&errdetails.PreconditionFailure{Violations: nonNil(violations)})
}

// PreconditionViolation returns a PreconditionFailure violation: typ is a
// service-specific kind such as "STOCK", subject what failed such as
// "item/42", and description how.
func PreconditionViolation(typ, subject, description string) *errdetails.PreconditionFailure_Violation {
	return &errdetails.PreconditionFailure_Violation{
		Type:        validUTF8(typ),
		Subject:     validUTF8(subject),
		Description: validUTF8(description),
	}
}

// PermissionDenied returns a PERMISSION_DENIED error carrying ErrorInfo:
// the caller is known but may not do this.
func PermissionDenied(domain, reason, msg string) error {
	return Error(codes.PermissionDenied, domain, reason, msg)
}

// Unauthenticated returns an UNAUTHENTICATED error carrying ErrorInfo: the
// caller's credentials are missing, invalid or expired.
func Unauthenticated(domain, reason, msg string) error {
	return Error(codes.Unauthenticated, domain, reason, msg)
}

// ResourceExhausted returns a RESOURCE_EXHAUSTED error carrying ErrorInfo
// and a RetryInfo telling the client to wait retryAfter (a negative value
// counts as zero) before trying again.
func ResourceExhausted(domain, reason, msg string, retryAfter time.Duration) error {
	return Error(codes.ResourceExhausted, domain, reason, msg,
		&errdetails.RetryInfo{RetryDelay: durationpb.New(max(retryAfter, 0))})
}

// Aborted returns an ABORTED error carrying ErrorInfo, for conflicts such
// as a failed optimistic-concurrency check; the client may retry the whole
// read-modify-write sequence.
func Aborted(domain, reason, msg string) error {
	return Error(codes.Aborted, domain, reason, msg)
}

// Unavailable returns an UNAVAILABLE error carrying ErrorInfo, and a
// RetryInfo with retryAfter when it is positive. Use it only for transient
// faults that a retry may cure.
func Unavailable(domain, reason, msg string, retryAfter time.Duration) error {
	if retryAfter > 0 {
		return Error(codes.Unavailable, domain, reason, msg,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	}
	return Error(codes.Unavailable, domain, reason, msg)
}

// Internal returns an INTERNAL error with the message "internal error" and
// an ErrorInfo with domain and reason [ReasonInternal]. It takes no error
// on purpose: whatever went wrong is logged where it is handled and never
// sent to the caller.
func Internal(domain string) error {
	return Error(codes.Internal, domain, ReasonInternal, internalMessage)
}

// nonNil returns s without its nil entries; s itself when it has none.
func nonNil[T any](s []*T) []*T {
	for i, v := range s {
		if v != nil {
			continue
		}
		out := make([]*T, i, len(s)-1)
		copy(out, s[:i])
		for _, w := range s[i+1:] {
			if w != nil {
				out = append(out, w)
			}
		}
		return out
	}
	return s
}
