package static_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/discovery"
	"github.com/switchboard-rpc/switchboard/kit/discovery/static"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// counting starts a greeter that counts its calls.
func counting(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	_, addr := greetertest.Start(t, &greetertest.Fake{
		SayHelloFunc: func(context.Context, *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			n.Add(1)
			return &greeterv1.SayHelloResponse{Message: "hi"}, nil
		},
	})
	return addr, &n
}

func spread(t *testing.T, target string, opts ...client.Option) {
	t.Helper()
	conn, err := client.Dial(target, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := greeterv1.NewGreeterClient(conn)
	for range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("SayHello via %s: %v", target, err)
		}
	}
}

func TestAddrsInTarget(t *testing.T) {
	a, na := counting(t)
	b, nb := counting(t)
	spread(t, "static:///greeter?addrs="+a+","+b)
	if na.Load() == 0 || nb.Load() == 0 {
		t.Errorf("calls per replica %d and %d, want both above 0", na.Load(), nb.Load())
	}
}

func TestBuilderFromMap(t *testing.T) {
	a, na := counting(t)
	b, nb := counting(t)
	bld := static.FromAddrs(map[string][]string{"greeter": {a, b}})
	spread(t, "static:///greeter", client.WithDialOptions(grpc.WithResolvers(bld)))
	if na.Load() == 0 || nb.Load() == 0 {
		t.Errorf("calls per replica %d and %d, want both above 0", na.Load(), nb.Load())
	}
}

func TestUnknownTargets(t *testing.T) {
	bld := static.NewBuilder(map[string][]discovery.Endpoint{"greeter": {{Service: "greeter", Addr: "127.0.0.1:1"}}})
	for _, tc := range []struct{ target, want string }{
		{"static:///inventory", "no addresses"},
		{"static:///greeter?addrs=not-an-address", "host:port"},
	} {
		conn, err := client.Dial(tc.target, client.WithInsecure(), client.WithDialOptions(grpc.WithResolvers(bld)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = greeterv1.NewGreeterClient(conn).SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"})
		cancel()
		_ = conn.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SayHello via %s = %v, want an error containing %q", tc.target, err, tc.want)
		}
	}
}
