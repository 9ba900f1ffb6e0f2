package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
)

// streamPoint is one data point of the stream metrics, keyed by metric name,
// method and side.
type streamPoint struct {
	metric, method, side string
}

// collectStreams reads the stream metrics: sums by value, histograms by
// count.
func collectStreams(t testing.TB, reader sdkmetric.Reader) map[streamPoint]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	got := map[streamPoint]float64{}
	key := func(name string, set attribute.Set) streamPoint {
		m, _ := set.Value("grpc.method")
		s, _ := set.Value("side")
		return streamPoint{name, m.AsString(), s.AsString()}
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != instrumentationName {
			continue
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					got[key(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					got[key(m.Name, p.Attributes)] = float64(p.Count)
				}
			default:
				t.Errorf("metric %s has unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return got
}

func newStreamMetrics(t testing.TB, side string) (stats.Handler, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		if err := mp.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	h, err := NewStreamMetrics(mp, side)
	if err != nil {
		t.Fatalf("NewStreamMetrics: %v", err)
	}
	return h, reader
}

// call drives h through the events of one call with the given numbers of
// messages out and in.
func call(h stats.Handler, method string, clientStream, serverStream bool, out, in int, dur time.Duration) {
	ctx := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: method})
	begin := time.Now()
	h.HandleRPC(ctx, &stats.Begin{BeginTime: begin, IsClientStream: clientStream, IsServerStream: serverStream})
	for range out {
		h.HandleRPC(ctx, &stats.OutPayload{})
	}
	for range in {
		h.HandleRPC(ctx, &stats.InPayload{})
	}
	h.HandleRPC(ctx, &stats.End{BeginTime: begin, EndTime: begin.Add(dur)})
}

func TestStreamMetricsEvents(t *testing.T) {
	h, reader := newStreamMetrics(t, SideServer)
	call(h, "/pkg.S/Unary", false, false, 1, 1, time.Millisecond)
	call(h, "/pkg.S/ServerStream", false, true, 4, 1, time.Second)
	call(h, "/pkg.S/ServerStream", false, true, 2, 1, time.Second)
	call(h, "/pkg.S/Bidi", true, true, 3, 7, time.Second)

	// A stream still open counts as active.
	ctx := h.TagRPC(context.Background(), &stats.RPCTagInfo{FullMethodName: "/pkg.S/Bidi"})
	h.HandleRPC(ctx, &stats.Begin{IsClientStream: true, IsServerStream: true})
	h.HandleRPC(ctx, &stats.OutPayload{})

	// Events for a context that TagRPC did not make are ignored.
	h.HandleRPC(context.Background(), &stats.OutPayload{})

	want := map[streamPoint]float64{
		{MetricStreamActive, "pkg.S/ServerStream", "server"}:           0,
		{MetricStreamMessagesSent, "pkg.S/ServerStream", "server"}:     6,
		{MetricStreamMessagesReceived, "pkg.S/ServerStream", "server"}: 2,
		{MetricStreamDuration, "pkg.S/ServerStream", "server"}:         2,
		{MetricStreamActive, "pkg.S/Bidi", "server"}:                   1,
		{MetricStreamMessagesSent, "pkg.S/Bidi", "server"}:             4,
		{MetricStreamMessagesReceived, "pkg.S/Bidi", "server"}:         7,
		{MetricStreamDuration, "pkg.S/Bidi", "server"}:                 1,
	}
	got := collectStreams(t, reader)
	if len(got) != len(want) {
		t.Errorf("got %d points, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%v = %v (present %v), want %v", k, g, ok, w)
		}
	}

	// End twice counts once.
	h.HandleRPC(ctx, &stats.End{})
	h.HandleRPC(ctx, &stats.End{})
	if g := collectStreams(t, reader)[streamPoint{MetricStreamActive, "pkg.S/Bidi", "server"}]; g != 0 {
		t.Errorf("active after End twice = %v, want 0", g)
	}
}

func TestStreamMetricsMethodBound(t *testing.T) {
	h, reader := newStreamMetrics(t, SideClient)
	for i := range MaxStreamMethods + 10 {
		call(h, fmt.Sprintf("/pkg.S/M%d", i), true, false, 1, 0, 0)
	}
	long := "/pkg.S/" + string(make([]byte, maxMethodLen))
	h2, reader2 := newStreamMetrics(t, SideClient)
	call(h2, long, true, false, 1, 0, 0)

	got := collectStreams(t, reader)
	sent := 0
	for k := range got {
		if k.metric == MetricStreamMessagesSent {
			sent++
		}
	}
	if sent != MaxStreamMethods+1 {
		t.Errorf("%d methods recorded, want %d plus %q", sent, MaxStreamMethods, OtherMethod)
	}
	if g := got[streamPoint{MetricStreamMessagesSent, OtherMethod, "client"}]; g != 10 {
		t.Errorf("%q sent = %v, want 10", OtherMethod, g)
	}
	if g := collectStreams(t, reader2)[streamPoint{MetricStreamMessagesSent, OtherMethod, "client"}]; g != 1 {
		t.Errorf("over-long method: %q sent = %v, want 1", OtherMethod, g)
	}
}

func TestNewStreamMetricsSide(t *testing.T) {
	mp := sdkmetric.NewMeterProvider()
	defer func() { _ = mp.Shutdown(context.Background()) }()
	for _, side := range []string{"", "Server", "both"} {
		if _, err := NewStreamMetrics(mp, side); err == nil {
			t.Errorf("NewStreamMetrics(%q) = nil error, want an error", side)
		}
	}
}

// TestStreamMetricsLoopback checks both sides over a real connection with a
// bidirectional stream.
func TestStreamMetricsLoopback(t *testing.T) {
	srvH, srvReader := newStreamMetrics(t, SideServer)
	cliH, cliReader := newStreamMetrics(t, SideClient)
	client := startGreeter(t, &greeter{}, []grpc.ServerOption{grpc.StatsHandler(srvH)}, []grpc.DialOption{grpc.WithStatsHandler(cliH)})
	ctx := testContext(t)

	if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "unary"}); err != nil {
		t.Fatalf("SayHello: %v", err)
	}
	stream, err := client.Chat(ctx)
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	for i := range 3 {
		if err := stream.Send(&greeterv1.ChatRequest{Name: fmt.Sprint(i)}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv: %v", err)
		}
	}
	if g := collectStreams(t, cliReader)[streamPoint{MetricStreamActive, chat, "client"}]; g != 1 {
		t.Errorf("client active during Chat = %v, want 1", g)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want EOF", err)
	}

	for _, side := range []struct {
		name   string
		reader sdkmetric.Reader
	}{{"server", srvReader}, {"client", cliReader}} {
		eventually(t, func() string {
			got := collectStreams(t, side.reader)
			want := map[streamPoint]float64{
				{MetricStreamActive, chat, side.name}:           0,
				{MetricStreamMessagesSent, chat, side.name}:     3,
				{MetricStreamMessagesReceived, chat, side.name}: 3,
				{MetricStreamDuration, chat, side.name}:         1,
			}
			if len(got) != len(want) {
				return fmt.Sprintf("%s: got %v, want %v", side.name, got, want)
			}
			for k, w := range want {
				if got[k] != w {
					return fmt.Sprintf("%s: %v = %v, want %v", side.name, k, got[k], w)
				}
			}
			return ""
		})
	}
}

// BenchmarkStreamMetricsPerMessage measures one sent and one received
// message, without a span in the context and with a sampled one (for which
// the SDK may record exemplars).
func BenchmarkStreamMetricsPerMessage(b *testing.B) {
	for _, bc := range []struct {
		name string
		ctx  context.Context
	}{
		{"no span", context.Background()},
		{"sampled span", spanContext(b)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, _ := newStreamMetrics(b, SideServer)
			ctx := h.TagRPC(bc.ctx, &stats.RPCTagInfo{FullMethodName: "/pkg.S/Bidi"})
			h.HandleRPC(ctx, &stats.Begin{IsClientStream: true, IsServerStream: true})
			out, in := &stats.OutPayload{}, &stats.InPayload{}
			b.ReportAllocs()
			for b.Loop() {
				h.HandleRPC(ctx, out)
				h.HandleRPC(ctx, in)
			}
			b.StopTimer()
			h.HandleRPC(ctx, &stats.End{})
		})
	}
}

func BenchmarkStreamMetricsPerStream(b *testing.B) {
	h, _ := newStreamMetrics(b, SideServer)
	info := &stats.RPCTagInfo{FullMethodName: "/pkg.S/Bidi"}
	begin := &stats.Begin{IsClientStream: true, IsServerStream: true}
	end := &stats.End{}
	b.ReportAllocs()
	for b.Loop() {
		ctx := h.TagRPC(context.Background(), info)
		h.HandleRPC(ctx, begin)
		h.HandleRPC(ctx, end)
	}
}
