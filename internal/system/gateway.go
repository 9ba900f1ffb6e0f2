package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/gateway"
)

// GatewayName is the gateway's service identity: its certificate's name,
// which the services' policies list where they admit it.
const GatewayName = "gateway"

// GatewayConfig configures the REST gateway of a run.
type GatewayConfig struct {
	// Addr is where the gateway serves HTTP ("127.0.0.1:8080"; port 0
	// picks a free one); empty turns it off.
	Addr string
	// AllowedOrigins are the origins browsers may call from (CORS); "*"
	// allows any, empty none.
	AllowedOrigins []string
	// MaxBodyBytes bounds request bodies; 0 means the gateway's default
	// (1 MiB).
	MaxBodyBytes int64
	// Timeout is the deadline of a unary call; 0 means the gateway's
	// default (10s).
	Timeout time.Duration
	// Limits are the gateway's rate limits, per gRPC method and per client
	// (user, else IP address).
	Limits ratelimit.Limits
}

// gatewayRun is the gateway of a run. A nil *gatewayRun is a run without
// one: its methods do nothing.
type gatewayRun struct {
	lis    net.Listener
	gw     *gateway.Gateway
	done   chan struct{} // closed when Serve returns
	err    error         // Serve's error, set before done is closed
	closed bool          // the listener is owned by Serve
}

// listenGateway binds the gateway's address, before any service serves,
// so that a port in use fails the run at once. It returns nil when the
// gateway is off.
func listenGateway(cfg Config) (*gatewayRun, error) {
	if cfg.Gateway.Addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", cfg.Gateway.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return &gatewayRun{lis: lis, done: make(chan struct{})}, nil
}

// closeListener closes the listener if the gateway never served it.
func (g *gatewayRun) closeListener() {
	if g != nil && !g.closed {
		_ = g.lis.Close()
	}
}

// start builds the gateway, as GatewayName over mTLS to the services of
// the run (book), to the peers of the others or through the registry
// (disc), and serves it.
func (g *gatewayRun) start(ctx context.Context, cfg Config, tel *telemetry.Telemetry, book map[string]string, revocations auth.Revocations, disc *discoveryRun) error {
	if g == nil {
		return nil
	}
	logger := cfg.Logger.With(slog.String("service", GatewayName))
	src, err := certs.NewSource(certs.FilesIn(cfg.CertsDir(), GatewayName), certs.WithLogger(logger))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := tel.Registry().Register(src.Collector()); err != nil {
		return fmt.Errorf("gateway: certificate metrics: %w", err)
	}
	// Services are reached as the others reach them: in this run, at a
	// peer address, or through the registry.
	dial := func(service string, opts ...client.Option) (*grpc.ClientConn, error) {
		target, topts, err := disc.target(service, book)
		if err != nil {
			return nil, err
		}
		return client.Dial(target, append(append(topts,
			client.WithCredentials(certs.ClientCredentials(src, service)),
			client.WithTelemetry(tel)), opts...)...)
	}
	// Every service of the system that has routes: those of this run by
	// their address, the others as peers.
	var upstreams []string
	for _, s := range Services() {
		if slices.Contains(gateway.Upstreams(), s.Name) {
			upstreams = append(upstreams, s.Name)
		}
	}
	gw, err := gateway.New(ctx, gateway.Config{
		Dial:           dial,
		Services:       upstreams,
		Revocations:    revocations,
		Telemetry:      tel,
		AllowedOrigins: cfg.Gateway.AllowedOrigins,
		MaxBodyBytes:   cfg.Gateway.MaxBodyBytes,
		Timeout:        cfg.Gateway.Timeout,
		Limits:         cfg.Gateway.Limits,
	}, logger)
	if err != nil {
		return err
	}
	g.gw, g.closed = gw, true
	go func() {
		g.err = gw.Serve(g.lis)
		close(g.done)
	}()
	return nil
}

// exited is closed when the gateway stops serving; nil (never ready)
// without a gateway or before start.
func (g *gatewayRun) exited() <-chan struct{} {
	if g == nil || g.gw == nil {
		return nil
	}
	return g.done
}

// serveErr is why the gateway stopped serving, once exited is closed.
func (g *gatewayRun) serveErr() error {
	if g.err != nil {
		return g.err
	}
	return errors.New("gateway stopped serving")
}

// stop shuts the gateway down gracefully within ctx and closes its
// connections to the services.
func (g *gatewayRun) stop(ctx context.Context) error {
	if g == nil || g.gw == nil {
		return nil
	}
	err := g.gw.Shutdown(ctx)
	select {
	case <-g.done:
		err = errors.Join(err, g.err)
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("gateway: %w", ctx.Err()))
	}
	return errors.Join(err, g.gw.Close())
}

// url is the gateway's base URL.
func (g *gatewayRun) url() string { return "http://" + g.lis.Addr().String() }
