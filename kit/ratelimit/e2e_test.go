package ratelimit_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

func TestExhaustedOverGRPC(t *testing.T) {
	// No authentication: the caller is the peer address, 127.0.0.1. One
	// call a second, two at once, for unary calls and streams alike.
	l, err := ratelimit.New(ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	_, addr := greetertest.Start(t, &greeter.Service{}, server.WithLimiter(l.Limit))
	client, _ := greetertest.Dial(t, addr)
	ctx := t.Context()

	start := time.Now()
	for i := range 2 {
		if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"}); err != nil {
			t.Fatalf("SayHello %d = %v, want nil", i+1, err)
		}
	}
	_, err = client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"})
	checkRetryOverGRPC(t, "SayHello", err, time.Second-time.Since(start))

	stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "ann", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	checkRetryOverGRPC(t, "StreamGreetings", err, time.Second-time.Since(start))
}

// checkRetryOverGRPC checks that err, received by a client, is
// RESOURCE_EXHAUSTED with reason RATE_LIMITED and a RetryInfo of at least
// atLeast and at most a second.
func checkRetryOverGRPC(t *testing.T, call string, err error, atLeast time.Duration) {
	t.Helper()
	if got := grpcstatus.Code(err); got != codes.ResourceExhausted {
		t.Fatalf("%s: code = %v, want ResourceExhausted (err %v)", call, got, err)
	}
	if got, want := status.Reason(err), ratelimit.ReasonRateLimited; got != want {
		t.Errorf("%s: reason = %q, want %q", call, got, want)
	}
	d, ok := status.RetryDelay(err)
	if !ok {
		t.Fatalf("%s: RetryDelay(%v) = _, false, want a RetryInfo", call, err)
	}
	if d < atLeast || d > time.Second {
		t.Errorf("%s: RetryDelay = %v, want between %v and 1s", call, d, atLeast)
	}
}
