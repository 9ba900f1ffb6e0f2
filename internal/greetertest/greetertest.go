// Package greetertest runs the Greeter of services/greeter on the kit over
// real loopback connections, with hooks a test can set to change one
// method's behaviour. Tests of kit/server, kit/client and the benchmarks
// share it.
package greetertest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/validate"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

// Fake is the real greeter unless a hook is set for a method. Set hooks
// before serving.
type Fake struct {
	greeter.Service
	SayHelloFunc        func(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error)
	StreamGreetingsFunc func(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error
	ChatFunc            func(stream greeterv1.Greeter_ChatServer) error
}

// SayHello calls SayHelloFunc if set.
func (f *Fake) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if f.SayHelloFunc != nil {
		return f.SayHelloFunc(ctx, req)
	}
	return f.Service.SayHello(ctx, req)
}

// StreamGreetings calls StreamGreetingsFunc if set.
func (f *Fake) StreamGreetings(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error {
	if f.StreamGreetingsFunc != nil {
		return f.StreamGreetingsFunc(req, stream)
	}
	return f.Service.StreamGreetings(req, stream)
}

// Chat calls ChatFunc if set.
func (f *Fake) Chat(stream greeterv1.Greeter_ChatServer) error {
	if f.ChatFunc != nil {
		return f.ChatFunc(stream)
	}
	return f.Service.Chat(stream)
}

// Rules returns the greeter's validation rules.
func Rules() *validate.Set {
	s := validate.NewSet()
	greeter.Rules(s)
	return s
}

// Start serves impl on a loopback port with the kit's chain (plaintext,
// the greeter's rules, no drain) and returns the server and its address;
// options given are applied after those. The server is shut down at the end
// of the test.
func Start(tb testing.TB, impl greeterv1.GreeterServer, opts ...server.Option) (*server.Server, string) {
	tb.Helper()
	opts = append([]server.Option{
		server.WithInsecure(),
		server.WithValidator(Rules()),
		server.WithShutdown(0, 5*time.Second),
	}, opts...)
	srv, err := server.New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	greeterv1.RegisterGreeterServer(srv, impl)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			tb.Errorf("Serve returned %v", err)
		}
	})
	return srv, lis.Addr().String()
}

// Dial connects a kit client to addr (plaintext unless options say
// otherwise), closed at the end of the test.
func Dial(tb testing.TB, addr string, opts ...client.Option) (greeterv1.GreeterClient, *grpc.ClientConn) {
	tb.Helper()
	conn, err := client.Dial("passthrough:///"+addr, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return greeterv1.NewGreeterClient(conn), conn
}
