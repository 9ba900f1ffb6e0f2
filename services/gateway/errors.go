package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Domain is the ErrorInfo domain of the errors the gateway itself makes.
const Domain = "gateway.switchboard.dev"

// Reasons in the ErrorInfo (domain Domain) of the errors the gateway makes.
const (
	// ReasonMalformedRequest (INVALID_ARGUMENT, 400): the body is not
	// valid JSON for the request message, or a query parameter does not
	// parse; a BadRequest names "body" or "query".
	ReasonMalformedRequest = "MALFORMED_REQUEST"
	// ReasonBodyTooLarge (INVALID_ARGUMENT, 413): the body is larger than
	// Config.MaxBodyBytes; the ErrorInfo metadata "limit" says how large
	// it may be.
	ReasonBodyTooLarge = "BODY_TOO_LARGE"
	// ReasonRouteNotFound (NOT_FOUND, 404): no route has the path.
	ReasonRouteNotFound = "ROUTE_NOT_FOUND"
	// ReasonMethodNotAllowed (UNIMPLEMENTED, 405): the path has routes,
	// none for the method; the Allow header lists theirs.
	ReasonMethodNotAllowed = "METHOD_NOT_ALLOWED"
	// ReasonOriginNotAllowed (PERMISSION_DENIED, 403): a CORS preflight
	// from an origin, or for a method or header, that is not allowed.
	ReasonOriginNotAllowed = "CORS_NOT_ALLOWED"
	// ReasonServiceNotRunning (UNAVAILABLE, 503): the route's service is
	// not part of this deployment (yet).
	ReasonServiceNotRunning = "SERVICE_NOT_RUNNING"
	// ReasonUpstreamUnavailable (UNAVAILABLE, 503): the service could not
	// be reached.
	ReasonUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	// ReasonShuttingDown (UNAVAILABLE, 503): the gateway is stopping; a
	// stream it ends for that may be opened again elsewhere.
	ReasonShuttingDown = "SHUTTING_DOWN"
)

// realm is the realm of the WWW-Authenticate challenges.
const realm = "switchboard"

// publicStatus turns err into what the client may see and its HTTP status:
// statuses the services made (they carry an ErrorInfo) pass unchanged,
// except that INTERNAL, UNKNOWN and DATA_LOSS become a generic INTERNAL;
// statuses without an ErrorInfo come from grpc or the gateway runtime and
// get one, with a generic message except for request parsing errors,
// whose message says what did not parse.
func (g *Gateway) publicStatus(ctx context.Context, r *http.Request, err error) (*grpcstatus.Status, int) {
	if st := stateFrom(ctx); st != nil && st.bodyTooLarge.Load() {
		return status.New(codes.InvalidArgument, Domain, ReasonBodyTooLarge,
			"request body larger than "+strconv.FormatInt(g.cfg.MaxBodyBytes, 10)+" bytes",
			&errdetails.ErrorInfo{Metadata: map[string]string{"limit": strconv.FormatInt(g.cfg.MaxBodyBytes, 10)}}), http.StatusRequestEntityTooLarge
	}
	var custom *runtime.HTTPStatusError
	if errors.As(err, &custom) {
		// The mux's own errors: a malformed escape in the path.
		return status.New(codes.InvalidArgument, Domain, ReasonMalformedRequest, "malformed request path",
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "path", Description: "malformed percent-encoding"}}}), custom.HTTPStatus
	}
	st := g.sanitize(ctx, r, err)
	return st, runtime.HTTPStatusFromCode(st.Code())
}

// sanitize is publicStatus without the HTTP status.
func (g *Gateway) sanitize(ctx context.Context, r *http.Request, err error) *grpcstatus.Status {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = contextStatus(err)
	}
	st, _ := grpcstatus.FromError(err)
	if st == nil {
		st = grpcstatus.New(codes.Unknown, err.Error())
	}
	code := st.Code()
	info := status.Info(err)
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		domain := Domain
		if info != nil {
			domain = info.GetDomain()
		}
		g.logger.LogAttrs(ctx, slog.LevelError, "gateway: call failed with an internal error",
			slog.String("code", code.String()), slog.String("domain", domain), slog.String("error", st.Message()))
		return grpcstatus.Convert(status.Internal(domain))
	case codes.OK:
		// Only a broken handler reports an error with an OK status.
		return grpcstatus.Convert(status.Internal(Domain))
	}
	if info != nil {
		return st
	}
	if g.draining.Load() && (code == codes.Canceled || code == codes.Unavailable) {
		return status.New(codes.Unavailable, Domain, ReasonShuttingDown, "the gateway is shutting down; retry")
	}
	switch code {
	case codes.InvalidArgument:
		field := "query"
		if r != nil && r.Method != http.MethodGet {
			field = "body"
		}
		return status.New(codes.InvalidArgument, Domain, ReasonMalformedRequest, "malformed request",
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: st.Message()}}})
	case codes.Unavailable:
		g.logger.LogAttrs(ctx, slog.LevelWarn, "gateway: service unreachable", slog.String("error", st.Message()))
		return status.New(codes.Unavailable, Domain, ReasonUpstreamUnavailable, "service unavailable")
	}
	return status.New(code, Domain, "", genericMessage(code))
}

// contextStatus turns a context error into its status.
func contextStatus(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, status.KitDomain, status.ReasonDeadlineExceeded, "deadline exceeded")
	}
	return status.Error(codes.Canceled, status.KitDomain, status.ReasonCanceled, "request canceled")
}

// genericMessage says what code means and nothing more.
func genericMessage(c codes.Code) string {
	switch c {
	case codes.Canceled:
		return "request canceled"
	case codes.DeadlineExceeded:
		return "deadline exceeded"
	case codes.NotFound:
		return "not found"
	case codes.AlreadyExists:
		return "already exists"
	case codes.PermissionDenied:
		return "permission denied"
	case codes.Unauthenticated:
		return "unauthenticated"
	case codes.ResourceExhausted:
		return "resource exhausted"
	case codes.FailedPrecondition:
		return "failed precondition"
	case codes.Aborted:
		return "aborted"
	case codes.OutOfRange:
		return "out of range"
	case codes.Unimplemented:
		return "not implemented"
	}
	return "request failed"
}

// errorHandler is the mux's error handler, and the gateway's own: it
// writes the public status as JSON (a google.rpc.Status, details
// included) with the matching HTTP status, Retry-After from a RetryInfo,
// and WWW-Authenticate on 401.
func (g *Gateway) errorHandler(ctx context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st, code := g.publicStatus(ctx, r, err)
	g.writeStatus(ctx, m, w, st, code)
}

// writeStatus writes st as the response, with status code.
func (g *Gateway) writeStatus(ctx context.Context, m runtime.Marshaler, w http.ResponseWriter, st *grpcstatus.Status, code int) {
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	setErrorHeaders(h, st)
	if m == nil {
		m = g.marshaler
	}
	body, err := m.Marshal(st.Proto())
	if err != nil {
		g.logger.LogAttrs(ctx, slog.LevelError, "gateway: marshal an error", slog.String("error", err.Error()))
		code = http.StatusInternalServerError
		body = []byte(`{"code":13,"message":"internal error"}`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body) //nolint:gosec // G705: a marshalled google.rpc.Status served as application/json with nosniff
}

// setErrorHeaders sets Retry-After from st's RetryInfo and, for
// UNAUTHENTICATED, a Bearer challenge (RFC 6750).
func setErrorHeaders(h http.Header, st *grpcstatus.Status) {
	err := st.Err()
	if d, ok := status.RetryDelay(err); ok {
		secs := math.Ceil(d.Seconds())
		h.Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	if st.Code() != codes.Unauthenticated {
		return
	}
	challenge := `Bearer realm="` + realm + `"`
	if reason := status.Reason(err); reason != "" && reason != auth.ReasonTokenMissing {
		challenge += `, error="invalid_token", error_description="` + quotable(st.Message()) + `"`
	}
	h.Set("WWW-Authenticate", challenge)
}

// quotable keeps the characters RFC 6750 allows in error_description.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

// streamErrorHandler sanitizes the error that ends a stream, like
// publicStatus. If no message went out yet, the runtime sends it with its
// HTTP status; the headers of a RetryInfo or a challenge are set here.
func (g *Gateway) streamErrorHandler(ctx context.Context, err error) *grpcstatus.Status {
	st := g.sanitize(ctx, nil, err)
	if rs := stateFrom(ctx); rs != nil && rs.rec != nil && !rs.rec.wroteHeader() {
		setErrorHeaders(rs.rec.Header(), st)
	}
	return st
}

// routingErrorHandler answers a request no route takes: 404, or 405 with
// the Allow header when the path has routes for other methods.
func (g *Gateway) routingErrorHandler(ctx context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
	switch code {
	case http.StatusMethodNotAllowed:
		if allow := g.routes.allowed(r.URL.Path); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
		}
		g.writeStatus(ctx, m, w, status.New(codes.Unimplemented, Domain, ReasonMethodNotAllowed,
			"method "+r.Method+" not allowed here"), code)
	case http.StatusNotFound:
		g.writeStatus(ctx, m, w, status.New(codes.NotFound, Domain, ReasonRouteNotFound, "no route for this path"), code)
	default:
		g.writeStatus(ctx, m, w, status.New(codes.InvalidArgument, Domain, ReasonMalformedRequest, "malformed request"), http.StatusBadRequest)
	}
}
