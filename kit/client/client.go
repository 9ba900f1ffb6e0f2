package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	// Registers gzip and zstd.
	_ "github.com/switchboard-rpc/switchboard/kit/compression"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Reasons of the errors the client itself raises, in ErrorInfo with domain
// status.KitDomain.
const (
	ReasonCircuitOpen      = "CIRCUIT_OPEN"
	ReasonDeadlineTooShort = "DEADLINE_TOO_SHORT"
)

// Dial returns a connection to target (any grpc target: "dns:///host:port",
// "passthrough:///127.0.0.1:7101", or a scheme of kit/discovery). Like
// grpc.NewClient it connects lazily, on the first call.
func Dial(target string, opts ...Option) (*grpc.ClientConn, error) {
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	if o.creds == nil && !o.insecure {
		return nil, errors.New("client: no transport credentials: use WithCredentials, or WithInsecure on purpose")
	}
	if o.retry.MaxAttempts < 2 || o.retry.MaxAttempts > 5 {
		return nil, fmt.Errorf("client: retry MaxAttempts %d is outside 2..5", o.retry.MaxAttempts)
	}
	sc := o.serviceConfig
	if sc == "" {
		var err error
		if sc, err = serviceConfig(&o); err != nil {
			return nil, err
		}
	}
	ic := &interceptors{opts: &o, target: target}
	if o.breaker != nil {
		ic.breaker = newBreaker(target, o.breaker)
		ic.openFor = o.breaker.OpenTimeout
	}
	creds := o.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	callOpts := []grpc.CallOption{grpc.MaxCallRecvMsgSize(o.maxRecv), grpc.MaxCallSendMsgSize(o.maxSend)}
	if o.compressorName != "" {
		callOpts = append(callOpts, grpc.UseCompressor(o.compressorName))
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithKeepaliveParams(o.keepalive),
		grpc.WithDefaultCallOptions(callOpts...),
		grpc.WithChainUnaryInterceptor(append([]grpc.UnaryClientInterceptor{ic.unary}, o.unaryInner...)...),
		grpc.WithChainStreamInterceptor(append([]grpc.StreamClientInterceptor{ic.stream}, o.streamInner...)...),
	}
	if o.window > 0 {
		dopts = append(dopts, grpc.WithInitialWindowSize(o.window))
	}
	if o.connWindow > 0 {
		dopts = append(dopts, grpc.WithInitialConnWindowSize(o.connWindow))
	}
	if o.tel != nil {
		dopts = append(dopts, o.tel.DialOptions()...)
	}
	dopts = append(dopts, o.extra...)
	return grpc.NewClient(target, dopts...)
}

// IdempotentMethods lists the methods of sd whose descriptors declare them
// idempotent (option idempotency_level = IDEMPOTENT or NO_SIDE_EFFECTS), in
// the "/package.Service/Method" form WithIdempotentMethods takes.
func IdempotentMethods(sd protoreflect.ServiceDescriptor) []string {
	var out []string
	for i := 0; i < sd.Methods().Len(); i++ {
		m := sd.Methods().Get(i)
		mo, ok := m.Options().(*descriptorpb.MethodOptions)
		if !ok || mo == nil {
			continue
		}
		switch mo.GetIdempotencyLevel() {
		case descriptorpb.MethodOptions_IDEMPOTENT, descriptorpb.MethodOptions_NO_SIDE_EFFECTS:
			out = append(out, "/"+string(sd.FullName())+"/"+string(m.Name()))
		}
	}
	return out
}

// serviceConfig renders the default service config: the balancing policy,
// health checking, retry throttling and the retry policy of the idempotent
// methods.
func serviceConfig(o *options) (string, error) {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method,omitempty"`
	}
	sc := map[string]any{
		"loadBalancingConfig": []any{map[string]any{o.loadBalancing: map[string]any{}}},
		"retryThrottling":     map[string]any{"maxTokens": 10, "tokenRatio": 0.1},
	}
	if o.healthCheck {
		sc["healthCheckConfig"] = map[string]any{"serviceName": ""}
	}
	if len(o.idempotent) > 0 {
		names := make([]name, 0, len(o.idempotent))
		for _, full := range o.idempotent {
			svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
			if !ok || svc == "" || method == "" {
				return "", fmt.Errorf("client: idempotent method %q is not of the form /package.Service/Method", full)
			}
			names = append(names, name{Service: svc, Method: method})
		}
		sc["methodConfig"] = []any{map[string]any{
			"name": names,
			"retryPolicy": map[string]any{
				"maxAttempts":          o.retry.MaxAttempts,
				"initialBackoff":       seconds(o.retry.InitialBackoff),
				"maxBackoff":           seconds(o.retry.MaxBackoff),
				"backoffMultiplier":    o.retry.Multiplier,
				"retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}}
	}
	b, err := json.Marshal(sc)
	return string(b), err
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

func newBreaker(target string, s *BreakerSettings) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	consecutive := s.ConsecutiveFailures
	if consecutive == 0 {
		consecutive = 5
	}
	ratio, minReq := s.FailureRatio, s.MinRequests
	if ratio == 0 {
		ratio = 0.5
	}
	if minReq == 0 {
		minReq = 20
	}
	if s.Interval == 0 {
		s.Interval = 10 * time.Second
	}
	if s.OpenTimeout == 0 {
		s.OpenTimeout = 5 * time.Second
	}
	if s.HalfOpenProbes == 0 {
		s.HalfOpenProbes = 1
	}
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        target,
		MaxRequests: s.HalfOpenProbes,
		Interval:    s.Interval,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= consecutive ||
				(c.Requests >= minReq && float64(c.TotalFailures)/float64(c.Requests) >= ratio)
		},
		IsSuccessful:  func(err error) bool { return !failure(err) },
		OnStateChange: s.OnStateChange,
	})
}

// failure reports whether err counts against the breaker: faults of the
// server or the path to it, not of the caller.
func failure(err error) bool {
	if err == nil {
		return false
	}
	switch grpcstatus.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss, codes.DeadlineExceeded:
		return true
	}
	return false
}

type interceptors struct {
	opts    *options
	target  string
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	openFor time.Duration
}

func (ic *interceptors) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, cancel, err := ic.deadline(ctx, true)
	if err != nil {
		return err
	}
	if cancel != nil {
		defer cancel()
	}
	ctx = ic.propagate(ctx)
	if ic.breaker == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	done, err := ic.breaker.Allow()
	if err != nil {
		return ic.openError()
	}
	err = invoker(ctx, method, req, reply, cc, opts...)
	done(err)
	return err
}

func (ic *interceptors) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, cancel, err := ic.deadline(ctx, false)
	if err != nil {
		return nil, err
	}
	ctx = ic.propagate(ctx)
	var done func(error)
	if ic.breaker != nil {
		if done, err = ic.breaker.Allow(); err != nil {
			if cancel != nil {
				cancel()
			}
			return nil, ic.openError()
		}
	}
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if done != nil {
		done(err)
	}
	if err != nil {
		if cancel != nil {
			cancel()
		}
		return nil, err
	}
	if cancel != nil {
		// The derived context must live as long as the stream. Watching
		// cs.Context() would commit the call and stop grpc's retries, so
		// release it when the stream reports its end instead; a stream
		// abandoned unread is released at its deadline.
		return &cancelOnEnd{ClientStream: cs, cancel: cancel}, nil
	}
	return cs, nil
}

// cancelOnEnd releases a stream's derived context once RecvMsg reports the
// end of the stream.
type cancelOnEnd struct {
	grpc.ClientStream
	cancel context.CancelFunc
}

func (s *cancelOnEnd) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
	}
	return err
}

func (ic *interceptors) openError() error {
	return status.Unavailable(status.KitDomain, ReasonCircuitOpen,
		"circuit breaker open for "+ic.target, ic.openFor)
}

// deadline applies the margin to a deadline inherited from an incoming call
// and, for unary calls, the default timeout. It derives a context only when
// the deadline changes.
func (ic *interceptors) deadline(ctx context.Context, unary bool) (context.Context, context.CancelFunc, error) {
	have, has := ctx.Deadline()
	want, change := have, false
	var now time.Time
	if has {
		if _, incoming := grpc.Method(ctx); incoming {
			now = time.Now()
			want, change = have.Add(-ic.opts.margin), true
			if !want.After(now) {
				return ctx, nil, status.Error(codes.DeadlineExceeded, status.KitDomain, ReasonDeadlineTooShort,
					"not enough time left to make the call")
			}
		}
	}
	if unary && ic.opts.timeout > 0 {
		if now.IsZero() {
			now = time.Now()
		}
		if d := now.Add(ic.opts.timeout); !has || d.Before(want) {
			want, change = d, true
		}
	}
	if !change {
		return ctx, nil, nil
	}
	ctx, cancel := context.WithDeadline(ctx, want)
	return ctx, cancel, nil
}

// propagate copies the request id and the forwarded headers of the
// incoming call, if any, onto the outgoing one, unless the caller set them.
func (ic *interceptors) propagate(ctx context.Context) context.Context {
	id := requestid.FromContext(ctx)
	var kv []string
	for _, k := range ic.opts.forward {
		if v := metadata.ValueFromIncomingContext(ctx, k); len(v) > 0 {
			kv = append(kv, k, v[0])
		}
	}
	if id == "" && len(kv) == 0 {
		return ctx
	}
	if id != "" {
		kv = append(kv, requestid.Header, id)
	}
	// Values the caller set on the outgoing call win over inherited ones.
	if out, ok := metadata.FromOutgoingContext(ctx); ok {
		kept := kv[:0]
		for i := 0; i < len(kv); i += 2 {
			if len(out.Get(kv[i])) == 0 {
				kept = append(kept, kv[i], kv[i+1])
			}
		}
		kv = kept
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}
