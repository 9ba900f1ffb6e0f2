package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serverCalls returns the number of grpc.server.call.duration samples of
// method with status code in tel's registry.
func serverCalls(t *testing.T, tel *telemetry.Telemetry, method, code string) uint64 {
	t.Helper()
	families, err := tel.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, f := range families {
		if f.GetName() != "grpc_server_call_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["grpc_method"] == method && labels["grpc_status"] == code {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// TestTelemetryRunsBeforeTheChain checks that telemetry (in its default,
// interceptor, mode) runs ahead of the kit's chain: calls the chain rejects
// are counted in the gRFC A66 metrics, and the access log line of a call
// carries the caller's trace id.
func TestTelemetryRunsBeforeTheChain(t *testing.T) {
	tel, err := telemetry.New(t.Context(), telemetry.Config{ServiceName: "greeter-test"})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&logs, nil)))
	_, addr := start(t, &fakeGreeter{}, server.WithTelemetry(tel), server.WithLogger(logger))
	t.Cleanup(func() { _ = tel.Shutdown(t.Context()) }) // runs after the server stops
	c, _ := dial(t, addr)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(ctxTimeout(t, 5*time.Second),
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: ""}); grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("SayHello(\"\") = %v, want InvalidArgument", err)
	}
	s, err := c.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "a", Count: 0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("StreamGreetings(count 0) = %v, want InvalidArgument", err)
	}

	for _, method := range []string{"SayHello", "StreamGreetings"} {
		full := greeterv1.Greeter_ServiceDesc.ServiceName + "/" + method
		if got := serverCalls(t, tel, full, "INVALID_ARGUMENT"); got != 1 {
			t.Errorf("grpc_server_call_duration_seconds{%s, INVALID_ARGUMENT} = %d, want 1", full, got)
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	rejected := 0
	for _, l := range lines {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if line["msg"] != telemetry.AccessLogMessage || line[telemetry.LogKeyCode] != codes.InvalidArgument.String() {
			continue
		}
		rejected++
		if got := line[telemetry.LogKeyTraceID]; got != traceID {
			t.Errorf("access log of %v has trace_id %v, want the caller's %s", line[telemetry.LogKeyMethod], got, traceID)
		}
	}
	if rejected != 2 {
		t.Errorf("%d access log lines of rejected calls, want 2:\n%s", rejected, logs.String())
	}
}
