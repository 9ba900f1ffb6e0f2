package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/stats"
)

// Sides of a call, the values of the "side" attribute of the stream metrics.
const (
	SideServer = "server"
	SideClient = "client"
)

// Stream metric names (OpenTelemetry names; Prometheus exports them as
// switchboard_rpc_stream_active, switchboard_rpc_stream_messages_sent_total,
// switchboard_rpc_stream_messages_received_total and
// switchboard_rpc_stream_duration_seconds).
const (
	MetricStreamActive           = "switchboard.rpc.stream.active"
	MetricStreamMessagesSent     = "switchboard.rpc.stream.messages.sent"
	MetricStreamMessagesReceived = "switchboard.rpc.stream.messages.received"
	MetricStreamDuration         = "switchboard.rpc.stream.duration"
)

// OtherMethod is the grpc.method value that methods beyond the first
// MaxStreamMethods seen by one stream metrics handler are folded into.
const OtherMethod = "other"

// MaxStreamMethods bounds the number of distinct grpc.method values one
// stream metrics handler records, so that a peer naming arbitrary methods
// cannot grow its memory or the metrics' cardinality without end. Names
// longer than maxMethodLen are folded into OtherMethod as well.
const MaxStreamMethods = 512

const maxMethodLen = 256

// instrumentationName is the OpenTelemetry meter name of this package.
const instrumentationName = "github.com/switchboard-rpc/switchboard/kit/telemetry"

// streamDurationBounds are the histogram buckets of stream duration, in
// seconds: streams live from milliseconds to hours.
var streamDurationBounds = []float64{
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
	30, 60, 120, 300, 600, 1800, 3600,
}

type streamMetrics struct {
	side     string
	active   metric.Int64UpDownCounter
	sent     metric.Int64Counter
	received metric.Int64Counter
	duration metric.Float64Histogram

	methods  sync.Map // full method name -> *methodAttrs
	nMethods atomic.Int64
	other    *methodAttrs
}

// methodAttrs holds the precomputed measurement options for one method, so
// recording a message allocates nothing here.
type methodAttrs struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// rpcState is what TagRPC puts in a call's context. attrs is set by Begin
// for streaming calls only; nil means "not measured".
type rpcState struct {
	method string
	attrs  atomic.Pointer[methodAttrs]
}

type rpcStateKey struct{}

var _ stats.Handler = (*streamMetrics)(nil)

// NewStreamMetrics returns a gRPC stats handler that records, for streaming
// calls only, the stream metrics: MetricStreamActive (Int64UpDownCounter),
// MetricStreamMessagesSent and MetricStreamMessagesReceived (Int64Counter)
// and MetricStreamDuration (Float64Histogram, seconds from Begin to End), with
// the attributes grpc.method (without the leading slash, as gRFC A66 does)
// and side. side is SideServer or SideClient. On the client side every
// attempt of a retried call counts as a stream of its own.
//
// Install it with grpc.StatsHandler or grpc.WithStatsHandler; [Telemetry]
// does so in ServerOptions and DialOptions. It is safe for concurrent use,
// holds nothing that needs closing, and records nothing once mp is shut
// down. Recording a message allocates nothing beyond what the meter
// provider does.
func NewStreamMetrics(mp metric.MeterProvider, side string) (stats.Handler, error) {
	if side != SideServer && side != SideClient {
		return nil, fmt.Errorf("telemetry: stream metrics side %q, want %q or %q", side, SideServer, SideClient)
	}
	meter := mp.Meter(instrumentationName)
	m := &streamMetrics{side: side}
	var err error
	if m.active, err = meter.Int64UpDownCounter(MetricStreamActive,
		metric.WithUnit("{stream}"),
		metric.WithDescription("Streaming RPCs in progress.")); err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", MetricStreamActive, err)
	}
	if m.sent, err = meter.Int64Counter(MetricStreamMessagesSent,
		metric.WithUnit("{message}"),
		metric.WithDescription("Messages sent on streaming RPCs.")); err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", MetricStreamMessagesSent, err)
	}
	if m.received, err = meter.Int64Counter(MetricStreamMessagesReceived,
		metric.WithUnit("{message}"),
		metric.WithDescription("Messages received on streaming RPCs.")); err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", MetricStreamMessagesReceived, err)
	}
	if m.duration, err = meter.Float64Histogram(MetricStreamDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of streaming RPCs, from start to end."),
		metric.WithExplicitBucketBoundaries(streamDurationBounds...)); err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", MetricStreamDuration, err)
	}
	m.other = m.newMethodAttrs(OtherMethod)
	return m, nil
}

func (m *streamMetrics) newMethodAttrs(method string) *methodAttrs {
	opt := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("grpc.method", method),
		attribute.String("side", m.side),
	))
	return &methodAttrs{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}}
}

// lookup returns the attributes of fullMethod, creating them while fewer
// than MaxStreamMethods exist. The bound may be overshot by the number of
// concurrent first calls, never more.
func (m *streamMetrics) lookup(fullMethod string) *methodAttrs {
	if a, ok := m.methods.Load(fullMethod); ok {
		return a.(*methodAttrs)
	}
	if len(fullMethod) > maxMethodLen || m.nMethods.Load() >= MaxStreamMethods {
		return m.other
	}
	a, loaded := m.methods.LoadOrStore(fullMethod, m.newMethodAttrs(strings.TrimPrefix(fullMethod, "/")))
	if !loaded {
		m.nMethods.Add(1)
	}
	return a.(*methodAttrs)
}

// TagRPC implements stats.Handler.
func (*streamMetrics) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcStateKey{}, &rpcState{method: info.FullMethodName})
}

// HandleRPC implements stats.Handler.
func (m *streamMetrics) HandleRPC(ctx context.Context, s stats.RPCStats) {
	st, _ := ctx.Value(rpcStateKey{}).(*rpcState)
	if st == nil {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		if !s.IsClientStream && !s.IsServerStream {
			return // unary: covered by the gRFC A66 call metrics
		}
		a := m.lookup(st.method)
		st.attrs.Store(a)
		m.active.Add(ctx, 1, a.add...)
	case *stats.OutPayload:
		if a := st.attrs.Load(); a != nil {
			m.sent.Add(ctx, 1, a.add...)
		}
	case *stats.InPayload:
		if a := st.attrs.Load(); a != nil {
			m.received.Add(ctx, 1, a.add...)
		}
	case *stats.End:
		// Swap so that End is counted once even if delivered twice.
		if a := st.attrs.Swap(nil); a != nil {
			m.active.Add(ctx, -1, a.add...)
			m.duration.Record(ctx, s.EndTime.Sub(s.BeginTime).Seconds(), a.record...)
		}
	}
}

// TagConn implements stats.Handler.
func (*streamMetrics) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

// HandleConn implements stats.Handler.
func (*streamMetrics) HandleConn(context.Context, stats.ConnStats) {}
