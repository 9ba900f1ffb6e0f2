package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchboard-rpc/switchboard/gen/openapi"
	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/identity"
)

// Defaults of a Config.
const (
	// DefaultMaxBodyBytes bounds a request body: 1 MiB.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultTimeout is the deadline of a unary call.
	DefaultTimeout = 10 * time.Second
	// DefaultStreamTimeout is the longest a server stream stays open.
	DefaultStreamTimeout = 30 * time.Minute
)

// Limits of the HTTP server that Serve runs.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// readyTimeout bounds the health checks behind /readyz; readyCacheFor
	// is how long their result answers further probes.
	readyTimeout  = 2 * time.Second
	readyCacheFor = time.Second
)

// Config configures a Gateway. Only cmd/ (through internal/system) fills
// it in.
type Config struct {
	// Dial connects to a service by name ("identity", "order"...), over
	// mTLS as the gateway, with the kit client and the given options
	// added to its own. The Gateway closes what it returns.
	Dial func(service string, opts ...client.Option) (*grpc.ClientConn, error)
	// Services names the services that run, among Upstreams(): the
	// gateway dials these. The routes of the others answer UNAVAILABLE
	// (reason SERVICE_NOT_RUNNING). identity must be among them: its keys
	// verify access tokens.
	Services []string
	// Revocations, if set, makes the gateway refuse revoked access
	// tokens, as the services do.
	Revocations auth.Revocations
	// Telemetry, if set, records the HTTP metrics
	// (http.server.request.duration) on its meter provider and takes the
	// W3C trace context of requests into the calls' context (Dial should
	// then add client.WithTelemetry). Without it, traceparent and
	// tracestate are forwarded as they came.
	Telemetry *telemetry.Telemetry
	// AllowedOrigins are the origins ("https://shop.example.com") allowed
	// to call from a browser (CORS); "*" allows any. Empty allows none.
	AllowedOrigins []string
	// MaxBodyBytes bounds a request body (default DefaultMaxBodyBytes);
	// larger ones get 413.
	MaxBodyBytes int64
	// Timeout is the deadline of a unary call (default DefaultTimeout).
	Timeout time.Duration
	// StreamTimeout bounds a server stream (default DefaultStreamTimeout).
	StreamTimeout time.Duration
	// Limits are the rate limits, by gRPC method ("/package.Service/Method")
	// and per client: the user of a verified token, else the client's IP
	// address. The zero value limits nothing.
	Limits ratelimit.Limits
}

// withDefaults checks c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Dial == nil {
		errs = append(errs, errors.New("gateway: Config.Dial is nil"))
	}
	known := Upstreams()
	for _, s := range c.Services {
		if !slices.Contains(known, s) {
			errs = append(errs, fmt.Errorf("gateway: Config.Services: %q has no routes (known: %s)", s, strings.Join(known, ", ")))
		}
	}
	if !slices.Contains(c.Services, "identity") {
		errs = append(errs, errors.New("gateway: Config.Services must name identity, whose keys verify tokens"))
	}
	if c.MaxBodyBytes < 0 || c.Timeout < 0 || c.StreamTimeout < 0 {
		errs = append(errs, errors.New("gateway: negative MaxBodyBytes, Timeout or StreamTimeout"))
	}
	for _, o := range c.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = DefaultStreamTimeout
	}
	return c, errors.Join(errs...)
}

// checkOrigin accepts "*" and a serialized origin: scheme://host[:port].
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("gateway: allowed origin %q: want scheme://host[:port] or *", o)
	}
	return nil
}

// Gateway is the REST/JSON front of the public RPCs: an http.Handler that
// verifies access tokens, limits rates and bodies, answers CORS, and
// forwards each route of proto/switchboard/http.yaml to its service over
// gRPC. It serves /healthz, /readyz and /openapi.json besides. It is safe
// for concurrent use. Close releases its connections.
type Gateway struct {
	cfg       Config
	logger    *slog.Logger
	mux       *runtime.ServeMux
	routes    *routes
	verifier  *auth.Verifier
	limiter   *ratelimit.Limiter
	marshaler runtime.Marshaler
	prop      propagation.TextMapPropagator // nil without Telemetry
	duration  metric.Float64Histogram       // nil without Telemetry
	conns     map[string]*grpc.ClientConn
	cors      corsPolicy
	openapi   openapiDoc
	ready     readiness

	draining    atomic.Bool
	stopping    context.Context // done when Shutdown starts: ends streams
	stopStreams context.CancelFunc
	srv         *http.Server
	closeOnce   sync.Once
}

// New builds a Gateway: it checks cfg, dials every service of
// cfg.Services (lazily: nothing connects before the first call) and
// registers the routes. ctx bounds only the construction.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rs, err := newRoutes()
	if err != nil {
		return nil, err
	}
	limiter, err := ratelimit.New(cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{
		cfg:     cfg,
		logger:  logger,
		routes:  rs,
		limiter: limiter,
		marshaler: &jsonMarshaler{JSONPb: &runtime.JSONPb{
			// Field names as the OpenAPI document has them (lowerCamel);
			// zero values shown; fields the message lacks refused.
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}},
		conns:   map[string]*grpc.ClientConn{},
		cors:    newCORSPolicy(cfg.AllowedOrigins, rs.methods()),
		openapi: newOpenAPIDoc(openapi.Document),
	}
	g.stopping, g.stopStreams = context.WithCancel(context.WithoutCancel(ctx))
	if err := g.dial(); err != nil {
		return nil, errors.Join(err, g.Close())
	}
	if err := g.instrument(); err != nil {
		return nil, errors.Join(err, g.Close())
	}
	opts := []auth.VerifierOption{auth.WithLogger(logger)}
	if cfg.Revocations != nil {
		opts = append(opts, auth.WithRevocations(cfg.Revocations))
	}
	keys := identity.JWKSFromClient(identityv1.NewIdentityServiceClient(g.conns["identity"]))
	if g.verifier, err = auth.NewVerifier(keys, auth.DefaultIssuer, auth.DefaultAudience, opts...); err != nil {
		return nil, errors.Join(fmt.Errorf("gateway: %w", err), g.Close())
	}
	g.mux = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, g.marshaler),
		runtime.WithIncomingHeaderMatcher(g.incomingHeader),
		runtime.WithOutgoingHeaderMatcher(dropHeader),
		runtime.WithOutgoingTrailerMatcher(dropHeader),
		runtime.WithErrorHandler(g.errorHandler),
		runtime.WithStreamErrorHandler(g.streamErrorHandler),
		runtime.WithRoutingErrorHandler(g.routingErrorHandler),
		runtime.WithDisablePathLengthFallback(),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithMiddlewares(g.routeMiddleware),
	)
	for _, u := range upstreams {
		var cc grpc.ClientConnInterface = unavailableConn{service: u.name}
		if conn, ok := g.conns[u.name]; ok {
			cc = conn
		}
		if err := u.register(ctx, g.mux, cc); err != nil {
			return nil, errors.Join(fmt.Errorf("gateway: register %s: %w", u.name, err), g.Close())
		}
	}
	g.srv = &http.Server{
		Handler:           g,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return g, nil
}

// dial connects to every service of the Config, with retries of the
// methods their descriptors declare idempotent.
func (g *Gateway) dial() error {
	for _, u := range upstreams {
		if !slices.Contains(g.cfg.Services, u.name) {
			continue
		}
		sd, err := serviceDescriptor(u.service)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		conn, err := g.cfg.Dial(u.name,
			client.WithIdempotentMethods(client.IdempotentMethods(sd)...),
			client.WithTimeout(g.cfg.Timeout))
		if err != nil {
			return fmt.Errorf("gateway: dial %s: %w", u.name, err)
		}
		g.conns[u.name] = conn
	}
	return nil
}

// incomingHeader is the allow-list of request headers forwarded as gRPC
// metadata; everything else stays at the gateway. Authorization is
// forwarded by the runtime itself (on routes that need a token; public
// routes drop it), and the request id by the kit client from the context.
func (g *Gateway) incomingHeader(key string) (string, bool) {
	switch k := strings.ToLower(key); k {
	case "x-canary":
		return k, true
	case "traceparent", "tracestate":
		// With telemetry, the trace context is taken into the context and
		// the kit client sends it on; forwarding it too would send it
		// twice.
		return k, g.prop == nil
	}
	return "", false
}

// dropHeader forwards no response metadata of the services to clients.
func dropHeader(string) (string, bool) { return "", false }

// Serve serves HTTP on lis until Shutdown, with bounded header reads, idle
// connections and header sizes (a unary call is bounded by its deadline,
// a stream by StreamTimeout). It returns nil after Shutdown.
func (g *Gateway) Serve(lis net.Listener) error {
	if err := g.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// Shutdown stops Serve gracefully: /readyz turns 503, open streams end
// with UNAVAILABLE (reason SHUTTING_DOWN), and unary calls in flight
// finish, until ctx ends, when the remaining connections are closed. It
// does not close the service connections: Close does.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.draining.Store(true)
	g.stopStreams()
	if err := g.srv.Shutdown(ctx); err != nil {
		return errors.Join(fmt.Errorf("gateway: shutdown: %w", err), g.srv.Close())
	}
	return nil
}

// Close closes the connections to the services. Call it after Shutdown;
// calls after the first do nothing.
func (g *Gateway) Close() error {
	var errs []error
	g.closeOnce.Do(func() {
		g.stopStreams()
		for name, c := range g.conns {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("gateway: close %s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// unavailableConn stands for a service that does not run: every call
// fails with UNAVAILABLE.
type unavailableConn struct{ service string }

func (c unavailableConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return c.err()
}

func (c unavailableConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, c.err()
}

func (c unavailableConn) err() error {
	return status.Unavailable(Domain, ReasonServiceNotRunning, c.service+" does not run in this deployment", 0)
}

// jsonMarshaler is JSONPb whose streams are newline-delimited JSON.
type jsonMarshaler struct{ *runtime.JSONPb }

// StreamContentType implements runtime.StreamContentType.
func (*jsonMarshaler) StreamContentType(any) string { return "application/x-ndjson" }

// openapiDoc is the OpenAPI document and its entity tag.
type openapiDoc struct {
	body []byte
	etag string
}

func newOpenAPIDoc(body []byte) openapiDoc {
	sum := sha256.Sum256(body)
	return openapiDoc{body: body, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
}
