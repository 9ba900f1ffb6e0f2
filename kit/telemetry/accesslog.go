package telemetry

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchboard-rpc/switchboard/kit/requestid"
)

// Keys of the access log line's attributes. The message is AccessLogMessage.
const (
	AccessLogMessage = "rpc"

	LogKeyMethod   = "method"
	LogKeyCode     = "code"
	LogKeyDuration = "duration"
	LogKeyPeer     = "peer"
	LogKeyStream   = "stream"
)

// AccessLogOptions configures [AccessLog]. The zero value logs successes at
// Debug, never samples them, and identifies the peer by its address.
type AccessLogOptions struct {
	// SuccessLevel is the level of calls that end with codes.OK. Its zero
	// value, which is slog.LevelInfo, means Debug; to log every success at
	// Info set SampleEvery to 1 instead.
	SuccessLevel slog.Level

	// SampleEvery, when > 0, also logs every SampleEvery-th successful call
	// at Info (or at SuccessLevel if that is higher), counted across both
	// interceptors.
	SampleEvery int

	// Identity returns the peer's identity (for example the subject of its
	// mTLS certificate) for the peer field. Nil means the peer's network
	// address from google.golang.org/grpc/peer. It must be safe for
	// concurrent use and must not return secrets.
	Identity func(ctx context.Context) string
}

// AccessLog returns server interceptors that log one line per call with the
// message "rpc" and the attributes method (the full method name), code (the
// status code's name, "OK", "NotFound"...), duration (float64 seconds, as in
// the OpenTelemetry and Prometheus metrics), peer, request_id (when the
// context carries one, so install AccessLog after the interceptor that
// stores it) and stream=true for streaming calls. Payloads, metadata and
// status messages are never logged. The line is logged with the call's
// context, so a logger built on NewLogHandler adds trace_id and span_id.
//
// Failed calls are always logged: at Warn for codes a client causes
// (InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
// Unauthenticated, FailedPrecondition, OutOfRange, ResourceExhausted,
// Aborted), at Info for Canceled (the caller went away), and at Error for
// server faults (Internal, Unknown, DataLoss, Unavailable,
// DeadlineExceeded, Unimplemented, and any code not listed). Failures of
// grpc.health.v1 methods other than server faults are logged like
// successes: health watches end Canceled whenever a client leaves.
// Successful calls are logged at opts.SuccessLevel (Debug unless
// set), and every opts.SampleEvery-th success at Info. A call whose level the
// logger does not enable costs a level check and, with sampling, an atomic
// add: no attributes are built.
//
// The interceptors are safe for concurrent use and hold nothing that needs
// closing; logger stays owned by the caller. A nil logger discards.
func AccessLog(logger *slog.Logger, opts AccessLogOptions) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	al := NewAccessLogger(logger, opts)
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		al.Log(ctx, info.FullMethod, false, start, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		al.Log(ss.Context(), info.FullMethod, true, start, err)
		return err
	}
	return unary, stream
}

// AccessLogger writes the lines of AccessLog's interceptors, for a chain
// that calls it itself rather than through an interceptor of its own
// (kit/server does, to save grpc the interceptor's closures per call). It
// is safe for concurrent use and holds nothing that needs closing.
type AccessLogger struct {
	logger    *slog.Logger
	opts      AccessLogOptions
	successes atomic.Uint64
}

// NewAccessLogger returns the logger of AccessLog's lines: the same
// levels, sampling and attributes. A nil logger discards.
func NewAccessLogger(logger *slog.Logger, opts AccessLogOptions) *AccessLogger {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	al := &AccessLogger{logger: logger, opts: opts}
	if al.opts.SuccessLevel == 0 {
		al.opts.SuccessLevel = slog.LevelDebug
	}
	return al
}

// healthMethodPrefix names the grpc.health.v1 methods, whose ordinary
// failures are logged like successes.
const healthMethodPrefix = "/grpc.health.v1.Health/"

// Log logs the call of method (streaming when isStream) that started at
// start and ended with err, as AccessLog describes: ctx is the call's
// context, with its request id. A line the logger does not enable costs a
// level check and, with sampling, an atomic add.
func (al *AccessLogger) Log(ctx context.Context, method string, isStream bool, start time.Time, err error) {
	code := status.Code(err)
	level := al.opts.SuccessLevel
	if code != codes.OK {
		level = codeLevel(code)
		if level < slog.LevelError && strings.HasPrefix(method, healthMethodPrefix) {
			// Health watches end Canceled whenever a client goes away.
			level = al.opts.SuccessLevel
		}
	} else if al.opts.SampleEvery > 0 && al.successes.Add(1)%uint64(al.opts.SampleEvery) == 0 {
		level = max(level, slog.LevelInfo)
	}
	if !al.logger.Enabled(ctx, level) {
		return
	}
	dur := time.Since(start)
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs,
		slog.String(LogKeyMethod, method),
		slog.String(LogKeyCode, code.String()),
		slog.Float64(LogKeyDuration, dur.Seconds()),
		slog.String(LogKeyPeer, al.peer(ctx)),
	)
	if id := requestid.FromContext(ctx); id != "" {
		attrs = append(attrs, slog.String(LogKeyRequestID, id))
	}
	if isStream {
		attrs = append(attrs, slog.Bool(LogKeyStream, true))
	}
	al.logger.LogAttrs(ctx, level, AccessLogMessage, attrs...)
}

func (al *AccessLogger) peer(ctx context.Context) string {
	if al.opts.Identity != nil {
		return al.opts.Identity(ctx)
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// codeLevel is the level of a call that failed with code.
func codeLevel(code codes.Code) slog.Level {
	switch code {
	case codes.OK:
		return slog.LevelInfo
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition,
		codes.OutOfRange, codes.ResourceExhausted, codes.Aborted:
		return slog.LevelWarn
	case codes.Canceled: // the caller went away: nobody's fault
		return slog.LevelInfo
	default: // Internal, Unknown, DataLoss, Unavailable, DeadlineExceeded, Unimplemented, unknown codes
		return slog.LevelError
	}
}
