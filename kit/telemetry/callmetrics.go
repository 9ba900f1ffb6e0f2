package telemetry

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// The kit records the gRFC A66 call metrics itself, as grpc-go's
// OpenTelemetry plugin (google.golang.org/grpc/stats/opentelemetry, v1.85)
// does with its default metric set, and exports the same series: see the
// package documentation for what and why. TestA66Conformance compares the
// two.

// gRFC A66 instrument names and descriptions, as grpc-go's plugin has them.
const (
	metricServerCallStarted     = "grpc.server.call.started"
	metricServerCallDuration    = "grpc.server.call.duration"
	metricServerCallSentSize    = "grpc.server.call.sent_total_compressed_message_size"
	metricServerCallRcvdSize    = "grpc.server.call.rcvd_total_compressed_message_size"
	metricClientAttemptStarted  = "grpc.client.attempt.started"
	metricClientAttemptDuration = "grpc.client.attempt.duration"
	metricClientAttemptSentSize = "grpc.client.attempt.sent_total_compressed_message_size"
	metricClientAttemptRcvdSize = "grpc.client.attempt.rcvd_total_compressed_message_size"
	metricClientCallDuration    = "grpc.client.call.duration"

	descServerCallStarted     = "Number of server calls started."
	descServerCallDuration    = "End-to-end time taken to complete a call from server transport's perspective."
	descServerCallSentSize    = "Compressed message bytes sent per server call."
	descServerCallRcvdSize    = "Compressed message bytes received per server call."
	descClientAttemptStarted  = "Number of client call attempts started."
	descClientAttemptDuration = "End-to-end time taken to complete a client call attempt."
	descClientAttemptSentSize = "Compressed message bytes sent per client call attempt."
	descClientAttemptRcvdSize = "Compressed message bytes received per call attempt."
	descClientCallDuration    = "Time taken by gRPC to complete an RPC from application's perspective."
)

const (
	// a66MeterName is the instrumentation scope of grpc-go's plugin, kept so
	// that the series (whose otel_scope_* labels name it) stay the same.
	a66MeterName = "grpc-go"

	attrMethod  = "grpc.method"
	attrStatus  = "grpc.status"
	attrTarget  = "grpc.target"
	otherTarget = "other"

	maxTargetLen = 512
	numCodes     = int(codes.Unauthenticated) + 1
)

// MaxTargets bounds the number of distinct grpc.target values the client
// metrics of one Telemetry record; the targets of further ClientConns, and
// targets longer than 512 bytes, are recorded as "other".
const MaxTargets = 128

// The bucket boundaries of grpc-go's plugin (DefaultLatencyBounds and
// DefaultSizeBounds).
var (
	a66LatencyBounds = []float64{0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100}
	a66SizeBounds    = []float64{0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824, 4294967296}
)

// statusNames are the grpc.status values of the codes, as grpc-go spells
// them.
var statusNames = [numCodes]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

func statusName(c codes.Code) string {
	if int(c) < numCodes {
		return statusNames[c]
	}
	return "CODE(" + strconv.FormatInt(int64(c), 10) + ")"
}

// callMetrics is the stats handler of one side: the gRFC A66 call metrics
// (unless a66 is false, for NewStreamMetrics) and the stream metrics. On the
// client side it also provides the interceptors that measure
// grpc.client.call.duration and carry the call's attributes to its attempts.
type callMetrics struct {
	client  bool
	a66     bool
	streams *streamMetrics
	// trace, when set, carries W3C trace context in the interceptor mode
	// (interceptors.go).
	trace *tracePropagation

	started      metric.Int64Counter     // grpc.server.call.started, grpc.client.attempt.started
	duration     metric.Float64Histogram // grpc.server.call.duration, grpc.client.attempt.duration
	sentSize     metric.Int64Histogram   // *.sent_total_compressed_message_size
	rcvdSize     metric.Int64Histogram   // *.rcvd_total_compressed_message_size
	callDuration metric.Float64Histogram // grpc.client.call.duration

	methods *boundedCache[*a66Attrs]    // server: by full method name
	targets *boundedCache[*targetAttrs] // client: by ClientConn.Target()
}

var _ stats.Handler = (*callMetrics)(nil)

// a66Attrs holds the measurement options of one method (and, on the client,
// target): those of started, and per status code those of the measurements
// at the end of a call.
type a66Attrs struct {
	kvs   []attribute.KeyValue
	start []metric.AddOption
	end   [numCodes]atomic.Pointer[[]metric.RecordOption]
}

func newA66Attrs(kvs ...attribute.KeyValue) *a66Attrs {
	return &a66Attrs{
		kvs:   kvs,
		start: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))},
	}
}

// withStatus returns the options of a call that ended with c, made on first
// use (codes beyond Unauthenticated, which no well-behaved peer sends, are
// not cached).
func (a *a66Attrs) withStatus(c codes.Code) []metric.RecordOption {
	cached := int(c) < numCodes
	if cached {
		if p := a.end[c].Load(); p != nil {
			return *p
		}
	}
	kvs := append(slices.Clip(a.kvs), attribute.String(attrStatus, statusName(c)))
	opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
	if cached {
		a.end[c].Store(&opts) // A racing store stores an equal slice.
	}
	return opts
}

// targetAttrs holds the client attributes of one target.
type targetAttrs struct {
	methods *boundedCache[*a66Attrs] // by full method name
}

func newTargetAttrs(target string) *targetAttrs {
	t := attribute.String(attrTarget, target)
	return &targetAttrs{methods: newBoundedCache(MaxStreamMethods, maxMethodLen,
		newA66Attrs(attribute.String(attrMethod, OtherMethod), t),
		func(fullMethod string) *a66Attrs {
			return newA66Attrs(attribute.String(attrMethod, strings.TrimLeft(fullMethod, "/")), t)
		})}
}

// newCallMetrics returns the handler of side (SideServer or SideClient)
// recording the gRFC A66 metrics and the stream metrics to mp.
func newCallMetrics(mp metric.MeterProvider, side string) (*callMetrics, error) {
	streams, err := newStreamInstruments(mp, side)
	if err != nil {
		return nil, err
	}
	h := &callMetrics{client: side == SideClient, a66: true, streams: streams}
	meter := mp.Meter(a66MeterName, metric.WithInstrumentationVersion(grpc.Version))
	var errs [5]error
	if h.client {
		h.started, errs[0] = meter.Int64Counter(metricClientAttemptStarted,
			metric.WithUnit("{attempt}"), metric.WithDescription(descClientAttemptStarted))
		h.duration, errs[1] = meter.Float64Histogram(metricClientAttemptDuration,
			metric.WithUnit("s"), metric.WithDescription(descClientAttemptDuration),
			metric.WithExplicitBucketBoundaries(a66LatencyBounds...))
		h.sentSize, errs[2] = meter.Int64Histogram(metricClientAttemptSentSize,
			metric.WithUnit("By"), metric.WithDescription(descClientAttemptSentSize),
			metric.WithExplicitBucketBoundaries(a66SizeBounds...))
		h.rcvdSize, errs[3] = meter.Int64Histogram(metricClientAttemptRcvdSize,
			metric.WithUnit("By"), metric.WithDescription(descClientAttemptRcvdSize),
			metric.WithExplicitBucketBoundaries(a66SizeBounds...))
		h.callDuration, errs[4] = meter.Float64Histogram(metricClientCallDuration,
			metric.WithUnit("s"), metric.WithDescription(descClientCallDuration),
			metric.WithExplicitBucketBoundaries(a66LatencyBounds...))
		h.targets = newBoundedCache(MaxTargets, maxTargetLen, newTargetAttrs(otherTarget), nil)
	} else {
		h.started, errs[0] = meter.Int64Counter(metricServerCallStarted,
			metric.WithUnit("{call}"), metric.WithDescription(descServerCallStarted))
		h.sentSize, errs[1] = meter.Int64Histogram(metricServerCallSentSize,
			metric.WithUnit("By"), metric.WithDescription(descServerCallSentSize),
			metric.WithExplicitBucketBoundaries(a66SizeBounds...))
		h.rcvdSize, errs[2] = meter.Int64Histogram(metricServerCallRcvdSize,
			metric.WithUnit("By"), metric.WithDescription(descServerCallRcvdSize),
			metric.WithExplicitBucketBoundaries(a66SizeBounds...))
		h.duration, errs[3] = meter.Float64Histogram(metricServerCallDuration,
			metric.WithUnit("s"), metric.WithDescription(descServerCallDuration),
			metric.WithExplicitBucketBoundaries(a66LatencyBounds...))
		h.methods = newBoundedCache(MaxStreamMethods, maxMethodLen,
			newA66Attrs(attribute.String(attrMethod, OtherMethod)),
			func(fullMethod string) *a66Attrs {
				return newA66Attrs(attribute.String(attrMethod, strings.TrimLeft(fullMethod, "/")))
			})
	}
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("telemetry: gRFC A66 %s metrics: %w", side, err)
		}
	}
	return h, nil
}

// callState is a call's (on the client, an attempt's) metrics state, the
// one value the handler puts in its context.
type callState struct {
	method string      // full method name, from RPCTagInfo
	call   *clientCall // set in the first attempt state of a client call
	// a66 holds the A66 attributes: set by the client interceptor, or on
	// the server at Begin, or at OutTrailer for a method the server does
	// not serve. nil means no A66 metrics.
	a66        atomic.Pointer[a66Attrs]
	stream     atomic.Pointer[methodAttrs] // set at Begin for streaming calls
	sent, rcvd atomic.Int64                // compressed message bytes
	ended      atomic.Bool
}

// clientCall is the state of a client call across its attempts and the
// context the interceptors pass on: a context node of its own, so that the
// state costs one allocation rather than two (the state and a
// context.WithValue). Its first attempt uses first, so a call without
// retries allocates nothing more here.
type clientCall struct {
	context.Context
	h       *callMetrics
	attrs   *a66Attrs
	method  string
	start   time.Time
	claimed atomic.Bool // first is taken by an attempt
	first   callState
}

// Value returns the first attempt's state for h's key.
func (c *clientCall) Value(key any) any {
	if k, ok := key.(stateKey); ok && k.h == c.h {
		return &c.first
	}
	return c.Context.Value(key)
}

// serverCall is the context TagRPC returns on the server: the call's
// parent context and its state, in one allocation.
type serverCall struct {
	context.Context
	h  *callMetrics
	st callState
}

// Value returns the call's state for h's key.
func (c *serverCall) Value(key any) any {
	if k, ok := key.(stateKey); ok && k.h == c.h {
		return &c.st
	}
	return c.Context.Value(key)
}

// stateKey is the context key of a handler's callState. It holds the
// handler so that two handlers on one server or client do not share state.
type stateKey struct{ h *callMetrics }

// TagRPC implements stats.Handler.
func (h *callMetrics) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if h.client {
		// The interceptor put the call's first attempt state in ctx: the
		// first attempt takes it as it is, retries get their own.
		prev, _ := ctx.Value(stateKey{h}).(*callState)
		var call *clientCall
		if prev != nil && prev.call != nil && prev.call.method == info.FullMethodName {
			call = prev.call
			if call.claimed.CompareAndSwap(false, true) {
				return ctx
			}
		}
		st := &callState{method: info.FullMethodName}
		if call != nil {
			st.a66.Store(call.attrs)
		}
		return context.WithValue(ctx, stateKey{h}, st)
	}
	c := &serverCall{Context: ctx, h: h}
	c.st.method = info.FullMethodName
	return c
}

// HandleRPC implements stats.Handler.
func (h *callMetrics) HandleRPC(ctx context.Context, s stats.RPCStats) {
	st, _ := ctx.Value(stateKey{h}).(*callState)
	if st == nil {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		if h.a66 {
			a := st.a66.Load()
			if a == nil && !h.client {
				// The server calls Begin only for the methods it serves
				// (or hands to its unknown service handler).
				a = h.methods.get(st.method)
				st.a66.Store(a)
			}
			if a != nil {
				h.started.Add(ctx, 1, a.start...)
			}
		}
		if s.IsClientStream || s.IsServerStream {
			st.stream.Store(h.streams.begin(ctx, st.method))
		}
	case *stats.OutPayload:
		st.sent.Add(int64(s.CompressedLength))
		if a := st.stream.Load(); a != nil {
			a.sentMsgs.Add(1)
		}
	case *stats.InPayload:
		st.rcvd.Add(int64(s.CompressedLength))
		if a := st.stream.Load(); a != nil {
			a.rcvdMsgs.Add(1)
		}
	case *stats.OutTrailer:
		// A server answers a method it does not serve with a status alone:
		// no Begin, no End. grpc-go counts such a call as started, as
		// method "other".
		if h.a66 && !h.client && st.a66.CompareAndSwap(nil, h.methods.other) {
			h.started.Add(ctx, 1, h.methods.other.start...)
		}
	case *stats.End:
		if st.ended.Swap(true) {
			return // End is counted once even if delivered twice.
		}
		if a := st.a66.Load(); a != nil && h.a66 {
			opts := a.withStatus(status.Code(s.Error))
			h.duration.Record(ctx, s.EndTime.Sub(s.BeginTime).Seconds(), opts...)
			h.sentSize.Record(ctx, st.sent.Load(), opts...)
			h.rcvdSize.Record(ctx, st.rcvd.Load(), opts...)
		}
		if a := st.stream.Swap(nil); a != nil {
			h.streams.end(ctx, a, s)
		}
	}
}

// TagConn implements stats.Handler.
func (*callMetrics) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

// HandleConn implements stats.Handler.
func (*callMetrics) HandleConn(context.Context, stats.ConnStats) {}

// newCall starts the state of a client call of method on cc, labelled as
// grpc-go's plugin does (see clientAttrs).
func (h *callMetrics) newCall(ctx context.Context, cc *grpc.ClientConn, method string, opts []grpc.CallOption) *clientCall {
	attrs := h.clientAttrs(cc, method, opts)
	c := &clientCall{Context: ctx, h: h, attrs: attrs, method: method}
	c.first.method = method
	c.first.call = c
	c.first.a66.Store(attrs)
	return c
}

// dialOptions returns the options that install the client handler h: its
// interceptors and itself.
func (h *callMetrics) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(h.unaryInterceptor),
		grpc.WithChainStreamInterceptor(h.streamInterceptor),
		grpc.WithStatsHandler(h),
	}
}

// unaryInterceptor measures grpc.client.call.duration of unary calls.
func (h *callMetrics) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c := h.newCall(ctx, cc, method, opts)
	start := time.Now()
	err := invoker(c, method, req, reply, cc, opts...)
	h.callDuration.Record(c, time.Since(start).Seconds(), c.attrs.withStatus(status.Code(err))...)
	return err
}

// streamInterceptor measures grpc.client.call.duration of streaming calls,
// which end when the stream does: grpc calls OnFinish then.
func (h *callMetrics) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c := h.newCall(ctx, cc, method, opts)
	c.start = time.Now()
	opts = append([]grpc.CallOption{grpc.OnFinish(c.finish)}, opts...)
	return streamer(c, desc, cc, method, opts...)
}

func (c *clientCall) finish(err error) {
	c.h.callDuration.Record(c, time.Since(c.start).Seconds(), c.attrs.withStatus(status.Code(err))...)
}
