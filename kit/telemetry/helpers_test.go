package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// greeter is the test service. A name of the form "code:<Name>" makes
// SayHello and StreamGreetings fail with that status code; onCall, when set,
// sees the context of every handler.
type greeter struct {
	greeterv1.UnimplementedGreeterServer
	onCall func(ctx context.Context)
}

func (g *greeter) seen(ctx context.Context) {
	if g.onCall != nil {
		g.onCall(ctx)
	}
}

func failure(name string) error {
	c, ok := strings.CutPrefix(name, "code:")
	if !ok {
		return nil
	}
	for i := codes.OK; i <= codes.Unauthenticated; i++ {
		if i.String() == c {
			if i == codes.OK {
				return nil
			}
			return status.Error(i, "failed on purpose")
		}
	}
	return status.Errorf(codes.Internal, "bad code %q", c)
}

func (g *greeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	g.seen(ctx)
	if err := failure(req.GetName()); err != nil {
		return nil, err
	}
	return &greeterv1.SayHelloResponse{Message: "hello " + req.GetName()}, nil
}

func (g *greeter) StreamGreetings(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error {
	g.seen(stream.Context())
	if err := failure(req.GetName()); err != nil {
		return err
	}
	pad := make([]byte, req.GetPaddingBytes())
	for i := range req.GetCount() {
		if err := stream.Send(&greeterv1.StreamGreetingsResponse{Message: "hello " + req.GetName(), Sequence: i, Padding: pad}); err != nil {
			return err
		}
	}
	return nil
}

func (g *greeter) CollectNames(stream greeterv1.Greeter_CollectNamesServer) error {
	g.seen(stream.Context())
	var n int32
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&greeterv1.CollectNamesResponse{Message: "done", Count: n})
		}
		if err != nil {
			return err
		}
		n++
	}
}

func (g *greeter) Chat(stream greeterv1.Greeter_ChatServer) error {
	g.seen(stream.Context())
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&greeterv1.ChatResponse{Message: "hi " + req.GetName()}); err != nil {
			return err
		}
	}
}

// requestIDUnary and requestIDStream stand in for the kit's request id
// interceptor: they put the incoming (or a fresh) id in the context.
func requestIDUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(requestid.NewContext(ctx, requestid.FromIncoming(ctx)), req)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

func requestIDStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := requestid.NewContext(ss.Context(), requestid.FromIncoming(ss.Context()))
	return handler(srv, ctxStream{ServerStream: ss, ctx: ctx})
}

// startGreeter serves g on a real loopback listener with srvOpts and returns
// a client dialled with dialOpts. Both are stopped at cleanup, server last.
func startGreeter(t testing.TB, g *greeter, srvOpts []grpc.ServerOption, dialOpts []grpc.DialOption) greeterv1.GreeterClient {
	t.Helper()
	return greeterv1.NewGreeterClient(startGreeterConn(t, g, srvOpts, dialOpts))
}

// startGreeterConn is startGreeter returning the ClientConn.
func startGreeterConn(t testing.TB, g *greeter, srvOpts []grpc.ServerOption, dialOpts []grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(srvOpts...)
	greeterv1.RegisterGreeterServer(srv, g)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.GracefulStop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	cc, err := grpc.NewClient(lis.Addr().String(),
		append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return cc
}

// testContext is t.Context with a timeout.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// scrape fetches h over a real HTTP server and parses the text exposition.
func scrape(t testing.TB, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// findMetric returns the metric of family name whose labels include want,
// or nil.
func findMetric(families map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := families[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// metricValue returns the value of a counter or gauge, or the sample count
// of a histogram.
func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// eventually retries check until it returns "" or the time is up, then fails
// with the last complaint. Server-side End events may be handled just after
// the client has seen the call finish.
func eventually(t testing.TB, check func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describe(families map[string]*dto.MetricFamily, prefix string) string {
	var b strings.Builder
	for name, f := range families {
		if strings.HasPrefix(name, prefix) {
			fmt.Fprintf(&b, "%s %v\n", name, f.GetMetric())
		}
	}
	return b.String()
}
