package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(b.buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startLogged serves the greeter with a request id interceptor followed by
// AccessLog writing JSON at level to the returned buffer.
func startLogged(t *testing.T, level slog.Level, opts AccessLogOptions) (greeterv1.GreeterClient, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	logger := NewLogger(buf, "json", level)
	unary, stream := AccessLog(logger, opts)
	client := startGreeter(t, &greeter{}, []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(requestIDUnary, unary),
		grpc.ChainStreamInterceptor(requestIDStream, stream),
	}, nil)
	return client, buf
}

func TestAccessLogLevels(t *testing.T) {
	const secret = "payload-secret-7f3a"
	tests := []struct {
		name      string
		req       string
		stream    bool
		wantLevel string // "" means no line
		wantCode  string
	}{
		{"success not logged at Info", secret, false, "", ""},
		{"client error at Warn", "code:InvalidArgument", false, "WARN", "InvalidArgument"},
		{"not found at Warn", "code:NotFound", false, "WARN", "NotFound"},
		{"server fault at Error", "code:Internal", false, "ERROR", "Internal"},
		{"unavailable at Error", "code:Unavailable", false, "ERROR", "Unavailable"},
		{"stream success not logged", secret, true, "", ""},
		{"stream error logged", "code:PermissionDenied", true, "WARN", "PermissionDenied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, buf := startLogged(t, slog.LevelInfo, AccessLogOptions{})
			ctx := metadata.AppendToOutgoingContext(testContext(t), requestid.Header, "req-7", "authorization", "Bearer "+secret)
			method := "/switchboard.greeter.v1.Greeter/SayHello"
			var err error
			if tt.stream {
				method = "/switchboard.greeter.v1.Greeter/StreamGreetings"
				err = drain(ctx, client, tt.req)
			} else {
				_, err = client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: tt.req})
			}
			if got := status.Code(err).String(); tt.wantCode != "" && got != tt.wantCode {
				t.Fatalf("call returned %v, want %s", err, tt.wantCode)
			}

			lines := buf.lines(t)
			if strings.Contains(buf.String(), secret) {
				t.Errorf("log contains payload or metadata text: %s", buf.String())
			}
			if tt.wantLevel == "" {
				if len(lines) != 0 {
					t.Errorf("logged %v, want nothing", lines)
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("logged %d lines, want 1: %v", len(lines), lines)
			}
			l := lines[0]
			for k, want := range map[string]any{
				slog.LevelKey:   tt.wantLevel,
				slog.MessageKey: AccessLogMessage,
				LogKeyMethod:    method,
				LogKeyCode:      tt.wantCode,
				LogKeyRequestID: "req-7",
			} {
				if l[k] != want {
					t.Errorf("%s = %v, want %v", k, l[k], want)
				}
			}
			if d, ok := l[LogKeyDuration].(float64); !ok || d < 0 || d > 30 {
				t.Errorf("duration = %v, want seconds as a number", l[LogKeyDuration])
			}
			if p, _ := l[LogKeyPeer].(string); !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("peer = %v, want 127.0.0.1:port", l[LogKeyPeer])
			}
			if got, want := l[LogKeyStream] == true, tt.stream; got != want {
				t.Errorf("stream = %v, want %v", l[LogKeyStream], want)
			}
		})
	}
}

func drain(ctx context.Context, client greeterv1.GreeterClient, name string) error {
	stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: name, Count: 2})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestAccessLogSampling(t *testing.T) {
	client, buf := startLogged(t, slog.LevelInfo, AccessLogOptions{
		SampleEvery: 3,
		Identity:    func(context.Context) string { return "spiffe://test/client" },
	})
	ctx := testContext(t)
	for range 4 {
		if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := drain(ctx, client, "y"); err != nil { // the 5th success
		t.Fatal(err)
	}
	if err := drain(ctx, client, "y"); err != nil { // the 6th
		t.Fatal(err)
	}
	lines := buf.lines(t)
	if len(lines) != 2 {
		t.Fatalf("logged %d lines of 6 successes with SampleEvery 3, want 2: %v", len(lines), lines)
	}
	for i, l := range lines {
		if l[slog.LevelKey] != "INFO" || l[LogKeyCode] != "OK" || l[LogKeyPeer] != "spiffe://test/client" {
			t.Errorf("line %d = %v, want INFO, code OK, peer from Identity", i, l)
		}
	}
	if lines[1][LogKeyStream] != true {
		t.Errorf("6th success = %v, want stream=true", lines[1])
	}
}

func TestAccessLogSuccessLevel(t *testing.T) {
	tests := []struct {
		name       string
		loggerLvl  slog.Level
		opts       AccessLogOptions
		wantLevels []string
	}{
		{"default success level is Debug", slog.LevelDebug, AccessLogOptions{}, []string{"DEBUG", "DEBUG"}},
		{"SampleEvery 1 logs every success at Info", slog.LevelInfo, AccessLogOptions{SampleEvery: 1}, []string{"INFO", "INFO"}},
		{"sampled at Info, the rest at Debug", slog.LevelDebug, AccessLogOptions{SampleEvery: 2}, []string{"DEBUG", "INFO"}},
		{"SuccessLevel above Info wins over sampling", slog.LevelInfo, AccessLogOptions{SuccessLevel: slog.LevelWarn, SampleEvery: 2}, []string{"WARN", "WARN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, buf := startLogged(t, tt.loggerLvl, tt.opts)
			for range 2 {
				if _, err := client.SayHello(testContext(t), &greeterv1.SayHelloRequest{Name: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for _, l := range buf.lines(t) {
				got = append(got, l[slog.LevelKey].(string))
			}
			if strings.Join(got, ",") != strings.Join(tt.wantLevels, ",") {
				t.Errorf("levels = %v, want %v", got, tt.wantLevels)
			}
		})
	}
}

func TestCodeLevel(t *testing.T) {
	warn := []codes.Code{codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.Unauthenticated, codes.FailedPrecondition, codes.OutOfRange, codes.ResourceExhausted,
		codes.Aborted}
	if got := codeLevel(codes.Canceled); got != slog.LevelInfo {
		t.Errorf("codeLevel(Canceled) = %v, want INFO", got)
	}
	errs := []codes.Code{codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable,
		codes.DeadlineExceeded, codes.Unimplemented, codes.Code(99)}
	for _, c := range warn {
		if got := codeLevel(c); got != slog.LevelWarn {
			t.Errorf("codeLevel(%v) = %v, want WARN", c, got)
		}
	}
	for _, c := range errs {
		if got := codeLevel(c); got != slog.LevelError {
			t.Errorf("codeLevel(%v) = %v, want ERROR", c, got)
		}
	}
}

func TestAccessLogNilLogger(t *testing.T) {
	unary, _ := AccessLog(nil, AccessLogOptions{})
	_, err := unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/a/b"}, func(context.Context, any) (any, error) {
		return nil, status.Error(codes.Internal, "x")
	})
	if status.Code(err) != codes.Internal {
		t.Errorf("err = %v, want the handler's", err)
	}
}

func BenchmarkAccessLogDisabledSuccess(b *testing.B) {
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil)) // Info: successes are not logged
	unary, _ := AccessLog(logger, AccessLogOptions{SampleEvery: 1 << 30})
	info := &grpc.UnaryServerInfo{FullMethod: "/a/b"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = unary(ctx, nil, info, handler)
	}
}
