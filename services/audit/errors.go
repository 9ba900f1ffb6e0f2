package audit

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the audit service's errors.
const Domain = "audit.switchboard.dev"

// Reasons in the ErrorInfo of the errors the service returns.
const (
	ReasonInvalidPageToken = "INVALID_PAGE_TOKEN"
	ReasonTooManyStreams   = "TOO_MANY_TAIL_STREAMS"
	ReasonTailTooSlow      = "TAIL_TOO_SLOW"
	ReasonConflict         = "CONCURRENT_UPDATE"
	ReasonShuttingDown     = "SHUTTING_DOWN"
)

// MetadataResumeAfter is the ErrorInfo metadata key of a TAIL_TOO_SLOW
// error that holds the after_sequence to resume the Tail with.
const MetadataResumeAfter = "resume_after_sequence"

// Sentinel errors. Typed errors below match them with errors.Is.
var (
	// ErrInvalidPageToken: a Query page token this service did not make,
	// or one made for another filter.
	ErrInvalidPageToken = errors.New("invalid page token")
	// ErrTooManyStreams: this instance already serves Config.MaxTailStreams
	// Tail streams.
	ErrTooManyStreams = errors.New("too many Tail streams")
	// ErrTooSlow: a Tail stream fell more than Config.MaxTailLag records
	// behind the log.
	ErrTooSlow = errors.New("tail stream too slow")
	// ErrClosed: the service was closed.
	ErrClosed = errors.New("audit service closed")
)

// retryAfter is what RESOURCE_EXHAUSTED and UNAVAILABLE ask the client to
// wait.
const retryAfter = time.Second

// TooSlowError says that a Tail stream fell too far behind the log: it
// sent the records up to ResumeAfter (those it examined, filtered by type)
// while the log reached Head. It matches ErrTooSlow.
type TooSlowError struct {
	ResumeAfter int64
	Head        int64
	MaxLag      int
}

func (e *TooSlowError) Error() string {
	return fmt.Sprintf("the Tail stream fell %d records behind the log (at most %d allowed); resume with after_sequence %d",
		e.Head-e.ResumeAfter, e.MaxLag, e.ResumeAfter)
}

// Is reports whether target is ErrTooSlow.
func (e *TooSlowError) Is(target error) bool { return target == ErrTooSlow }

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
	retry := func(error) []proto.Message {
		return []proto.Message{&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}}
	}
	return &status.Table{
		Domain: Domain,
		Logger: logger,
		Rules: []status.Rule{
			{
				Is:      ErrInvalidPageToken,
				Code:    codes.InvalidArgument,
				Reason:  ReasonInvalidPageToken,
				Message: func(error) string { return "page_token is not a token from an earlier Query with the same filter" },
				Details: func(error) []proto.Message {
					return []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
						status.FieldViolation("page_token", "is not a token from an earlier Query with the same filter"),
					}}}
				},
			},
			{
				As:      func(err error) bool { _, ok := as[*TooSlowError](err); return ok },
				Code:    codes.ResourceExhausted,
				Reason:  ReasonTailTooSlow,
				Message: func(err error) string { e, _ := as[*TooSlowError](err); return e.Error() },
				Details: func(err error) []proto.Message {
					e, _ := as[*TooSlowError](err)
					return []proto.Message{
						&errdetails.ErrorInfo{Metadata: map[string]string{MetadataResumeAfter: strconv.FormatInt(e.ResumeAfter, 10)}},
						&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)},
					}
				},
			},
			{
				Is:      ErrTooManyStreams,
				Code:    codes.ResourceExhausted,
				Reason:  ReasonTooManyStreams,
				Message: func(error) string { return "too many Tail streams open on this server; retry later" },
				Details: retry,
			},
			{
				Is:      ErrClosed,
				Code:    codes.Unavailable,
				Reason:  ReasonShuttingDown,
				Message: func(error) string { return "audit service is shutting down; retry" },
				Details: retry,
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
