package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// Route labels of requests that no route of the API takes, in logs and
// metrics.
const (
	routeUnmatched = "unmatched"
	routePreflight = "cors-preflight"
	routeHealthz   = "/healthz"
	routeReadyz    = "/readyz"
	routeOpenAPI   = "/openapi.json"
)

// Access log keys beyond the kit's.
const (
	logKeyRoute  = "route"
	logKeyStatus = "status"
	logKeyBytes  = "bytes"
	// AccessLogMessage is the message of the access log line of each
	// request.
	AccessLogMessage = "http"
)

// meterName is the instrumentation scope of the gateway's metrics.
const meterName = "github.com/switchboard-rpc/switchboard/services/gateway"

// The errors of the token check, made once.
var (
	errTokenMissing    = status.Unauthenticated(status.KitDomain, auth.ReasonTokenMissing, "access token missing")
	errHeaderMalformed = status.Unauthenticated(status.KitDomain, auth.ReasonTokenMalformed, `authorization header must be one "Bearer <token>"`)
)

// state is what the layers of one request share through its context.
type state struct {
	rec          *recorder
	route        string
	bodyTooLarge atomic.Bool
}

type stateKey struct{}

func stateFrom(ctx context.Context) *state {
	s, _ := ctx.Value(stateKey{}).(*state)
	return s
}

// ServeHTTP implements http.Handler: request id, access log and metrics,
// CORS, the gateway's own endpoints, the body limit, then the routes.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	st := &state{rec: rec, route: routeUnmatched}
	id := r.Header.Get(requestid.Header)
	if !requestid.Valid(id) {
		id = requestid.New()
	}
	rec.Header().Set(requestid.Header, id)
	ctx := context.WithValue(requestid.NewContext(r.Context(), id), stateKey{}, st)
	if g.prop != nil {
		ctx = g.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	r = r.WithContext(ctx)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				panic(p)
			}
			g.logger.LogAttrs(ctx, slog.LevelError, "gateway: handler panicked",
				slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			if !rec.wroteHeader() {
				g.writeStatus(ctx, nil, rec, status.New(codes.Internal, Domain, status.ReasonInternal, "internal error"), http.StatusInternalServerError)
			}
		}
		g.observe(ctx, r, st, time.Since(start))
	}()

	// The gateway is the edge: what a client says about forwarding is not
	// believed. The runtime derives x-forwarded-for and -host from the
	// connection and the Host header.
	r.Header.Del("X-Forwarded-For")
	r.Header.Del("X-Forwarded-Host")
	r.Header.Del("Forwarded")

	if g.cors.handle(g, rec, r) {
		st.route = routePreflight
		return
	}
	switch r.URL.Path {
	case routeHealthz:
		st.route = routeHealthz
		g.serveHealthz(rec, r)
		return
	case routeReadyz:
		st.route = routeReadyz
		g.serveReadyz(rec, r)
		return
	case routeOpenAPI:
		st.route = routeOpenAPI
		g.serveOpenAPI(rec, r)
		return
	}
	if r.ContentLength > g.cfg.MaxBodyBytes {
		st.bodyTooLarge.Store(true)
		g.errorHandler(ctx, g.mux, g.marshaler, rec, r, errBodyTooLarge)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// MaxBytesReader gets the server's writer, so that the connection
		// is closed after an oversized body.
		r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes), st: st}
		// A slow body must not hold a call past its deadline; the margin
		// lets the call's own deadline answer first.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(g.cfg.Timeout + time.Second))
	}
	g.mux.ServeHTTP(rec, r)
}

// errBodyTooLarge is what the state's flag turns into 413.
var errBodyTooLarge = errors.New("request body too large")

// limitedBody flags the request when its body passes the limit; the
// runtime only sees a decoding error.
type limitedBody struct {
	io.ReadCloser
	st *state
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.st.bodyTooLarge.Store(true)
	}
	return n, err
}

// routeMiddleware runs after the mux matched a route and before its
// handler decodes anything: it checks the access token (or drops it on a
// public route), takes a token of the rate limits, and sets the call's
// deadline.
func (g *Gateway) routeMiddleware(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		ctx := r.Context()
		rt, known := g.routes.find(r)
		call := server.Call{}
		if known {
			call = server.Call{FullMethod: rt.rpc, ServerStream: rt.stream}
			if st := stateFrom(ctx); st != nil {
				st.route = rt.path
			}
		}
		var limitCtx context.Context
		if known && rt.public {
			// Public routes neither need nor forward a token: a stale one
			// must not stop a user from signing in again.
			r.Header.Del("Authorization")
			limitCtx = peer.NewContext(ctx, clientPeer(r))
		} else {
			user, err := g.authenticate(ctx, r)
			if err != nil {
				g.errorHandler(ctx, g.mux, g.marshaler, w, r, err)
				return
			}
			ctx = identity.WithUser(ctx, user)
			limitCtx = ctx
		}
		if err := g.limiter.Limit(limitCtx, call); err != nil {
			g.errorHandler(ctx, g.mux, g.marshaler, w, r, err)
			return
		}
		timeout := g.cfg.Timeout
		if call.ServerStream {
			timeout = g.cfg.StreamTimeout
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if call.ServerStream {
			stop := context.AfterFunc(g.stopping, cancel)
			defer stop()
		}
		next(w, r.WithContext(ctx), params)
	}
}

// authenticate verifies the request's bearer token and puts it back as
// the one authorization header the runtime forwards.
func (g *Gateway) authenticate(ctx context.Context, r *http.Request) (*identity.User, error) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return nil, errTokenMissing
	case 1:
	default:
		return nil, errHeaderMalformed
	}
	const scheme = "bearer "
	v := values[0]
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return nil, errHeaderMalformed
	}
	token := strings.TrimSpace(v[len(scheme):])
	if token == "" {
		return nil, errHeaderMalformed
	}
	user, err := g.verifier.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	r.Header.Set("Authorization", "Bearer "+token)
	return user, nil
}

// clientPeer is the request's client as a gRPC peer, for the rate
// limiter's per-address buckets.
func clientPeer(r *http.Request) *peer.Peer {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil {
		return &peer.Peer{Addr: &net.TCPAddr{IP: ip}}
	}
	return &peer.Peer{Addr: stringAddr(r.RemoteAddr)}
}

// stringAddr is a peer address that is not IP.
type stringAddr string

func (stringAddr) Network() string  { return "unknown" }
func (a stringAddr) String() string { return string(a) }

// instrument makes the HTTP metrics, when the Config has telemetry.
func (g *Gateway) instrument() error {
	if g.cfg.Telemetry == nil {
		return nil
	}
	g.prop = g.cfg.Telemetry.Propagator()
	meter := g.cfg.Telemetry.MeterProvider().Meter(meterName)
	// The OpenTelemetry HTTP semantic conventions: in Prometheus,
	// http_server_request_duration_seconds{http_request_method,
	// http_route, http_response_status_code}, whose _count counts the
	// requests.
	h, err := meter.Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	if err != nil {
		return err
	}
	g.duration = h
	return nil
}

// observe logs the request's access line and records its metrics. Neither
// holds a body, a query string or a token.
func (g *Gateway) observe(ctx context.Context, r *http.Request, st *state, took time.Duration) {
	code := st.rec.statusCode()
	if g.duration != nil {
		g.duration.Record(ctx, took.Seconds(), metric.WithAttributes(
			attribute.String("http.request.method", methodLabel(r.Method)),
			attribute.String("http.route", st.route),
			attribute.Int("http.response.status_code", code),
		))
	}
	level := slog.LevelInfo
	switch {
	case code >= 500:
		level = slog.LevelError
	case code == 499:
	case code >= 400:
		level = slog.LevelWarn
	}
	if !g.logger.Enabled(ctx, level) {
		return
	}
	g.logger.LogAttrs(ctx, level, AccessLogMessage,
		slog.String(telemetry.LogKeyMethod, r.Method),
		slog.String(logKeyRoute, st.route),
		slog.Int(logKeyStatus, code),
		slog.Float64(telemetry.LogKeyDuration, took.Seconds()),
		slog.Int64(logKeyBytes, st.rec.bytes),
		slog.String(telemetry.LogKeyPeer, r.RemoteAddr),
		slog.String(telemetry.LogKeyRequestID, requestid.FromContext(ctx)),
	)
}

// methodLabel bounds the method label to the known methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// recorder keeps the status and size of a response for the access log.
// It lets http.ResponseController reach the writer below (Flush, read
// deadlines).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// FlushError flushes the response, as http.ResponseController does.
func (r *recorder) FlushError() error {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return http.NewResponseController(r.ResponseWriter).Flush()
}

// Flush implements http.Flusher.
func (r *recorder) Flush() { _ = r.FlushError() }

// Unwrap returns the writer below, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) wroteHeader() bool { return r.status != 0 }

// statusCode is the status sent, 200 when the handler wrote nothing.
func (r *recorder) statusCode() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// corsPolicy answers cross-origin requests from allowed origins.
type corsPolicy struct {
	any     bool
	origins []string
	methods []string
	headers []string // allowed request headers, canonical
}

// corsHeaders are the request headers a browser may send.
var corsHeaders = []string{"Authorization", "Content-Type", "Traceparent", "Tracestate", "X-Canary", "X-Request-Id"}

func newCORSPolicy(origins, methods []string) corsPolicy {
	p := corsPolicy{methods: methods, headers: corsHeaders}
	for _, o := range origins {
		if o == "*" {
			p.any = true
			continue
		}
		p.origins = append(p.origins, strings.ToLower(o))
	}
	return p
}

func (p *corsPolicy) allows(origin string) bool {
	return p.any || slices.Contains(p.origins, strings.ToLower(origin))
}

// handle adds the CORS headers of a request with an Origin, and answers a
// preflight itself, reporting true.
func (p *corsPolicy) handle(g *Gateway, w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	allowOrigin := origin
	if p.any {
		allowOrigin = "*"
	}
	method := r.Header.Get("Access-Control-Request-Method")
	if r.Method != http.MethodOptions || method == "" {
		if p.allows(origin) {
			h.Set("Access-Control-Allow-Origin", allowOrigin)
			h.Set("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate, X-Request-Id")
		}
		return false
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	if !p.allows(origin) || !slices.Contains(p.methods, method) || !p.headersAllowed(r.Header.Get("Access-Control-Request-Headers")) {
		g.writeStatus(r.Context(), nil, w, status.New(codes.PermissionDenied, Domain, ReasonOriginNotAllowed,
			"cross-origin request not allowed"), http.StatusForbidden)
		return true
	}
	h.Set("Access-Control-Allow-Origin", allowOrigin)
	h.Set("Access-Control-Allow-Methods", strings.Join(p.methods, ", "))
	h.Set("Access-Control-Allow-Headers", strings.Join(p.headers, ", "))
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// headersAllowed reports whether every header of an
// Access-Control-Request-Headers list is allowed.
func (p *corsPolicy) headersAllowed(list string) bool {
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.ContainsFunc(p.headers, func(h string) bool { return strings.EqualFold(h, name) }) {
			return false
		}
	}
	return true
}
