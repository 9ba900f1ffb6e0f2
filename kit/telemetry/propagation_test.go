package telemetry_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

// passThrough answers SayHello by calling next, or, without next, with the
// traceparent it received.
type passThrough struct {
	greeter.Service
	next greeterv1.GreeterClient
	seen chan trace.SpanContext
}

func (p *passThrough) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	p.seen <- trace.SpanContextFromContext(ctx)
	if p.next != nil {
		return p.next.SayHello(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	tp := ""
	if v := md.Get("traceparent"); len(v) > 0 {
		tp = v[0]
	}
	return &greeterv1.SayHelloResponse{Message: tp}, nil
}

func serveGreeter(t *testing.T, tel *telemetry.Telemetry, impl greeterv1.GreeterServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tel.ServerOptions()...)
	greeterv1.RegisterGreeterServer(srv, impl)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func dialGreeter(t *testing.T, tel *telemetry.Telemetry, addr string) greeterv1.GreeterClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		append(tel.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return greeterv1.NewGreeterClient(conn)
}

// Without an exporter a process makes no spans, yet the caller's trace
// context reaches the next hop unchanged and the handler's context knows
// the trace for its logs.
func TestTraceContextPassesThroughWithoutExporter(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  telemetry.Config
	}{
		{"interceptors", telemetry.Config{ServiceName: "middle"}},
		{"stats handlers", telemetry.Config{ServiceName: "middle", ExactCallMetrics: true}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkPassThrough(t, tc.cfg) })
	}
}

func checkPassThrough(t *testing.T, cfg telemetry.Config) {
	tel, err := telemetry.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })

	last := &passThrough{seen: make(chan trace.SpanContext, 1)}
	lastAddr := serveGreeter(t, tel, last)
	middle := &passThrough{next: dialGreeter(t, tel, lastAddr), seen: make(chan trace.SpanContext, 1)}
	middleAddr := serveGreeter(t, tel, middle)

	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent)
	conn, err := grpc.NewClient("passthrough:///"+middleAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	resp, err := greeterv1.NewGreeterClient(conn).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetMessage(); got != traceparent {
		t.Errorf("last hop received traceparent %q, want %q unchanged", got, traceparent)
	}
	sc := <-middle.seen
	if got := sc.TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" || !sc.IsRemote() || !sc.IsSampled() {
		t.Errorf("middle hop's context has span context %v, want the caller's, remote and sampled", sc)
	}
	<-last.seen

	// No traceparent: nothing is added to the next call.
	resp, err = greeterv1.NewGreeterClient(conn).SayHello(context.Background(), &greeterv1.SayHelloRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessage() != "" {
		t.Errorf("last hop received traceparent %q from a call without one", resp.GetMessage())
	}
	<-middle.seen
	<-last.seen
}
