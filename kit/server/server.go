package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Registers gzip and zstd.
	_ "github.com/switchboard-rpc/switchboard/kit/compression"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// Server is a gRPC server with the kit's chain, health and reflection.
type Server struct {
	opts   options
	grpc   *grpc.Server
	health *health.Server

	mu       sync.Mutex
	services []string
	stopping bool
}

// New builds a Server. It fails when no transport security was chosen
// (WithCredentials or, deliberately, WithInsecure).
func New(opts ...Option) (*Server, error) {
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	if o.creds == nil && !o.insecure {
		return nil, errors.New("server: no transport credentials: use WithCredentials, or WithInsecure on purpose")
	}
	if o.maxRecv <= 0 || o.maxSend <= 0 {
		return nil, errors.New("server: message size limits must be positive")
	}
	s := &Server{opts: o, health: health.NewServer()}
	s.grpc = grpc.NewServer(s.grpcOptions()...)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if o.reflection {
		reflection.Register(s.grpc)
	}
	// Until Serve, nothing is serving.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

func (s *Server) grpcOptions() []grpc.ServerOption {
	o := &s.opts
	c := &chain{opts: o}
	if o.logger != nil {
		c.access = telemetry.NewAccessLogger(o.logger, o.accessLog)
	}
	// The kit's chain is one interceptor of each kind: grpc allocates a
	// closure per interceptor beyond the first on every call.
	unary := append([]grpc.UnaryServerInterceptor{c.unaryEntry}, o.unaryInner...)
	stream := append([]grpc.StreamServerInterceptor{c.streamEntry}, o.streamInner...)

	// Telemetry comes first: its interceptors, when it records with
	// interceptors, must run before the kit's chain so that its metrics see
	// the calls the chain rejects and the chain's logs see the trace
	// context.
	var gopts []grpc.ServerOption
	if o.tel != nil {
		gopts = append(gopts, o.tel.ServerOptions()...)
	}
	gopts = append(gopts,
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.KeepaliveParams(o.keepalive),
		grpc.KeepaliveEnforcementPolicy(o.enforcement),
		grpc.MaxRecvMsgSize(o.maxRecv),
		grpc.MaxSendMsgSize(o.maxSend),
		grpc.MaxConcurrentStreams(o.maxStreams),
	)
	if o.creds != nil {
		gopts = append(gopts, grpc.Creds(o.creds))
	}
	if o.window > 0 {
		gopts = append(gopts, grpc.InitialWindowSize(o.window))
	}
	if o.connWindow > 0 {
		gopts = append(gopts, grpc.InitialConnWindowSize(o.connWindow))
	}
	return append(gopts, o.extra...)
}

// RegisterService registers a service implementation; it implements
// grpc.ServiceRegistrar so generated Register functions accept a Server.
// Call it before Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
	s.mu.Lock()
	s.services = append(s.services, desc.ServiceName)
	s.mu.Unlock()
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}

// GRPC returns the underlying grpc.Server, for what the kit does not wrap.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// SetServing reports service (or the whole server, for "") as serving or
// not through grpc.health.v1. Clients with health checking stop sending new
// calls to a server that is not serving.
func (s *Server) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(service, st)
}

// Serve checks that every served method can be validated, marks all
// services SERVING and serves lis until Shutdown. It returns nil after a
// Shutdown, and any other error it meets.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.checkValidation(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return grpc.ErrServerStopped
	}
	for _, name := range s.services {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.mu.Unlock()
	s.opts.logger.LogAttrs(context.Background(), slog.LevelInfo, "grpc server serving",
		slog.String("addr", lis.Addr().String()), slog.Any("services", s.services))
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// checkValidation fails when a validator is set and some served method's
// request type has no rule.
func (s *Server) checkValidation() error {
	if s.opts.validator == nil {
		return nil
	}
	var missing []string
	for name := range s.grpc.GetServiceInfo() {
		if strings.HasPrefix(name, "grpc.") {
			continue // health and reflection validate their own input
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return fmt.Errorf("server: service %s has no registered descriptor: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return fmt.Errorf("server: %s is not a service", name)
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			in := sd.Methods().Get(i).Input()
			if !s.opts.validator.Has(in) {
				missing = append(missing, string(in.FullName()))
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("server: no validation rule for %s", strings.Join(missing, ", "))
	}
	return nil
}

// Shutdown stops the server gracefully: every service reports NOT_SERVING
// at once, the server keeps serving for the drain period so balancers and
// health-checking clients move away, then it stops accepting calls and waits
// for those in flight, up to the grace timeout or ctx's end, before closing
// every connection. It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	already := s.stopping
	s.stopping = true
	s.mu.Unlock()
	if already {
		s.grpc.Stop()
		return nil
	}
	s.health.Shutdown() // everything NOT_SERVING, and stays so
	log := s.opts.logger
	log.LogAttrs(ctx, slog.LevelInfo, "grpc server draining", slog.Duration("drain", s.opts.drain))

	drain := time.NewTimer(s.opts.drain)
	select {
	case <-drain.C:
	case <-ctx.Done():
		drain.Stop()
	}

	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	grace := time.NewTimer(s.opts.graceTimeout)
	defer grace.Stop()
	select {
	case <-done:
		log.LogAttrs(ctx, slog.LevelInfo, "grpc server stopped")
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	s.grpc.Stop()
	<-done
	log.LogAttrs(ctx, slog.LevelWarn, "grpc server stopped before calls in flight finished")
	return errors.New("server: calls still in flight at the end of the grace period were cut off")
}
