package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Call describes the call an interceptor hook is asked about.
type Call struct {
	// FullMethod is "/package.Service/Method".
	FullMethod string
	// ClientStream is true when the client sends a stream of messages.
	ClientStream bool
	// ServerStream is true when the server sends a stream of messages.
	ServerStream bool
}

// IsStream reports whether the call is a stream of any kind.
func (c Call) IsStream() bool { return c.ClientStream || c.ServerStream }

// Authenticator establishes who is calling. It returns the context the rest
// of the chain and the handler see (typically carrying the identity) or an
// error, which should be an UNAUTHENTICATED status; any other error is sent
// as a generic UNAUTHENTICATED.
type Authenticator func(ctx context.Context, call Call) (context.Context, error)

// Authorizer decides whether the identity in ctx may make the call. Its
// error should be a PERMISSION_DENIED status; any other error is sent as a
// generic PERMISSION_DENIED.
type Authorizer func(ctx context.Context, call Call) error

// Limiter admits or refuses a call. Its error should be a RESOURCE_EXHAUSTED
// status with RetryInfo; any other error is sent as a generic
// RESOURCE_EXHAUSTED.
type Limiter func(ctx context.Context, call Call) error

// Deadlines bounds how long a unary call may run.
type Deadlines struct {
	// Default applies to calls that arrive without a deadline.
	Default time.Duration
	// Max cuts longer deadlines down to it.
	Max time.Duration
}

// StreamLimits bounds streams, separately from unary deadlines. Zero
// disables a limit.
type StreamLimits struct {
	// Idle ends a stream on which no message was sent or received for this
	// long, with DEADLINE_EXCEEDED and reason STREAM_IDLE. It is checked a
	// quarter of Idle apart (messages are counted, no clock is read per
	// message), so an idle stream ends up to Idle/4 late.
	Idle time.Duration
	// MaxLifetime ends any stream this long after it opened, with
	// DEADLINE_EXCEEDED and reason STREAM_MAX_LIFETIME.
	MaxLifetime time.Duration
}

// Option configures a Server.
type Option func(*options)

type options struct {
	creds        credentials.TransportCredentials
	insecure     bool
	logger       *slog.Logger
	tel          *telemetry.Telemetry
	accessLog    telemetry.AccessLogOptions
	deadlines    Deadlines
	perMethod    map[string]Deadlines
	streams      StreamLimits
	authn        Authenticator
	authz        Authorizer
	limiter      Limiter
	validator    *validate.Set
	keepalive    keepalive.ServerParameters
	enforcement  keepalive.EnforcementPolicy
	maxRecv      int
	maxSend      int
	maxStreams   uint32
	window       int32
	connWindow   int32
	drain        time.Duration
	graceTimeout time.Duration
	reflection   bool
	extra        []grpc.ServerOption
	unaryInner   []grpc.UnaryServerInterceptor
	streamInner  []grpc.StreamServerInterceptor
}

func defaults() options {
	return options{
		logger:    slog.New(slog.DiscardHandler),
		deadlines: Deadlines{Default: 10 * time.Second, Max: 60 * time.Second},
		streams:   StreamLimits{Idle: 5 * time.Minute, MaxLifetime: time.Hour},
		keepalive: keepalive.ServerParameters{
			MaxConnectionIdle: 15 * time.Minute,
			Time:              time.Minute,
			Timeout:           20 * time.Second,
		},
		enforcement: keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		},
		maxRecv:      4 << 20,
		maxSend:      4 << 20,
		maxStreams:   1000,
		drain:        2 * time.Second,
		graceTimeout: 15 * time.Second,
		reflection:   true,
	}
}

// WithCredentials sets the transport credentials (mTLS from kit/certs in
// production). A server needs either this or WithInsecure.
func WithCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithInsecure serves plaintext. Only for tests and local tools: every hop
// of a real deployment uses mTLS.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithLogger sets the logger for the access log, panics and lifecycle
// events. The default discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTelemetry adds tracing, gRFC A66 call metrics and stream metrics from
// t. The caller keeps ownership of t and shuts it down after the server.
func WithTelemetry(t *telemetry.Telemetry) Option { return func(o *options) { o.tel = t } }

// WithAccessLog sets how successful calls are logged; errors are always
// logged.
func WithAccessLog(a telemetry.AccessLogOptions) Option {
	return func(o *options) { o.accessLog = a }
}

// WithDeadlines sets the deadline policy of unary calls (default 10s, max
// 60s).
func WithDeadlines(d Deadlines) Option { return func(o *options) { o.deadlines = d } }

// WithMethodDeadlines overrides the deadline policy of one method, named
// "/package.Service/Method".
func WithMethodDeadlines(fullMethod string, d Deadlines) Option {
	return func(o *options) {
		if o.perMethod == nil {
			o.perMethod = make(map[string]Deadlines)
		}
		o.perMethod[fullMethod] = d
	}
}

// WithStreamLimits sets the idle timeout and maximum lifetime of streams
// (default 5 minutes and 1 hour).
func WithStreamLimits(l StreamLimits) Option { return func(o *options) { o.streams = l } }

// WithAuthenticator sets the authentication hook.
func WithAuthenticator(a Authenticator) Option { return func(o *options) { o.authn = a } }

// WithAuthorizer sets the authorization hook.
func WithAuthorizer(a Authorizer) Option { return func(o *options) { o.authz = a } }

// WithLimiter sets the rate limit hook.
func WithLimiter(l Limiter) Option { return func(o *options) { o.limiter = l } }

// WithValidator validates every request message with s. Serve refuses to
// start if a served method's request type has no rule in s.
func WithValidator(s *validate.Set) Option { return func(o *options) { o.validator = s } }

// WithKeepalive sets the keepalive parameters the server applies and the
// ping policy it enforces on clients (default: pings at most every 10s, with
// or without streams; a client pinging more often gets GOAWAY).
func WithKeepalive(p keepalive.ServerParameters, e keepalive.EnforcementPolicy) Option {
	return func(o *options) { o.keepalive, o.enforcement = p, e }
}

// WithMaxMessageSize bounds received and sent messages (default 4 MiB
// each). Larger messages fail with RESOURCE_EXHAUSTED.
func WithMaxMessageSize(recv, send int) Option {
	return func(o *options) { o.maxRecv, o.maxSend = recv, send }
}

// WithMaxConcurrentStreams bounds the calls in flight on one connection
// (default 1000).
func WithMaxConcurrentStreams(n uint32) Option { return func(o *options) { o.maxStreams = n } }

// WithFlowControl sets fixed HTTP/2 flow-control windows per stream and per
// connection, turning off grpc's dynamic (BDP) window sizing. Zero keeps the
// dynamic default.
func WithFlowControl(stream, conn int32) Option {
	return func(o *options) { o.window, o.connWindow = stream, conn }
}

// WithShutdown sets how Shutdown drains: it reports NOT_SERVING for drain
// (default 2s) so balancers move away, then waits up to grace (default 15s)
// for calls in flight before closing every connection.
func WithShutdown(drain, grace time.Duration) Option {
	return func(o *options) { o.drain, o.graceTimeout = drain, grace }
}

// WithReflection turns server reflection on or off (default on), which
// grpcurl and other tools use to discover services.
func WithReflection(on bool) Option { return func(o *options) { o.reflection = on } }

// WithUnaryInterceptors appends interceptors that run after validation,
// just before the handler.
func WithUnaryInterceptors(i ...grpc.UnaryServerInterceptor) Option {
	return func(o *options) { o.unaryInner = append(o.unaryInner, i...) }
}

// WithStreamInterceptors appends stream interceptors that run after the
// kit's chain, just before the handler.
func WithStreamInterceptors(i ...grpc.StreamServerInterceptor) Option {
	return func(o *options) { o.streamInner = append(o.streamInner, i...) }
}

// WithGRPCOptions passes options straight to grpc.NewServer, after the
// kit's own.
func WithGRPCOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}
