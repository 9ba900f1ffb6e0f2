package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/validate"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeGreeter is the greeter of services/greeter with hooks a test can set
// to change one method's behaviour.
type fakeGreeter struct {
	greeter.Service
	sayHello        func(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error)
	streamGreetings func(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error
	chat            func(stream greeterv1.Greeter_ChatServer) error
}

func (f *fakeGreeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if f.sayHello != nil {
		return f.sayHello(ctx, req)
	}
	return f.Service.SayHello(ctx, req)
}

func (f *fakeGreeter) StreamGreetings(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error {
	if f.streamGreetings != nil {
		return f.streamGreetings(req, stream)
	}
	return f.Service.StreamGreetings(req, stream)
}

func (f *fakeGreeter) Chat(stream greeterv1.Greeter_ChatServer) error {
	if f.chat != nil {
		return f.chat(stream)
	}
	return f.Service.Chat(stream)
}

// rules returns the greeter's validation rules.
func rules() *validate.Set {
	s := validate.NewSet()
	greeter.Rules(s)
	return s
}

// start serves impl on a loopback port with the kit's chain and returns the
// server and its address. The server is shut down at the end of the test.
func start(t *testing.T, impl greeterv1.GreeterServer, opts ...server.Option) (*server.Server, string) {
	t.Helper()
	opts = append([]server.Option{
		server.WithInsecure(),
		server.WithValidator(rules()),
		server.WithShutdown(0, 5*time.Second),
	}, opts...)
	srv, err := server.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	greeterv1.RegisterGreeterServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v", err)
		}
	})
	return srv, lis.Addr().String()
}

// dial connects a kit client to addr, closed at the end of the test.
func dial(t *testing.T, addr string, opts ...client.Option) (greeterv1.GreeterClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := client.Dial("passthrough:///"+addr, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return greeterv1.NewGreeterClient(conn), conn
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

func withoutHealthCheck() client.Option { return client.WithHealthCheck(false) }
