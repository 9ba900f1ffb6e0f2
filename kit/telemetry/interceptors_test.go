package telemetry

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
)

// histogramPoint returns the count and sum of the data point of the int64
// or float64 histogram name whose attributes include want, summed over
// scopes, and whether there was one.
func histogramPoint(t testing.TB, reader sdkmetric.Reader, name string, want ...attribute.KeyValue) (count uint64, sum float64, found bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	matches := func(set attribute.Set) bool {
		for _, kv := range want {
			if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
				return false
			}
		}
		return true
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					if matches(p.Attributes) {
						count, sum, found = count+p.Count, sum+float64(p.Sum), true
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if matches(p.Attributes) {
						count, sum, found = count+p.Count, sum+p.Sum, true
					}
				}
			}
		}
	}
	return count, sum, found
}

// TestInterceptorsMeasureEncodedSizes pins down what the interceptor mode
// promises for compressed calls: message sizes are the encoded, not the
// compressed, sizes, where the stats handlers see the compressed ones.
func TestInterceptorsMeasureEncodedSizes(t *testing.T) {
	const count, padding = 3, 4000 // zero padding compresses well
	resp := &greeterv1.StreamGreetingsResponse{Message: "hello zed", Padding: make([]byte, padding)}
	encoded := float64(count * proto.Size(resp)) // Sequence 0 is not encoded...
	encoded += float64(proto.Size(&greeterv1.StreamGreetingsResponse{Sequence: 1}) +
		proto.Size(&greeterv1.StreamGreetingsResponse{Sequence: 2})) // ...1 and 2 are

	for _, tc := range []struct {
		name    string
		inst    instrumentation
		encoded bool // sizes are the encoded ones, else compressed
	}{{"interceptors", kitInterceptors, true}, {"stats handlers", kitHandler, false}} {
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			srvOpts, dialOpts := tc.inst(t, mp)
			client := startGreeter(t, &greeter{}, srvOpts, dialOpts)
			stream, err := client.StreamGreetings(testContext(t),
				&greeterv1.StreamGreetingsRequest{Name: "zed", Count: count, PaddingBytes: padding},
				grpc.UseCompressor(gzip.Name))
			if err != nil {
				t.Fatal(err)
			}
			for {
				if _, err := stream.Recv(); err != nil {
					break
				}
			}
			for _, name := range []string{metricClientAttemptRcvdSize, metricServerCallSentSize} {
				eventually(t, func() string {
					n, sum, _ := histogramPoint(t, reader, name, attribute.String(attrMethod, streamGreetings))
					if n != 1 {
						return name + ": no call recorded yet"
					}
					if got := sum == encoded; got != tc.encoded {
						return name + ": sum " + ftoa(sum) + ", encoded size " + ftoa(encoded)
					}
					return ""
				})
			}
		})
	}
}

// TestInterceptorsStreamAbandoned checks that a client stream the caller
// cancels without reading it to the end is recorded as CANCELLED and no
// longer counted as active, on both sides.
func TestInterceptorsStreamAbandoned(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	srvOpts, dialOpts := kitInterceptors(t, mp)
	client := startGreeter(t, &greeter{}, srvOpts, dialOpts)
	ctx, cancel := context.WithCancel(testContext(t))
	stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "bob", Count: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, func() string {
		got := collectStreams(t, reader)
		for _, side := range []string{SideServer, SideClient} {
			if n := got[streamPoint{MetricStreamActive, streamGreetings, side}]; n != 0 {
				return side + ": " + ftoa(n) + " streams active after cancel, want 0"
			}
		}
		canceled := attribute.String(attrStatus, statusName(codes.Canceled))
		if n, _, _ := histogramPoint(t, reader, metricClientCallDuration, canceled); n != 1 {
			return "client call not recorded as CANCELLED"
		}
		if n, _, _ := histogramPoint(t, reader, metricServerCallDuration, canceled); n != 1 {
			return "server call not recorded as CANCELLED"
		}
		return ""
	})
}

// TestInterceptorsStreamFailsToOpen checks that a client stream that cannot
// be opened counts once, as ended with its error.
func TestInterceptorsStreamFailsToOpen(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	srvOpts, dialOpts := kitInterceptors(t, mp)
	client := startGreeter(t, &greeter{}, srvOpts, dialOpts)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	if _, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "bob", Count: 1}); err == nil {
		t.Fatal("StreamGreetings with a cancelled context succeeded")
	}
	if n := collectStreams(t, reader)[streamPoint{MetricStreamActive, streamGreetings, SideClient}]; n != 0 {
		t.Errorf("%v client streams active, want 0", n)
	}
	if n, _, _ := histogramPoint(t, reader, metricClientCallDuration, attribute.String(attrMethod, streamGreetings)); n != 1 {
		t.Errorf("%d client calls recorded, want 1", n)
	}
}

func TestServerCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("boom"), codes.Unknown},
		{status.Error(codes.NotFound, "no such thing"), codes.NotFound},
		{fmt.Errorf("wrapped: %w", status.Error(codes.Aborted, "conflict")), codes.Aborted},
	} {
		if got := serverCode(tc.err); got != tc.want {
			t.Errorf("serverCode(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestTracePropagationInject checks that inject adds the W3C fields a
// context carries, and nothing to a context that carries none.
func TestTracePropagationInject(t *testing.T) {
	p := &tracePropagation{prop: newTelemetry(t, Config{}).Propagator()}
	member, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want metadata.MD
	}{
		{"nothing", context.Background(), nil},
		{"span", trace.ContextWithSpanContext(context.Background(), sc),
			metadata.MD{"traceparent": {"00-01000000000000000000000000000000-0200000000000000-01"}}},
		{"baggage", baggage.ContextWithBaggage(context.Background(), bag), metadata.MD{"baggage": {"tenant=acme"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := metadata.FromOutgoingContext(p.inject(tc.ctx))
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("outgoing metadata (-want +got):\n%s", diff)
			}
		})
	}
}
