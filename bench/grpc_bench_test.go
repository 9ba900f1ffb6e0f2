package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/internal/testpki"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

// parallelism sets the number of concurrent callers: with GOMAXPROCS 2, a
// parallelism of 32 runs 64 goroutines.
const parallelism = 32

// setup starts one greeter server and returns a client of it: either bare
// grpc-go or the kit's full chain, both over the same mutual TLS.
func setup(b *testing.B, kit, withTelemetry bool) greeterv1.GreeterClient {
	b.Helper()
	pki := testpki.New()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()
	var conn *grpc.ClientConn
	if kit {
		var tel *telemetry.Telemetry
		if withTelemetry {
			tel, err = telemetry.New(context.Background(), telemetry.Config{ServiceName: "bench"})
			if err != nil {
				b.Fatal(err)
			}
		}
		logger := slog.New(slog.NewJSONHandler(io.Discard, nil)) // successes are not logged at Info
		srv, err := server.New(
			server.WithCredentials(credentials.NewTLS(pki.Server)),
			server.WithTelemetry(tel),
			server.WithLogger(logger),
			server.WithValidator(greetertest.Rules()),
		)
		if err != nil {
			b.Fatal(err)
		}
		greeterv1.RegisterGreeterServer(srv, &greeter.Service{})
		go func() { _ = srv.Serve(lis) }()
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			if tel != nil {
				_ = tel.Shutdown(ctx)
			}
		})
		conn, err = client.Dial("passthrough:///"+addr,
			client.WithCredentials(credentials.NewTLS(pki.Client)),
			client.WithTelemetry(tel),
			client.WithIdempotentMethods("/switchboard.greeter.v1.Greeter/SayHello"),
		)
		if err != nil {
			b.Fatal(err)
		}
	} else {
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.Server)))
		greeterv1.RegisterGreeterServer(srv, &greeter.Service{})
		go func() { _ = srv.Serve(lis) }()
		b.Cleanup(srv.Stop)
		conn, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.Client)))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = conn.Close() })
	c := greeterv1.NewGreeterClient(conn)
	// Connect and warm up outside the timer.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "warm"}); err != nil {
		b.Fatal(err)
	}
	return c
}

// modes are the servers and clients compared: bare grpc-go (the
// baseline), the kit's full chain, and the kit's chain without telemetry,
// which shows what the chain itself costs.
var modes = []struct {
	name           string
	kit, telemetry bool
}{{"bare", false, false}, {"kit", true, true}, {"kit-notelemetry", true, false}}

// BenchmarkUnary measures SayHello from 64 concurrent callers.
func BenchmarkUnary(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			c := setup(b, m.kit, m.telemetry)
			req := &greeterv1.SayHelloRequest{Name: "bench"}
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := c.SayHello(ctx, req)
					cancel()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
		})
	}
}

// BenchmarkServerStream measures messages of StreamGreetings received by
// 64 concurrent streams.
func BenchmarkServerStream(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			c := setup(b, m.kit, m.telemetry)
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "bench", Count: greeter.MaxCount})
				if err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					if _, err := s.Recv(); err != nil {
						if !errors.Is(err, io.EOF) {
							b.Error(err)
						}
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
