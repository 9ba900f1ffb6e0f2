package client_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	sayHello        = "/switchboard.greeter.v1.Greeter/SayHello"
	streamGreetings = "/switchboard.greeter.v1.Greeter/StreamGreetings"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

var errFlaky = status.Unavailable("test", "FLAKY", "try again", 0)

func TestDialRequiresTransportSecurityChoice(t *testing.T) {
	if _, err := client.Dial("passthrough:///127.0.0.1:1"); err == nil {
		t.Error("Dial without credentials succeeded, want an error")
	}
}

func TestIdempotentMethodsAreRetriedOthersNot(t *testing.T) {
	var unary, streams atomic.Int32
	f := &greetertest.Fake{
		SayHelloFunc: func(context.Context, *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			if unary.Add(1)%3 != 0 { // two failures, then success
				return nil, errFlaky
			}
			return &greeterv1.SayHelloResponse{Message: "ok"}, nil
		},
		StreamGreetingsFunc: func(_ *greeterv1.StreamGreetingsRequest, s greeterv1.Greeter_StreamGreetingsServer) error {
			if streams.Add(1)%3 != 0 {
				return errFlaky
			}
			return s.Send(&greeterv1.StreamGreetingsResponse{Message: "ok", Sequence: 1})
		},
	}
	_, addr := greetertest.Start(t, f)
	fast := client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 4, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Multiplier: 2})
	tests := []struct {
		name       string
		idempotent []string
		wantCode   codes.Code
		wantCalls  int32
	}{
		{"declared idempotent", []string{sayHello, streamGreetings}, codes.OK, 3},
		{"not declared", nil, codes.Unavailable, 1},
	}
	for _, tt := range tests {
		unary.Store(0)
		streams.Store(0)
		c, _ := greetertest.Dial(t, addr, fast, client.WithIdempotentMethods(tt.idempotent...), client.WithBreaker(nil))
		ctx := ctxTimeout(t, 5*time.Second)
		_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
		if got := grpcstatus.Code(err); got != tt.wantCode || unary.Load() != tt.wantCalls {
			t.Errorf("%s: unary = %v after %d calls, want %v after %d", tt.name, err, unary.Load(), tt.wantCode, tt.wantCalls)
		}
		s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if got := grpcstatus.Code(err); got != tt.wantCode || streams.Load() != tt.wantCalls {
			t.Errorf("%s: stream = %v after %d calls, want %v after %d", tt.name, err, streams.Load(), tt.wantCode, tt.wantCalls)
		}
	}
}

func TestIdempotentMethodsFromDescriptor(t *testing.T) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("switchboard.greeter.v1.Greeter")
	if err != nil {
		t.Fatal(err)
	}
	got := client.IdempotentMethods(d.(protoreflect.ServiceDescriptor))
	want := map[string]bool{sayHello: true, streamGreetings: true}
	if len(got) != len(want) {
		t.Fatalf("IdempotentMethods(Greeter) = %v, want the keys of %v", got, want)
	}
	for _, m := range got {
		if !want[m] {
			t.Errorf("IdempotentMethods(Greeter) has %s, not declared idempotent", m)
		}
	}
}

func TestBreakerOpensFailsFastAndHalfOpens(t *testing.T) {
	var calls atomic.Int32
	var healthy atomic.Bool
	f := &greetertest.Fake{SayHelloFunc: func(context.Context, *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		calls.Add(1)
		if !healthy.Load() {
			return nil, errFlaky
		}
		return &greeterv1.SayHelloResponse{Message: "ok"}, nil
	}}
	_, addr := greetertest.Start(t, f)
	c, _ := greetertest.Dial(t, addr, client.WithBreaker(&client.BreakerSettings{ConsecutiveFailures: 3, OpenTimeout: 300 * time.Millisecond}))
	ctx := ctxTimeout(t, 5*time.Second)
	call := func() error {
		_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
		return err
	}
	for i := 0; i < 3; i++ {
		if err := call(); status.Reason(err) != "FLAKY" {
			t.Fatalf("call %d = %v, want the server's FLAKY", i, err)
		}
	}
	// Open: fails fast without reaching the server, for streams too.
	err := call()
	if grpcstatus.Code(err) != codes.Unavailable || status.Reason(err) != client.ReasonCircuitOpen {
		t.Fatalf("call with breaker open = %v, want Unavailable %s", err, client.ReasonCircuitOpen)
	}
	if d, ok := status.RetryDelay(err); !ok || d != 300*time.Millisecond {
		t.Errorf("RetryDelay = %v, %v, want 300ms", d, ok)
	}
	if _, err := c.Chat(ctx); status.Reason(err) != client.ReasonCircuitOpen {
		t.Errorf("stream with breaker open = %v, want %s", err, client.ReasonCircuitOpen)
	}
	if calls.Load() != 3 {
		t.Errorf("server saw %d calls, want 3: the open breaker must not call it", calls.Load())
	}
	// Half-open after the timeout: a probe goes through and closes it.
	healthy.Store(true)
	time.Sleep(350 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if err := call(); err != nil {
			t.Fatalf("call %d after the open timeout = %v, want success", i, err)
		}
	}
}

func TestClientErrorsDoNotTripBreaker(t *testing.T) {
	_, addr := greetertest.Start(t, &greetertest.Fake{})
	c, _ := greetertest.Dial(t, addr, client.WithBreaker(&client.BreakerSettings{ConsecutiveFailures: 2}))
	ctx := ctxTimeout(t, 5*time.Second)
	for i := 0; i < 5; i++ {
		_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{}) // invalid
		if grpcstatus.Code(err) != codes.InvalidArgument {
			t.Fatalf("call %d = %v, want InvalidArgument", i, err)
		}
	}
}

// relay is a Greeter that answers SayHello and StreamGreetings by calling
// next, so three of them make the hops 1 -> 2 -> 3.
func relay(next func() greeterv1.GreeterClient) *greetertest.Fake {
	return &greetertest.Fake{
		SayHelloFunc: func(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			return next().SayHello(ctx, req)
		},
		StreamGreetingsFunc: func(req *greeterv1.StreamGreetingsRequest, s greeterv1.Greeter_StreamGreetingsServer) error {
			in, err := next().StreamGreetings(s.Context(), req)
			if err != nil {
				return err
			}
			for {
				m, err := in.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := s.Send(m); err != nil {
					return err
				}
			}
		},
	}
}

// lastHop reports what it received: the time left before its deadline and
// the propagated headers.
func lastHop(block chan struct{}, cancelled chan<- string) *greetertest.Fake {
	describe := func(ctx context.Context) string {
		dl, ok := ctx.Deadline()
		md, _ := metadata.FromIncomingContext(ctx)
		left := "none"
		if ok {
			left = time.Until(dl).String()
		}
		return left + "|" + first(md.Get(requestid.Header)) + "|" + first(md.Get("authorization"))
	}
	wait := func(ctx context.Context, what string) {
		if block == nil {
			return
		}
		select {
		case <-ctx.Done():
			cancelled <- what
		case <-block:
		}
	}
	return &greetertest.Fake{
		SayHelloFunc: func(ctx context.Context, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			wait(ctx, "unary")
			return &greeterv1.SayHelloResponse{Message: describe(ctx)}, nil
		},
		StreamGreetingsFunc: func(_ *greeterv1.StreamGreetingsRequest, s greeterv1.Greeter_StreamGreetingsServer) error {
			if err := s.Send(&greeterv1.StreamGreetingsResponse{Message: describe(s.Context())}); err != nil {
				return err
			}
			wait(s.Context(), "stream")
			return nil
		},
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// hops starts hop 3 (last), hop 2 relaying to it and hop 1 relaying to
// hop 2, and returns a client of hop 1.
func hops(t *testing.T, last *greetertest.Fake, opts ...client.Option) greeterv1.GreeterClient {
	t.Helper()
	_, addr3 := greetertest.Start(t, last)
	to3, _ := greetertest.Dial(t, addr3, opts...)
	_, addr2 := greetertest.Start(t, relay(func() greeterv1.GreeterClient { return to3 }))
	to2, _ := greetertest.Dial(t, addr2, opts...)
	_, addr1 := greetertest.Start(t, relay(func() greeterv1.GreeterClient { return to2 }))
	to1, _ := greetertest.Dial(t, addr1, opts...)
	return to1
}

func TestDeadlineAndHeadersReachHop3ReducedByMargins(t *testing.T) {
	const margin = 100 * time.Millisecond
	c := hops(t, lastHop(nil, nil), client.WithDeadlineMargin(margin))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, requestid.Header, "req-7", "authorization", "Bearer tok")

	resp, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	checkHop3(t, "unary", resp.GetMessage(), margin)

	s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkHop3(t, "stream", m.GetMessage(), margin)
}

func checkHop3(t *testing.T, kind, got string, margin time.Duration) {
	t.Helper()
	var left time.Duration
	var id, auth string
	parts := splitN(got, 3)
	left, err := time.ParseDuration(parts[0])
	if err != nil {
		t.Fatalf("%s: hop 3 had no deadline (%q)", kind, got)
	}
	id, auth = parts[1], parts[2]
	// The caller's 2s, less a margin at hop 1 and at hop 2, less the time
	// the hops took.
	if maxLeft := 2*time.Second - 2*margin; left > maxLeft || left < maxLeft-time.Second {
		t.Errorf("%s: hop 3 had %v left, want a little under %v", kind, left, maxLeft)
	}
	if id != "req-7" || auth != "Bearer tok" {
		t.Errorf("%s: hop 3 saw request id %q and authorization %q, want req-7 and Bearer tok", kind, id, auth)
	}
}

func splitN(s string, n int) []string {
	out := make([]string, 0, n)
	for i := 0; i < n-1; i++ {
		j := 0
		for j < len(s) && s[j] != '|' {
			j++
		}
		out = append(out, s[:j])
		if j < len(s) {
			s = s[j+1:]
		} else {
			s = ""
		}
	}
	return append(out, s)
}

func TestCancellationAtCallerReachesHop3(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	cancelled := make(chan string, 2)
	c := hops(t, lastHop(block, cancelled))
	for _, kind := range []string{"unary", "stream"} {
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		if kind == "unary" {
			go func() {
				_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
				errc <- err
			}()
			time.Sleep(200 * time.Millisecond)
		} else {
			s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil { // hop 3 is now waiting
				t.Fatal(err)
			}
			go func() {
				_, err := s.Recv()
				errc <- err
			}()
		}
		cancel()
		if err := <-errc; grpcstatus.Code(err) != codes.Canceled {
			t.Errorf("%s: caller got %v, want Canceled", kind, err)
		}
		select {
		case got := <-cancelled:
			if got != kind {
				t.Errorf("hop 3 saw %s cancelled, want %s", got, kind)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: hop 3 was not cancelled", kind)
		}
	}
}

func TestDeadlineTooShortFailsWithoutCalling(t *testing.T) {
	var calls atomic.Int32
	_, addr := greetertest.Start(t, &greetertest.Fake{SayHelloFunc: func(context.Context, *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
		calls.Add(1)
		return &greeterv1.SayHelloResponse{}, nil
	}})
	// The relay's call inherits 500ms, less than its 1s margin.
	next, _ := greetertest.Dial(t, addr, client.WithDeadlineMargin(time.Second))
	_, relayAddr := greetertest.Start(t, relay(func() greeterv1.GreeterClient { return next }))
	c, _ := greetertest.Dial(t, relayAddr)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
	if grpcstatus.Code(err) != codes.DeadlineExceeded || status.Reason(err) != client.ReasonDeadlineTooShort {
		t.Errorf("call with 500ms left and a 1s margin = %v, want DeadlineExceeded %s", err, client.ReasonDeadlineTooShort)
	}
	if calls.Load() != 0 {
		t.Errorf("server saw %d calls, want 0", calls.Load())
	}
}

func TestDefaultTimeoutAppliesToUnaryOnly(t *testing.T) {
	c := hops(t, lastHop(nil, nil), client.WithTimeout(700*time.Millisecond))
	resp, err := c.SayHello(ctxTimeout(t, time.Minute), &greeterv1.SayHelloRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	left, err := time.ParseDuration(splitN(resp.GetMessage(), 3)[0])
	if err != nil || left > 700*time.Millisecond {
		t.Errorf("hop 3 had %q left with a 700ms default timeout", resp.GetMessage())
	}
	s, err := c.StreamGreetings(t.Context(), &greeterv1.StreamGreetingsRequest{Name: "a", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := splitN(m.GetMessage(), 3)[0]; got != "none" {
		t.Errorf("stream without a caller deadline reached hop 3 with %s left, want no deadline", got)
	}
}
