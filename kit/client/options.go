package client

import (
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// RetryPolicy is grpc's retry policy for idempotent methods.
type RetryPolicy struct {
	// MaxAttempts counts the first try: 2 to 5.
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the randomized wait between tries.
	InitialBackoff, MaxBackoff time.Duration
	// Multiplier grows the backoff after each try.
	Multiplier float64
}

// BreakerSettings configure the circuit breaker.
type BreakerSettings struct {
	// ConsecutiveFailures opens the breaker (default 5).
	ConsecutiveFailures uint32
	// FailureRatio also opens it when at least MinRequests calls in the
	// current interval failed at this ratio or more (default 0.5 of 20).
	FailureRatio float64
	MinRequests  uint32
	// Interval clears the counts while closed (default 10s).
	Interval time.Duration
	// OpenTimeout is how long it stays open before letting probes through
	// (default 5s).
	OpenTimeout time.Duration
	// HalfOpenProbes is how many calls it lets through while half-open
	// (default 1).
	HalfOpenProbes uint32
	// OnStateChange, if set, is told of every state change.
	OnStateChange func(name string, from, to gobreaker.State)
}

// Option configures Dial.
type Option func(*options)

type options struct {
	creds          credentials.TransportCredentials
	insecure       bool
	tel            *telemetry.Telemetry
	serviceConfig  string
	idempotent     []string
	retry          RetryPolicy
	timeout        time.Duration
	margin         time.Duration
	breaker        *BreakerSettings
	keepalive      keepalive.ClientParameters
	forward        []string
	maxRecv        int
	maxSend        int
	window         int32
	connWindow     int32
	extra          []grpc.DialOption
	unaryInner     []grpc.UnaryClientInterceptor
	streamInner    []grpc.StreamClientInterceptor
	healthCheck    bool
	loadBalancing  string
	compressorName string
}

func defaults() options {
	return options{
		retry: RetryPolicy{
			MaxAttempts:    4,
			InitialBackoff: 50 * time.Millisecond,
			MaxBackoff:     time.Second,
			Multiplier:     2,
		},
		timeout: 10 * time.Second,
		margin:  20 * time.Millisecond,
		breaker: &BreakerSettings{},
		keepalive: keepalive.ClientParameters{
			// kit/server lets clients ping every 10s at most; pinging every
			// 30s keeps NATs and load balancers from dropping idle
			// connections without risking GOAWAY.
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		},
		forward:       []string{"authorization"},
		maxRecv:       4 << 20,
		maxSend:       4 << 20,
		healthCheck:   true,
		loadBalancing: "round_robin",
	}
}

// WithCredentials sets the transport credentials (mTLS from kit/certs in
// production). Dial needs either this or WithInsecure.
func WithCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithInsecure dials in plaintext. Only for tests and local tools.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithTelemetry adds tracing (with W3C trace context propagation), gRFC A66
// client metrics and stream metrics from t.
func WithTelemetry(t *telemetry.Telemetry) Option { return func(o *options) { o.tel = t } }

// WithIdempotentMethods declares methods ("/package.Service/Method") safe to
// retry on UNAVAILABLE.
func WithIdempotentMethods(fullMethods ...string) Option {
	return func(o *options) { o.idempotent = append(o.idempotent, fullMethods...) }
}

// WithRetryPolicy replaces the retry policy of idempotent methods (default
// 4 attempts, 50ms to 1s backoff, multiplier 2).
func WithRetryPolicy(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithServiceConfig replaces the generated default service config with a
// JSON one of the caller's.
func WithServiceConfig(json string) Option { return func(o *options) { o.serviceConfig = json } }

// WithLoadBalancing sets the load balancing policy of the default service
// config (default "round_robin").
func WithLoadBalancing(policy string) Option { return func(o *options) { o.loadBalancing = policy } }

// WithHealthCheck turns client-side health checking on or off (default
// on): with it, a backend reporting NOT_SERVING gets no new calls.
func WithHealthCheck(on bool) Option { return func(o *options) { o.healthCheck = on } }

// WithTimeout sets the default deadline of unary calls (default 10s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithDeadlineMargin sets how much earlier than the caller's deadline an
// outgoing call must end (default 20ms).
func WithDeadlineMargin(d time.Duration) Option { return func(o *options) { o.margin = d } }

// WithBreaker sets the circuit breaker's settings; nil turns it off.
func WithBreaker(s *BreakerSettings) Option { return func(o *options) { o.breaker = s } }

// WithKeepalive replaces the keepalive parameters. Time must not be below
// the server's enforcement MinTime (kit/server: 10s) or the server will
// close the connection.
func WithKeepalive(p keepalive.ClientParameters) Option { return func(o *options) { o.keepalive = p } }

// WithForwardedHeaders sets the incoming metadata keys copied onto outgoing
// calls (default "authorization", so the user's token reaches every service
// that must verify it).
func WithForwardedHeaders(keys ...string) Option { return func(o *options) { o.forward = keys } }

// WithMaxMessageSize bounds received and sent messages (default 4 MiB).
func WithMaxMessageSize(recv, send int) Option {
	return func(o *options) { o.maxRecv, o.maxSend = recv, send }
}

// WithFlowControl sets fixed HTTP/2 flow-control windows per stream and per
// connection, turning off grpc's dynamic window sizing.
func WithFlowControl(stream, conn int32) Option {
	return func(o *options) { o.window, o.connWindow = stream, conn }
}

// WithCompressor compresses every call with the named compressor ("gzip"
// or "zstd").
func WithCompressor(name string) Option { return func(o *options) { o.compressorName = name } }

// WithUnaryInterceptors appends interceptors that run after the kit's.
func WithUnaryInterceptors(i ...grpc.UnaryClientInterceptor) Option {
	return func(o *options) { o.unaryInner = append(o.unaryInner, i...) }
}

// WithStreamInterceptors appends stream interceptors that run after the
// kit's.
func WithStreamInterceptors(i ...grpc.StreamClientInterceptor) Option {
	return func(o *options) { o.streamInner = append(o.streamInner, i...) }
}

// WithDialOptions passes options straight to grpc.NewClient, after the
// kit's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}
