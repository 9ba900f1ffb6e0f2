package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

func TestNewRequiresTransportSecurityChoice(t *testing.T) {
	if _, err := server.New(); err == nil {
		t.Error("New() without credentials succeeded, want an error")
	}
}

func TestPanicBecomesInternalAndServerKeepsServing(t *testing.T) {
	f := &fakeGreeter{
		SayHelloFunc: func(_ context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			if req.GetName() == "boom" {
				panic("secret-internal-detail")
			}
			return &greeterv1.SayHelloResponse{Message: "ok"}, nil
		},
		ChatFunc: func(greeterv1.Greeter_ChatServer) error { panic("secret-internal-detail") },
	}
	_, addr := start(t, f)
	c, _ := dial(t, addr)
	ctx := ctxTimeout(t, 5*time.Second)

	_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "boom"})
	checkPanicError(t, "unary", err)

	stream, err := c.Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	checkPanicError(t, "stream", err)

	if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "again"}); err != nil {
		t.Errorf("SayHello after panics = %v, want success", err)
	}
}

func checkPanicError(t *testing.T, kind string, err error) {
	t.Helper()
	if got := grpcstatus.Code(err); got != codes.Internal {
		t.Errorf("%s: panic gave %v, want Internal", kind, got)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("%s: panic error %q leaks the panic value", kind, err)
	}
	if got := status.Reason(err); got != "INTERNAL" {
		t.Errorf("%s: panic reason %q, want INTERNAL", kind, got)
	}
}

func TestValidationUnaryAndEveryStreamMessage(t *testing.T) {
	_, addr := start(t, &fakeGreeter{})
	c, _ := dial(t, addr)
	ctx := ctxTimeout(t, 5*time.Second)

	_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: ""})
	checkInvalid(t, "unary", err, "name")

	s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 0})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	checkInvalid(t, "server stream request", err, "count")

	// The first message is fine, the second is not: every message counts.
	chat, err := c.Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Send(&greeterv1.ChatRequest{Name: "ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := chat.Recv(); err != nil {
		t.Fatalf("first chat message: %v", err)
	}
	if err := chat.Send(&greeterv1.ChatRequest{Name: strings.Repeat("x", 101)}); err != nil {
		t.Fatal(err)
	}
	_, err = chat.Recv()
	checkInvalid(t, "bidi second message", err, "name")
}

func checkInvalid(t *testing.T, kind string, err error, field string) {
	t.Helper()
	if got := grpcstatus.Code(err); got != codes.InvalidArgument {
		t.Fatalf("%s: got %v, want InvalidArgument", kind, err)
	}
	br := status.BadRequest(err)
	if br == nil || len(br.GetFieldViolations()) == 0 || br.GetFieldViolations()[0].GetField() != field {
		t.Errorf("%s: BadRequest = %v, want a violation of %q", kind, br, field)
	}
}

func TestServeRefusesMethodsWithoutValidationRules(t *testing.T) {
	srv, err := server.New(server.WithInsecure(), server.WithValidator(validate.NewSet()))
	if err != nil {
		t.Fatal(err)
	}
	greeterv1.RegisterGreeterServer(srv, &fakeGreeter{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	err = srv.Serve(lis)
	if err == nil || !strings.Contains(err.Error(), "switchboard.greeter.v1.SayHelloRequest") {
		t.Errorf("Serve = %v, want an error naming SayHelloRequest", err)
	}
}

func TestRequestIDIsKeptOrMadeAndQuotedOnFailure(t *testing.T) {
	var seen atomic.Value
	f := &fakeGreeter{SayHelloFunc: func(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		seen.Store(requestid.FromContext(ctx))
		if req.GetName() == "fail" {
			return nil, status.NotFound("test", "NO_SUCH_NAME", "name", "fail")
		}
		return &greeterv1.SayHelloResponse{}, nil
	}}
	_, addr := start(t, f)
	c, _ := dial(t, addr)
	tests := []struct {
		name string
		sent string
		want func(string) bool
	}{
		{"kept", "req-42", func(s string) bool { return s == "req-42" }},
		{"made", "", func(s string) bool { return len(s) == 32 }},
		{"replaced when malformed", "bad id", func(s string) bool { return len(s) == 32 }},
	}
	for _, tt := range tests {
		ctx := ctxTimeout(t, 5*time.Second)
		if tt.sent != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, requestid.Header, tt.sent)
		}
		var trailer metadata.MD
		if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"}, grpc.Trailer(&trailer)); err != nil {
			t.Fatal(err)
		}
		got, _ := seen.Load().(string)
		if !tt.want(got) {
			t.Errorf("%s: handler saw request id %q", tt.name, got)
		}
		if h := trailer.Get(requestid.Header); len(h) != 0 {
			t.Errorf("%s: successful call's trailer has request id %v, want none", tt.name, h)
		}
		// A failed call quotes the id back to the caller.
		if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "fail"}, grpc.Trailer(&trailer)); err == nil {
			t.Fatal("call to fail succeeded")
		}
		got, _ = seen.Load().(string)
		if h := trailer.Get(requestid.Header); len(h) != 1 || h[0] != got {
			t.Errorf("%s: failed call's trailer %v, want [%s]", tt.name, h, got)
		}
	}
}

func TestDeadlinePolicy(t *testing.T) {
	remaining := make(chan time.Duration, 1)
	f := &fakeGreeter{SayHelloFunc: func(ctx context.Context, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		d, ok := ctx.Deadline()
		if !ok {
			remaining <- -1
		} else {
			remaining <- time.Until(d)
		}
		return &greeterv1.SayHelloResponse{}, nil
	}}
	_, addr := start(t, f,
		server.WithDeadlines(server.Deadlines{Default: 3 * time.Second, Max: 5 * time.Second}),
		server.WithMethodDeadlines("/switchboard.greeter.v1.Greeter/Chat", server.Deadlines{Default: time.Second, Max: time.Second}))
	// A raw grpc client: the kit's client would add its own default.
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := greeterv1.NewGreeterClient(conn)
	tests := []struct {
		name     string
		timeout  time.Duration
		min, max time.Duration
	}{
		{"no deadline gets the default", 0, 2 * time.Second, 3 * time.Second},
		{"long deadline is cut to the max", time.Minute, 4 * time.Second, 5 * time.Second},
		{"short deadline is kept", time.Second, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		ctx := t.Context()
		if tt.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, tt.timeout)
			defer cancel()
		}
		if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"}); err != nil {
			t.Fatal(err)
		}
		if got := <-remaining; got < tt.min || got > tt.max {
			t.Errorf("%s: handler had %v left, want %v..%v", tt.name, got, tt.min, tt.max)
		}
	}
}

func TestHooksRunOncePerCallAndStream(t *testing.T) {
	var authn, authz, limit atomic.Int32
	type key struct{}
	f := &fakeGreeter{ChatFunc: func(stream greeterv1.Greeter_ChatServer) error {
		if stream.Context().Value(key{}) != "alice" {
			return errors.New("identity missing from stream context")
		}
		for {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := stream.Send(&greeterv1.ChatResponse{Message: req.GetName()}); err != nil {
				return err
			}
		}
	}}
	_, addr := start(t, f,
		server.WithAuthenticator(func(ctx context.Context, _ server.Call) (context.Context, error) {
			authn.Add(1)
			md, _ := metadata.FromIncomingContext(ctx)
			if len(md.Get("x-user")) == 0 {
				return ctx, errors.New("secret reason")
			}
			return context.WithValue(ctx, key{}, md.Get("x-user")[0]), nil
		}),
		server.WithAuthorizer(func(_ context.Context, call server.Call) error {
			authz.Add(1)
			if call.FullMethod == "/switchboard.greeter.v1.Greeter/CollectNames" {
				return status.PermissionDenied("test", "NOT_ALLOWED", "no")
			}
			return nil
		}),
		server.WithLimiter(func(context.Context, server.Call) error {
			limit.Add(1)
			return nil
		}))
	c, _ := dial(t, addr)
	ctx := ctxTimeout(t, 5*time.Second)

	_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
	if grpcstatus.Code(err) != codes.Unauthenticated || strings.Contains(err.Error(), "secret") {
		t.Errorf("unauthenticated call = %v, want a generic Unauthenticated", err)
	}

	ctx = metadata.AppendToOutgoingContext(ctx, "x-user", "alice")
	authn.Store(0)
	stream, err := c.Chat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := stream.Send(&greeterv1.ChatRequest{Name: "n"}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("chat end = %v, want EOF", err)
	}
	if authn.Load() != 1 || authz.Load() != 1 || limit.Load() != 1 {
		t.Errorf("hooks ran authn=%d authz=%d limit=%d for one stream of 5 messages, want each once",
			authn.Load(), authz.Load(), limit.Load())
	}

	cs, err := c.CollectNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CloseAndRecv()
	if grpcstatus.Code(err) != codes.PermissionDenied || status.Reason(err) != "NOT_ALLOWED" {
		t.Errorf("denied stream = %v, want PermissionDenied NOT_ALLOWED", err)
	}
}

func TestHealthReportsServingThenNotServingOnShutdown(t *testing.T) {
	srv, addr := start(t, &fakeGreeter{}, server.WithShutdown(500*time.Millisecond, 5*time.Second))
	_, conn := dial(t, addr, withoutHealthCheck())
	h := healthpb.NewHealthClient(conn)
	ctx := ctxTimeout(t, 5*time.Second)
	for _, svc := range []string{"", "switchboard.greeter.v1.Greeter"} {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(%q) = %v, %v, want SERVING", svc, resp, err)
		}
	}
	go func() { _ = srv.Shutdown(context.Background()) }()
	deadline := time.Now().Add(400 * time.Millisecond)
	for {
		resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: "switchboard.greeter.v1.Greeter"})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("during drain Check = %v, %v, want NOT_SERVING", resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
