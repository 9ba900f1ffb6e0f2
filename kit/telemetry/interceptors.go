package telemetry

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The interceptor mode: when no spans are exported and exact call metrics
// were not asked for, Telemetry records the gRFC A66 metrics and the stream
// metrics, and carries W3C trace context, in interceptors and stream
// wrappers instead of stats handlers. Installing any stats handler makes
// grpc-go build an event for every stage of every call and message (about
// 33 allocations per unary call, server and client together); interceptors
// cost none of that. The package documentation says what the interceptors
// measure differently.

// tracePropagation carries W3C trace context and baggage from incoming to
// outgoing calls without making spans, for a process that exports none.
// Its propagator must be the TraceContext and Baggage composite New makes:
// inject relies on it to skip calls with nothing to carry.
type tracePropagation struct {
	prop propagation.TextMapPropagator
}

// extract returns ctx with the caller's span context and baggage, if its
// incoming metadata carries any.
func (p *tracePropagation) extract(ctx context.Context) context.Context {
	if len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 &&
		len(metadata.ValueFromIncomingContext(ctx, "baggage")) == 0 {
		return ctx // nothing to extract: skip the propagator's work
	}
	return p.prop.Extract(ctx, incomingCarrier{ctx})
}

// inject returns ctx with the span context and baggage of ctx added to its
// outgoing metadata, or ctx itself when it carries neither: the W3C
// propagators write nothing then, and skipping them saves the carrier.
func (p *tracePropagation) inject(ctx context.Context) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return ctx
	}
	var carrier outgoingCarrier
	p.prop.Inject(ctx, &carrier)
	if len(carrier.kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, carrier.kv...)
}

// messageSize is the encoded size of a protobuf message, 0 for anything
// else (messages of other codecs are not measured).
func messageSize(m any) int64 {
	if pm, ok := m.(proto.Message); ok {
		return int64(proto.Size(pm))
	}
	return 0
}

// serverCode is the status code a server sends for a handler's error, as
// grpc-go derives it: status errors keep their code, context errors become
// CANCELLED or DEADLINE_EXCEEDED, anything else UNKNOWN.
func serverCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

// serverUnary is the unary server interceptor of the interceptor mode: it
// extracts the caller's trace context and records the server call metrics.
func (h *callMetrics) serverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if h.trace != nil {
		ctx = h.trace.extract(ctx)
	}
	a := h.methods.get(info.FullMethod)
	rcvd := messageSize(req) // before the handler can change req
	start := time.Now()
	h.started.Add(ctx, 1, a.start...)
	resp, err := handler(ctx, req)
	dur := time.Since(start).Seconds()
	var sent int64
	if err == nil {
		sent = messageSize(resp)
	}
	opts := a.withStatus(serverCode(err))
	h.duration.Record(ctx, dur, opts...)
	h.sentSize.Record(ctx, sent, opts...)
	h.rcvdSize.Record(ctx, rcvd, opts...)
	return resp, err
}

// serverStream is the stream server interceptor of the interceptor mode:
// it extracts the caller's trace context, records the server call metrics
// and the stream metrics, and counts the stream's messages in a wrapper.
func (h *callMetrics) serverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	if h.trace != nil {
		ctx = h.trace.extract(ctx)
	}
	a := h.methods.get(info.FullMethod)
	w := &meteredServerStream{ServerStream: ss, ctx: ctx, attrs: h.streams.methods.get(info.FullMethod), start: time.Now()}
	h.started.Add(ctx, 1, a.start...)
	h.streams.active.Add(ctx, 1, w.attrs.add...)
	err := handler(srv, w)
	dur := time.Since(w.start).Seconds()
	opts := a.withStatus(serverCode(err))
	h.duration.Record(ctx, dur, opts...)
	h.sentSize.Record(ctx, w.sent.Load(), opts...)
	h.rcvdSize.Record(ctx, w.rcvd.Load(), opts...)
	h.streams.active.Add(ctx, -1, w.attrs.add...)
	h.streams.duration.Record(ctx, dur, w.attrs.record...)
	return err
}

// meteredServerStream counts the messages of a server stream and their
// sizes. Its counters are atomic: one goroutine may send while another
// receives, and kit/server's stream guard can end a call while its handler
// goroutine is still in Send or Recv.
type meteredServerStream struct {
	grpc.ServerStream
	ctx        context.Context
	attrs      *methodAttrs
	start      time.Time
	sent, rcvd atomic.Int64 // bytes
}

// Context returns the stream's context with the caller's trace context.
func (s *meteredServerStream) Context() context.Context { return s.ctx }

// SendMsg sends m and counts it once it is sent.
func (s *meteredServerStream) SendMsg(m any) error {
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	s.sent.Add(messageSize(m))
	s.attrs.sentMsgs.Add(1)
	return nil
}

// RecvMsg receives into m and counts it once it is received.
func (s *meteredServerStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.rcvd.Add(messageSize(m))
	s.attrs.rcvdMsgs.Add(1)
	return nil
}

// clientAttrs returns the A66 attributes of a call of method on cc: cc's
// canonical target and, when the call was made with grpc.StaticMethod (as
// generated clients do), the method, "other" otherwise. Targets are looked
// up by cc.Target(), the target as given to grpc.NewClient, so that the
// canonical form (which costs allocations) is made once per target.
func (h *callMetrics) clientAttrs(cc *grpc.ClientConn, method string, opts []grpc.CallOption) *a66Attrs {
	t, ok := h.targets.load(cc.Target())
	if !ok {
		t = h.targets.add(cc.Target(), func(string) *targetAttrs { return newTargetAttrs(cc.CanonicalTarget()) })
	}
	for _, o := range opts {
		if _, ok := o.(grpc.StaticMethodCallOption); ok {
			return t.methods.get(method)
		}
	}
	return t.methods.other
}

// clientUnary is the unary client interceptor of the interceptor mode: it
// injects the trace context into the outgoing metadata and records the
// client metrics, the call as its one attempt.
func (h *callMetrics) clientUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if h.trace != nil {
		ctx = h.trace.inject(ctx)
	}
	a := h.clientAttrs(cc, method, opts)
	sent := messageSize(req)
	start := time.Now()
	h.started.Add(ctx, 1, a.start...)
	err := invoker(ctx, method, req, reply, cc, opts...)
	dur := time.Since(start).Seconds()
	var rcvd int64
	if err == nil {
		rcvd = messageSize(reply)
	}
	o := a.withStatus(status.Code(err))
	h.duration.Record(ctx, dur, o...)
	h.sentSize.Record(ctx, sent, o...)
	h.rcvdSize.Record(ctx, rcvd, o...)
	h.callDuration.Record(ctx, dur, o...)
	return err
}

// clientStream is the stream client interceptor of the interceptor mode:
// it injects the trace context, records the client metrics (the call as its
// one attempt) and the stream metrics, and counts the stream's messages in
// a wrapper. The call ends when grpc reports it finished (grpc.OnFinish),
// which it does however the stream ends.
func (h *callMetrics) clientStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if h.trace != nil {
		ctx = h.trace.inject(ctx)
	}
	s := &meteredClientStream{
		ctx:           ctx,
		h:             h,
		a66:           h.clientAttrs(cc, method, opts),
		stream:        h.streams.methods.get(method),
		start:         time.Now(),
		serverStreams: desc.ServerStreams,
	}
	h.started.Add(ctx, 1, s.a66.start...)
	h.streams.active.Add(ctx, 1, s.stream.add...)
	opts = append(opts[:len(opts):len(opts)], grpc.OnFinish(s.finished))
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		s.end(err) // grpc may or may not have called finished: it counts once
		return nil, err
	}
	s.ClientStream = cs
	return s, nil
}

// meteredClientStream counts the messages of a client stream and their
// sizes, and records the call when it finishes. grpc may report the end on
// a goroutine of its own, concurrently with SendMsg and RecvMsg: the
// counters are atomic.
type meteredClientStream struct {
	grpc.ClientStream
	ctx        context.Context
	h          *callMetrics
	a66        *a66Attrs
	stream     *methodAttrs
	start      time.Time
	sent, rcvd atomic.Int64 // bytes
	ended      atomic.Bool
	// serverStreams is false for a call with one response, which grpc
	// finishes inside the RecvMsg that receives it, before the wrapper has
	// counted it: such a call is recorded by RecvMsg instead.
	serverStreams bool
}

// SendMsg sends m and counts it once grpc has taken it.
func (s *meteredClientStream) SendMsg(m any) error {
	if err := s.ClientStream.SendMsg(m); err != nil {
		return err
	}
	s.sent.Add(messageSize(m))
	s.stream.sentMsgs.Add(1)
	return nil
}

// RecvMsg receives into m and counts it once it is received.
func (s *meteredClientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.rcvd.Add(messageSize(m))
		s.stream.rcvdMsgs.Add(1)
	}
	if !s.serverStreams {
		// grpc has finished the call, successfully or not.
		s.end(err)
	}
	return err
}

// finished is the grpc.OnFinish callback. A successful call with one
// response is left to RecvMsg, which has yet to count the response.
func (s *meteredClientStream) finished(err error) {
	if err == nil && !s.serverStreams {
		return
	}
	s.end(err)
}

// end records the end of the call, once.
func (s *meteredClientStream) end(err error) {
	if s.ended.Swap(true) {
		return
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	h := s.h
	dur := time.Since(s.start).Seconds()
	o := s.a66.withStatus(status.Code(err))
	h.duration.Record(s.ctx, dur, o...)
	h.sentSize.Record(s.ctx, s.sent.Load(), o...)
	h.rcvdSize.Record(s.ctx, s.rcvd.Load(), o...)
	h.callDuration.Record(s.ctx, dur, o...)
	h.streams.active.Add(s.ctx, -1, s.stream.add...)
	h.streams.duration.Record(s.ctx, dur, s.stream.record...)
}

// interceptorServerOptions returns the options of the interceptor mode on
// the server side.
func (h *callMetrics) interceptorServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(h.serverUnary),
		grpc.ChainStreamInterceptor(h.serverStream),
	}
}

// interceptorDialOptions returns the options of the interceptor mode on
// the client side.
func (h *callMetrics) interceptorDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(h.clientUnary),
		grpc.WithChainStreamInterceptor(h.clientStream),
	}
}
