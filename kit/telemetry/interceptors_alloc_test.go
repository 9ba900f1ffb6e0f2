//go:build !race

package telemetry

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
)

// nopServerStream is a server stream whose messages go nowhere, to measure
// the wrapper above it.
type nopServerStream struct{ grpc.ServerStream }

func (nopServerStream) Context() context.Context { return context.Background() }
func (nopServerStream) SendMsg(any) error        { return nil }
func (nopServerStream) RecvMsg(any) error        { return nil }

// nopClientStream is a client stream whose messages go nowhere.
type nopClientStream struct{ grpc.ClientStream }

func (nopClientStream) SendMsg(any) error { return nil }
func (nopClientStream) RecvMsg(any) error { return nil }

// TestInterceptorsDoNotAllocate checks that recording a unary call, on
// either side, and a streamed message allocates nothing once a method has
// been seen. (The race detector's instrumentation allocates: the test is
// built without it.)
func TestInterceptorsDoNotAllocate(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	srv, err := newCallMetrics(mp, SideServer)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := newCallMetrics(mp, SideClient)
	if err != nil {
		t.Fatal(err)
	}
	trace := &tracePropagation{prop: newTelemetry(t, Config{}).Propagator()}
	srv.trace, cli.trace = trace, trace
	cc, err := grpc.NewClient("passthrough:///alloc-test:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })

	req := &greeterv1.SayHelloRequest{Name: "ann"}
	resp := &greeterv1.SayHelloResponse{Message: "hello ann"}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.MD{"x-request-id": {"r1"}})
	info := &grpc.UnaryServerInfo{FullMethod: "/" + sayHello}
	handler := func(context.Context, any) (any, error) { return resp, nil }
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return nil }
	callOpts := []grpc.CallOption{grpc.StaticMethod()}
	ss := &meteredServerStream{ServerStream: nopServerStream{}, ctx: ctx, attrs: srv.streams.methods.get("/" + chat)}
	cs := &meteredClientStream{ClientStream: nopClientStream{}, ctx: ctx, h: cli, stream: cli.streams.methods.get("/" + chat), serverStreams: true}

	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"server unary", func() { _, _ = srv.serverUnary(ctx, req, info, handler) }},
		{"client unary", func() { _ = cli.clientUnary(ctx, "/"+sayHello, req, resp, cc, invoker, callOpts...) }},
		{"server stream message", func() { _ = ss.SendMsg(resp); _ = ss.RecvMsg(req) }},
		{"client stream message", func() { _ = cs.SendMsg(req); _ = cs.RecvMsg(resp) }},
	} {
		tc.f() // first use makes the method's attributes
		if got := testing.AllocsPerRun(100, tc.f); got != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, got)
		}
	}
}

// TestAccessLogDisabledDoesNotAllocate checks that a successful call whose
// level the logger does not enable, sampled or not, costs no allocation.
func TestAccessLogDisabledDoesNotAllocate(t *testing.T) {
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil)) // Info and above
	ctx := context.Background()
	start := time.Now()
	for _, opts := range []AccessLogOptions{{}, {SampleEvery: 1 << 30}} {
		al := NewAccessLogger(logger, opts)
		if got := testing.AllocsPerRun(100, func() { al.Log(ctx, "/"+sayHello, false, start, nil) }); got != 0 {
			t.Errorf("Log with %+v: %v allocations, want 0", opts, got)
		}
	}
}

// BenchmarkInterceptorsPerMessage measures what the interceptor mode adds
// to a streamed message, sent and received, on each side.
func BenchmarkInterceptorsPerMessage(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	srv, err := newCallMetrics(mp, SideServer)
	if err != nil {
		b.Fatal(err)
	}
	cli, err := newCallMetrics(mp, SideClient)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := &greeterv1.ChatRequest{Name: "ann"}
	resp := &greeterv1.ChatResponse{Message: "hello ann"}
	ss := &meteredServerStream{ServerStream: nopServerStream{}, ctx: ctx, attrs: srv.streams.methods.get("/" + chat)}
	cs := &meteredClientStream{ClientStream: nopClientStream{}, ctx: ctx, h: cli, stream: cli.streams.methods.get("/" + chat), serverStreams: true}
	b.Run("server", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = ss.SendMsg(resp)
			_ = ss.RecvMsg(req)
		}
	})
	b.Run("client", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = cs.SendMsg(req)
			_ = cs.RecvMsg(resp)
		}
	})
}
