package telemetry

import (
	"context"
	"fmt"
	"maps"
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
// MaxStreamMethods seen by one handler are folded into. The gRFC A66
// metrics also use it, as grpc-go does, for methods a server has not
// registered and for client calls made without grpc.StaticMethod (generic
// calls through ClientConn.Invoke or NewStream).
const OtherMethod = "other"

// MaxStreamMethods bounds the number of distinct grpc.method values one
// handler records, for the stream metrics and for the gRFC A66 metrics (on
// the client side per target), so that a peer naming arbitrary methods
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

// streamMetrics holds the stream metric instruments of one side and the
// attributes of the methods it has seen. Its handler is [callMetrics].
type streamMetrics struct {
	side     string
	active   metric.Int64UpDownCounter
	sent     metric.Int64ObservableCounter
	received metric.Int64ObservableCounter
	duration metric.Float64Histogram

	methods *boundedCache[*methodAttrs] // by full method name
}

// methodAttrs holds the precomputed measurement options for one method, so
// recording a message allocates nothing here, and the method's message
// counts.
//
// Messages are counted with an atomic add, and the counters observe the
// totals when the metrics are collected: adding to an OpenTelemetry counter
// costs some 200ns (the SDK normalises the attributes of every
// measurement), as much as a fifth of what grpc spends on a small message.
type methodAttrs struct {
	add      []metric.AddOption
	record   []metric.RecordOption
	observe  []metric.ObserveOption
	sentMsgs atomic.Int64
	rcvdMsgs atomic.Int64
}

// NewStreamMetrics returns a gRPC stats handler that records, for streaming
// calls only, the stream metrics: MetricStreamActive (Int64UpDownCounter),
// MetricStreamMessagesSent and MetricStreamMessagesReceived (monotonic
// counters, Int64ObservableCounter: each message is an atomic add, and the
// totals are observed when the metrics are collected, so they carry no
// exemplars) and MetricStreamDuration (Float64Histogram, seconds from Begin to End), with
// the attributes grpc.method (without the leading slash, as gRFC A66 does)
// and side. side is SideServer or SideClient. On the client side every
// attempt of a retried call counts as a stream of its own.
//
// [Telemetry] does not install this handler: its ServerOptions and
// DialOptions record the same stream metrics where they record the gRFC
// A66 call metrics (in interceptors, or in one stats handler), so that a
// call carries one piece of metrics state rather than two. NewStreamMetrics is for servers and
// clients that want the stream metrics alone; install it with
// grpc.StatsHandler or grpc.WithStatsHandler. It is safe for concurrent
// use, holds nothing that needs closing, and records nothing once mp is shut
// down. Recording a message allocates nothing.
func NewStreamMetrics(mp metric.MeterProvider, side string) (stats.Handler, error) {
	m, err := newStreamInstruments(mp, side)
	if err != nil {
		return nil, err
	}
	return &callMetrics{client: side == SideClient, streams: m}, nil
}

func newStreamInstruments(mp metric.MeterProvider, side string) (*streamMetrics, error) {
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
	if m.sent, err = meter.Int64ObservableCounter(MetricStreamMessagesSent,
		metric.WithUnit("{message}"),
		metric.WithDescription("Messages sent on streaming RPCs.")); err != nil {
		return nil, fmt.Errorf("telemetry: %s: %w", MetricStreamMessagesSent, err)
	}
	if m.received, err = meter.Int64ObservableCounter(MetricStreamMessagesReceived,
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
	m.methods = newBoundedCache(MaxStreamMethods, maxMethodLen, m.newMethodAttrs(OtherMethod),
		func(fullMethod string) *methodAttrs { return m.newMethodAttrs(strings.TrimPrefix(fullMethod, "/")) })
	// The registration lives as long as mp, which ends it on shutdown.
	if _, err := meter.RegisterCallback(m.observeMessages, m.sent, m.received); err != nil {
		return nil, fmt.Errorf("telemetry: stream message counters: %w", err)
	}
	return m, nil
}

// observeMessages reports the message counts of the methods that have
// sent or received any, when the metrics are collected.
func (m *streamMetrics) observeMessages(_ context.Context, o metric.Observer) error {
	m.methods.each(func(a *methodAttrs) {
		if n := a.sentMsgs.Load(); n > 0 {
			o.ObserveInt64(m.sent, n, a.observe...)
		}
		if n := a.rcvdMsgs.Load(); n > 0 {
			o.ObserveInt64(m.received, n, a.observe...)
		}
	})
	return nil
}

func (m *streamMetrics) newMethodAttrs(method string) *methodAttrs {
	opt := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("grpc.method", method),
		attribute.String("side", m.side),
	))
	return &methodAttrs{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}, observe: []metric.ObserveOption{opt}}
}

// begin counts a stream of fullMethod as active and returns its attributes.
func (m *streamMetrics) begin(ctx context.Context, fullMethod string) *methodAttrs {
	a := m.methods.get(fullMethod)
	m.active.Add(ctx, 1, a.add...)
	return a
}

// end counts the stream a (from begin) as ended.
func (m *streamMetrics) end(ctx context.Context, a *methodAttrs, e *stats.End) {
	m.active.Add(ctx, -1, a.add...)
	m.duration.Record(ctx, e.EndTime.Sub(e.BeginTime).Seconds(), a.record...)
}

// boundedCache maps keys to values made on first use, for at most max
// keys; keys beyond those, and keys longer than maxLen, share the value
// other. Lookups read an immutable map snapshot without locking; additions,
// at most max of them, copy it under a mutex.
type boundedCache[V any] struct {
	snap   atomic.Pointer[map[string]V]
	full   atomic.Bool // max keys are present: skip the mutex
	mu     sync.Mutex  // serialises additions
	max    int
	maxLen int
	other  V
	mk     func(key string) V
}

func newBoundedCache[V any](maxKeys, maxLen int, other V, mk func(string) V) *boundedCache[V] {
	return &boundedCache[V]{max: maxKeys, maxLen: maxLen, other: other, mk: mk}
}

// get returns the value of key, making it with c.mk if need be.
func (c *boundedCache[V]) get(key string) V {
	if v, ok := c.load(key); ok {
		return v
	}
	return c.add(key, c.mk)
}

// each calls f with every value made so far and other (once each).
func (c *boundedCache[V]) each(f func(V)) {
	if m := c.snap.Load(); m != nil {
		for _, v := range *m {
			f(v)
		}
	}
	f(c.other)
}

// load returns the value of key if it is present.
func (c *boundedCache[V]) load(key string) (V, bool) {
	if m := c.snap.Load(); m != nil {
		v, ok := (*m)[key]
		return v, ok
	}
	var zero V
	return zero, false
}

// add returns the value of key, making it with mk while the cache is not
// full, or other.
func (c *boundedCache[V]) add(key string, mk func(string) V) V {
	if len(key) > c.maxLen || c.full.Load() {
		return c.other
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.snap.Load()
	n := 0
	if old != nil {
		if v, ok := (*old)[key]; ok {
			return v
		}
		n = len(*old)
	}
	if n >= c.max {
		c.full.Store(true)
		return c.other
	}
	v := mk(key)
	next := make(map[string]V, n+1)
	if old != nil {
		maps.Copy(next, *old)
	}
	next[key] = v
	c.snap.Store(&next)
	return v
}
