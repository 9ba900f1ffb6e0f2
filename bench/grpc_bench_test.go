package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/internal/testpki"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

// parallelism sets the number of concurrent callers: with GOMAXPROCS 2, a
// parallelism of 32 runs 64 goroutines.
const parallelism = 32

// setup starts one greeter server and returns a client of it: either bare
// grpc-go or the kit's full chain, both over the same mutual TLS.
func setup(b *testing.B, kit, withTelemetry, security bool) (greeterv1.GreeterClient, context.Context) {
	b.Helper()
	pki := testpki.New()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()
	callCtx := context.Background()
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
		opts := []server.Option{
			server.WithCredentials(credentials.NewTLS(pki.Server)),
			server.WithTelemetry(tel),
			server.WithLogger(logger),
			server.WithValidator(greetertest.Rules()),
			// Nothing to drain for: the drain period would only add to
			// every benchmark's wall time.
			server.WithShutdown(0, 5*time.Second),
		}
		if security {
			var sec []server.Option
			sec, callCtx = securityOptions(b)
			opts = append(opts, sec...)
		}
		srv, err := server.New(opts...)
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
	ctx, cancel := context.WithTimeout(callCtx, 5*time.Second)
	defer cancel()
	if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "warm"}); err != nil {
		b.Fatal(err)
	}
	return c, callCtx
}

// securityOptions turns on what kit/auth, kit/authz and kit/ratelimit add:
// the caller's service identity from its certificate, a verified user
// token, a policy that requires a user, and per-caller rate limits high
// enough never to refuse. It returns the context calls are made with,
// carrying the user's token.
func securityOptions(b *testing.B) ([]server.Option, context.Context) {
	b.Helper()
	issuer, err := auth.NewIssuer(auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		b.Fatal(err)
	}
	token, _, err := issuer.Issue(context.Background(), "user-1", []string{"customer"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	verifier, err := auth.NewVerifier(issuer, auth.DefaultIssuer, auth.DefaultAudience, auth.WithRevocations(revocation.NewMemory(0)))
	if err != nil {
		b.Fatal(err)
	}
	policy, err := authz.New(authz.Policy{
		Service: greeterv1.Greeter_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{authz.AnyMethod: {Roles: []string{"customer"}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	limiter, err := ratelimit.New(ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1e9, Burst: 1e9}})
	if err != nil {
		b.Fatal(err)
	}
	opts := []server.Option{
		server.WithAuthenticator(verifier.Authenticator()),
		server.WithAuthorizer(policy.Authorize),
		server.WithLimiter(limiter.Limit),
	}
	return opts, metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

// cpuClock measures the CPU time the process (server and client) spends
// per operation: on a machine shared with other work, throughput follows
// whatever else runs, while the CPU an operation costs barely does.
type cpuClock struct {
	start time.Duration
	ok    bool
}

func startCPU() cpuClock {
	start, ok := processCPUTime()
	return cpuClock{start: start, ok: ok}
}

// report adds the cpu-ns/op metric, when the platform measures it.
func (c cpuClock) report(b *testing.B) {
	if end, ok := processCPUTime(); ok && c.ok && b.N > 0 {
		b.ReportMetric(float64(end-c.start)/float64(b.N), "cpu-ns/op")
	}
}

// modes are the servers and clients compared: bare grpc-go (the
// baseline), the kit's full chain, the kit's chain without telemetry
// (what the chain itself costs), and the full chain with security on:
// token verification, authorization and rate limits.
var modes = []struct {
	name                     string
	kit, telemetry, security bool
}{
	{"bare", false, false, false},
	{"kit", true, true, false},
	{"kit-notelemetry", true, false, false},
	{"kit-security", true, true, true},
}

// BenchmarkUnary measures SayHello from 64 concurrent callers.
func BenchmarkUnary(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			c, callCtx := setup(b, m.kit, m.telemetry, m.security)
			req := &greeterv1.SayHelloRequest{Name: "bench"}
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			cpu := startCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ctx, cancel := context.WithTimeout(callCtx, 10*time.Second)
					_, err := c.SayHello(ctx, req)
					cancel()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			cpu.report(b)
		})
	}
}

// BenchmarkServerStream measures messages of StreamGreetings received by
// 64 concurrent streams. The streams are opened, and their first message
// received, before the clock starts: the figure is the steady flow of
// messages, whatever opening a stream costs (BenchmarkUnary measures what
// the chain costs per call).
func BenchmarkServerStream(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			c, callCtx := setup(b, m.kit, m.telemetry, m.security)
			ctx, cancel := context.WithCancel(callCtx)
			defer cancel()
			open := func() (greeterv1.Greeter_StreamGreetingsClient, error) {
				s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "bench", Count: greeter.MaxCount})
				if err != nil {
					return nil, err
				}
				if _, err := s.Recv(); err != nil {
					return nil, err
				}
				return s, nil
			}
			// RunParallel starts parallelism × GOMAXPROCS goroutines: one
			// stream each.
			n := parallelism * runtime.GOMAXPROCS(0)
			streams := make(chan greeterv1.Greeter_StreamGreetingsClient, n)
			for range n {
				s, err := open()
				if err != nil {
					b.Fatal(err)
				}
				streams <- s
			}
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			cpu := startCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				s := <-streams
				for pb.Next() {
					_, err := s.Recv()
					if errors.Is(err, io.EOF) {
						// greeter.MaxCount messages read: open another
						// stream (rare: it takes a long benchtime).
						if s, err = open(); err == nil {
							_, err = s.Recv()
						}
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			cpu.report(b)
		})
	}
}
