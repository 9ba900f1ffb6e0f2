package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	grpcstatus "google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/compression"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestStreamIdleTimeoutEndsWithClearStatus(t *testing.T) {
	handlerDone := make(chan error, 1)
	f := &fakeGreeter{ChatFunc: func(stream greeterv1.Greeter_ChatServer) error {
		_, err := stream.Recv() // blocks: the client never sends
		handlerDone <- err
		return err
	}}
	_, addr := start(t, f, server.WithStreamLimits(server.StreamLimits{Idle: 200 * time.Millisecond}))
	c, _ := dial(t, addr)
	stream, err := c.Chat(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_, err = stream.Recv()
	if grpcstatus.Code(err) != codes.DeadlineExceeded || status.Reason(err) != server.ReasonStreamIdle {
		t.Fatalf("idle stream ended with %v, want DeadlineExceeded %s", err, server.ReasonStreamIdle)
	}
	if waited := time.Since(begin); waited < 150*time.Millisecond {
		t.Errorf("idle stream ended after %v, before its 200ms idle timeout", waited)
	}
	select {
	case err := <-handlerDone: // the blocked handler was released
		if err == nil {
			t.Error("handler's Recv returned nil after the stream ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler still blocked in Recv after the stream ended")
	}
}

func TestStreamActivityKeepsIdleTimerAtBay(t *testing.T) {
	_, addr := start(t, &fakeGreeter{}, server.WithStreamLimits(server.StreamLimits{Idle: 300 * time.Millisecond}))
	c, _ := dial(t, addr)
	stream, err := c.Chat(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ { // 8 x 100ms: longer than the idle timeout in all
		time.Sleep(100 * time.Millisecond)
		if err := stream.Send(&greeterv1.ChatRequest{Name: "x"}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("end = %v, want EOF", err)
	}
}

func TestStreamMaxLifetime(t *testing.T) {
	_, addr := start(t, &fakeGreeter{}, server.WithStreamLimits(server.StreamLimits{Idle: time.Minute, MaxLifetime: 300 * time.Millisecond}))
	c, _ := dial(t, addr)
	stream, err := c.Chat(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if err := stream.Send(&greeterv1.ChatRequest{Name: "x"}); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		_, err := stream.Recv()
		if err == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if grpcstatus.Code(err) != codes.DeadlineExceeded || status.Reason(err) != server.ReasonStreamMaxLifetime {
			t.Fatalf("stream ended with %v, want DeadlineExceeded %s", err, server.ReasonStreamMaxLifetime)
		}
		return
	}
}

func TestSlowReaderBlocksWriterInsteadOfBuffering(t *testing.T) {
	var sent atomic.Int32
	f := &fakeGreeter{StreamGreetingsFunc: func(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error {
		resp := &greeterv1.StreamGreetingsResponse{Padding: make([]byte, req.GetPaddingBytes())}
		for i := int32(1); i <= req.GetCount(); i++ {
			resp.Sequence = i
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent.Add(1)
		}
		return nil
	}}
	const window = 64 << 10
	_, addr := start(t, f, server.WithFlowControl(window, window))
	c, _ := dial(t, addr, client.WithFlowControl(window, window))
	stream, err := c.StreamGreetings(ctxTimeout(t, 10*time.Second),
		&greeterv1.StreamGreetingsRequest{Name: "slow", Count: 200, PaddingBytes: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the reader stalls
	// 200 messages of 32 KiB are 6.4 MiB. With 64 KiB windows, a writer that
	// blocks gets a handful of messages past the stall; a buffering one
	// would have finished all 200.
	if n := sent.Load(); n > 20 {
		t.Errorf("server completed %d sends while the client was not reading, want it blocked (<= 20)", n)
	}
	got := 1
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 200 {
		t.Errorf("received %d messages, want 200", got)
	}
}

func TestGracefulShutdownFinishesInFlightAndRefusesNew(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	f := &fakeGreeter{
		SayHelloFunc: func(context.Context, *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			started <- struct{}{}
			<-release
			return &greeterv1.SayHelloResponse{Message: "finished"}, nil
		},
		StreamGreetingsFunc: func(_ *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error {
			started <- struct{}{}
			<-release
			for i := int32(1); i <= 3; i++ {
				if err := stream.Send(&greeterv1.StreamGreetingsResponse{Sequence: i}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	srv, err := server.New(server.WithInsecure(), server.WithValidator(rules()), server.WithShutdown(200*time.Millisecond, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	greeterv1.RegisterGreeterServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	c, _ := dial(t, lis.Addr().String(), withoutHealthCheck())
	ctx := ctxTimeout(t, 10*time.Second)

	unary := make(chan error, 1)
	go func() {
		resp, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "a"})
		if err == nil && resp.GetMessage() != "finished" {
			err = errors.New("wrong answer " + resp.GetMessage())
		}
		unary <- err
	}()
	stream, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	<-started

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	time.Sleep(400 * time.Millisecond) // past the drain: GracefulStop is waiting

	// A new connection is refused while the old calls run.
	c2, _ := dial(t, lis.Addr().String(), withoutHealthCheck())
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c2.SayHello(short, &greeterv1.SayHelloRequest{Name: "late"}, grpc.WaitForReady(false))
	cancel()
	if err == nil {
		t.Error("a call on a new connection during shutdown succeeded, want it refused")
	}

	close(release)
	if err := <-unary; err != nil {
		t.Errorf("in-flight unary call = %v, want success", err)
	}
	n := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("in-flight stream: %v", err)
		}
		n++
	}
	if n != 3 {
		t.Errorf("in-flight stream delivered %d messages, want 3", n)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestOversizeMessagesAreResourceExhausted(t *testing.T) {
	_, addr := start(t, &fakeGreeter{}, server.WithMaxMessageSize(1024, 1024))
	c, _ := dial(t, addr)
	ctx := ctxTimeout(t, 5*time.Second)
	tests := []struct {
		name string
		call func() error
	}{
		{"unary request", func() error {
			_, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: strings.Repeat("x", 4096)})
			return err
		}},
		{"stream message sent by the server", func() error {
			s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 1, PaddingBytes: 4096})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"stream message sent by the client", func() error {
			s, err := c.Chat(ctx)
			if err != nil {
				return err
			}
			if err := s.Send(&greeterv1.ChatRequest{Name: strings.Repeat("x", 4096)}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			_, err = s.Recv()
			return err
		}},
	}
	for _, tt := range tests {
		if err := tt.call(); grpcstatus.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: got %v, want ResourceExhausted", tt.name, err)
		}
	}
}

// compressionSeen records the compression of the messages a client
// received.
type compressionSeen struct {
	encoding   atomic.Value
	compressed atomic.Bool
}

func (*compressionSeen) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (*compressionSeen) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (*compressionSeen) HandleConn(context.Context, stats.ConnStats) {}
func (c *compressionSeen) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch s := s.(type) {
	case *stats.InHeader:
		c.encoding.Store(s.Compression)
	case *stats.InPayload:
		if s.CompressedLength < s.Length {
			c.compressed.Store(true)
		}
	}
}

func TestCompressionIsNegotiated(t *testing.T) {
	_, addr := start(t, &fakeGreeter{})
	for _, name := range []string{gzip.Name, compression.Zstd} {
		seen := &compressionSeen{}
		c, _ := dial(t, addr, client.WithCompressor(name), client.WithDialOptions(grpc.WithStatsHandler(seen)))
		ctx := ctxTimeout(t, 5*time.Second)
		s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "z", Count: 2, PaddingBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := s.Recv(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if got, _ := seen.encoding.Load().(string); got != name {
			t.Errorf("server answered with grpc-encoding %q, want %q", got, name)
		}
		if !seen.compressed.Load() {
			t.Errorf("%s: 64 KiB of zeros arrived uncompressed", name)
		}
	}
}

func TestTooFrequentPingsGetGoAway(t *testing.T) {
	_, addr := start(t, &fakeGreeter{}, server.WithKeepalive(
		keepalive.ServerParameters{Time: time.Hour, Timeout: 20 * time.Second},
		keepalive.EnforcementPolicy{MinTime: time.Minute, PermitWithoutStream: true}))
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, bufio.NewReader(conn))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		// A well-behaved client pings at most once a minute here; this one
		// pings ten times at once.
		for i := 0; i < 10; i++ {
			if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
				return
			}
		}
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(ga.DebugData()), "too_many_pings") {
				t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			return
		}
	}
}
