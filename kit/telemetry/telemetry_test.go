package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/requestid"
)

const (
	sayHello        = "switchboard.greeter.v1.Greeter/SayHello"
	streamGreetings = "switchboard.greeter.v1.Greeter/StreamGreetings"
	collectNames    = "switchboard.greeter.v1.Greeter/CollectNames"
	chat            = "switchboard.greeter.v1.Greeter/Chat"
)

func newTelemetry(t testing.TB, cfg Config) *Telemetry {
	t.Helper()
	tel, err := New(testContext(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// Registered first, so it runs after the gRPC server and client stop.
	t.Cleanup(func() {
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel
}

// TestMetricsEndToEnd checks the metrics of each way Telemetry records
// them: interceptors (the default without exported spans), stats handlers
// (ExactCallMetrics) and stats handlers beside otelgrpc's (spans exported).
func TestMetricsEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"interceptors", Config{}},
		{"exact", Config{ExactCallMetrics: true}},
		{"exporting", Config{SpanProcessors: []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(tracetest.NewInMemoryExporter())}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ServiceName, tc.cfg.ServiceVersion = "greeter-test", "1.2.3"
			checkMetricsEndToEnd(t, tc.cfg)
		})
	}
}

func checkMetricsEndToEnd(t *testing.T, cfg Config) {
	tel := newTelemetry(t, cfg)
	client := startGreeter(t, &greeter{}, tel.ServerOptions(), tel.DialOptions())
	ctx := testContext(t)

	if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"}); err != nil {
		t.Fatalf("SayHello: %v", err)
	}
	stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "bob", Count: 5})
	if err != nil {
		t.Fatalf("StreamGreetings: %v", err)
	}
	got := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		got++
	}
	if got != 5 {
		t.Fatalf("StreamGreetings sent %d messages, want 5", got)
	}

	collect, err := client.CollectNames(ctx)
	if err != nil {
		t.Fatalf("CollectNames: %v", err)
	}
	for _, n := range []string{"a", "b", "c"} {
		if err := collect.Send(&greeterv1.CollectNamesRequest{Name: n}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if resp, err := collect.CloseAndRecv(); err != nil || resp.GetCount() != 3 {
		t.Fatalf("CloseAndRecv = %v, %v, want count 3", resp, err)
	}

	type series struct {
		name   string
		labels map[string]string
		want   float64
	}
	want := []series{
		// gRFC A66 call metrics, after Prometheus translation.
		{"grpc_server_call_duration_seconds", map[string]string{"grpc_method": sayHello, "grpc_status": "OK"}, 1},
		{"grpc_server_call_duration_seconds", map[string]string{"grpc_method": streamGreetings, "grpc_status": "OK"}, 1},
		{"grpc_server_call_started_total", map[string]string{"grpc_method": sayHello}, 1},
		{"grpc_client_call_duration_seconds", map[string]string{"grpc_method": sayHello, "grpc_status": "OK"}, 1},
		{"grpc_client_attempt_duration_seconds", map[string]string{"grpc_method": streamGreetings, "grpc_status": "OK"}, 1},
		// Stream metrics.
		{"switchboard_rpc_stream_messages_sent_total", map[string]string{"grpc_method": streamGreetings, "side": "server"}, 5},
		{"switchboard_rpc_stream_messages_received_total", map[string]string{"grpc_method": streamGreetings, "side": "server"}, 1},
		{"switchboard_rpc_stream_messages_received_total", map[string]string{"grpc_method": streamGreetings, "side": "client"}, 5},
		{"switchboard_rpc_stream_messages_sent_total", map[string]string{"grpc_method": streamGreetings, "side": "client"}, 1},
		{"switchboard_rpc_stream_messages_received_total", map[string]string{"grpc_method": collectNames, "side": "server"}, 3},
		{"switchboard_rpc_stream_messages_sent_total", map[string]string{"grpc_method": collectNames, "side": "server"}, 1},
		{"switchboard_rpc_stream_active", map[string]string{"grpc_method": streamGreetings, "side": "server"}, 0},
		{"switchboard_rpc_stream_active", map[string]string{"grpc_method": streamGreetings, "side": "client"}, 0},
		{"switchboard_rpc_stream_active", map[string]string{"grpc_method": collectNames, "side": "server"}, 0},
		{"switchboard_rpc_stream_duration_seconds", map[string]string{"grpc_method": streamGreetings, "side": "server"}, 1},
		{"switchboard_rpc_stream_duration_seconds", map[string]string{"grpc_method": streamGreetings, "side": "client"}, 1},
	}
	eventually(t, func() string {
		families := scrape(t, tel.MetricsHandler())
		for _, s := range want {
			m := findMetric(families, s.name, s.labels)
			if m == nil {
				return "no series " + s.name + " " + mapString(s.labels) + " in:\n" + describe(families, "")
			}
			if got := metricValue(m); got != s.want {
				return s.name + " " + mapString(s.labels) + " = " + ftoa(got) + ", want " + ftoa(s.want)
			}
		}
		// Unary calls are not streams.
		if m := findMetric(families, "switchboard_rpc_stream_duration_seconds", map[string]string{"grpc_method": sayHello}); m != nil {
			return "unary SayHello recorded as a stream"
		}
		// Resource attributes go to target_info; the Go collector is there by default.
		if m := findMetric(families, "target_info", map[string]string{"service_name": "greeter-test", "service_version": "1.2.3"}); m == nil {
			return "no target_info with service_name and service_version:\n" + describe(families, "target_info")
		}
		if families["go_goroutines"] == nil {
			return "no go_goroutines from the default registry's Go collector"
		}
		// otelgrpc must not export metrics of its own.
		if families["rpc_server_call_duration_seconds"] != nil || families["rpc_server_duration_milliseconds"] != nil {
			return "otelgrpc metrics exported alongside A66"
		}
		return ""
	})
}

func mapString(m map[string]string) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func ftoa(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

func TestMetricsHandlerOpenMetrics(t *testing.T) {
	tel := newTelemetry(t, Config{})
	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("Content-Type = %q, want application/openmetrics-text", ct)
	}
	if !bytes.HasSuffix(body, []byte("# EOF\n")) {
		t.Errorf("OpenMetrics body does not end with # EOF")
	}
}

func TestTracePropagation(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel := newTelemetry(t, Config{
		ServiceName:    "greeter-test",
		SpanProcessors: []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(exp)},
	})

	var (
		mu        sync.Mutex
		serverCtx trace.SpanContext
		logs      bytes.Buffer
	)
	logger := slog.New(NewLogHandler(slog.NewJSONHandler(&logs, nil)))
	g := &greeter{onCall: func(ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		serverCtx = trace.SpanContextFromContext(ctx)
		logger.InfoContext(requestid.NewContext(ctx, requestid.FromIncoming(ctx)), "handling")
	}}
	client := startGreeter(t, g, tel.ServerOptions(), tel.DialOptions())

	ctx := metadata.AppendToOutgoingContext(testContext(t), requestid.Header, "req-42")
	if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"}); err != nil {
		t.Fatalf("SayHello: %v", err)
	}

	var clientSpan, serverSpan tracetest.SpanStub
	eventually(t, func() string {
		clientSpan, serverSpan = tracetest.SpanStub{}, tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			if s.Name != sayHello {
				continue
			}
			switch s.SpanKind {
			case trace.SpanKindClient:
				clientSpan = s
			case trace.SpanKindServer:
				serverSpan = s
			}
		}
		if !clientSpan.SpanContext.IsValid() || !serverSpan.SpanContext.IsValid() {
			return "want a client and a server span for " + sayHello
		}
		return ""
	})

	if got, want := serverSpan.SpanContext.TraceID(), clientSpan.SpanContext.TraceID(); got != want {
		t.Errorf("server span trace id = %s, want the client's %s", got, want)
	}
	if got, want := serverSpan.Parent.SpanID(), clientSpan.SpanContext.SpanID(); got != want {
		t.Errorf("server span parent = %s, want the client span %s", got, want)
	}
	if !serverSpan.Parent.IsRemote() {
		t.Error("server span parent is not remote")
	}
	if got := serverSpan.Resource.String(); !strings.Contains(got, "service.name=greeter-test") {
		t.Errorf("resource = %s, want service.name=greeter-test", got)
	}

	mu.Lock()
	defer mu.Unlock()
	if serverCtx.SpanID() != serverSpan.SpanContext.SpanID() {
		t.Errorf("handler context span = %s, want the server span %s", serverCtx.SpanID(), serverSpan.SpanContext.SpanID())
	}
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", logs.String(), err)
	}
	for k, want := range map[string]string{
		LogKeyTraceID:   clientSpan.SpanContext.TraceID().String(),
		LogKeySpanID:    serverSpan.SpanContext.SpanID().String(),
		LogKeyRequestID: "req-42",
	} {
		if line[k] != want {
			t.Errorf("log %s = %v, want %s", k, line[k], want)
		}
	}
}

// TestNoExporterSpansNonRecording checks that without an exporter spans are
// non-recording (yet carry valid ids for logs and propagation), except under
// a caller's sampled span, whose decision is kept for services downstream.
func TestNoExporterSpansNonRecording(t *testing.T) {
	tel := newTelemetry(t, Config{SampleRatio: 0.5})
	tracer := tel.TracerProvider().Tracer("test")

	_, root := tracer.Start(t.Context(), "root")
	defer root.End()
	if root.IsRecording() {
		t.Error("root span is recording with no exporter")
	}
	if !root.SpanContext().IsValid() || root.SpanContext().IsSampled() {
		t.Errorf("root span context = %v, want valid and not sampled", root.SpanContext())
	}

	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1},
		SpanID:     trace.SpanID{2},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	_, child := tracer.Start(trace.ContextWithRemoteSpanContext(t.Context(), remote), "child")
	defer child.End()
	if !child.SpanContext().IsSampled() || child.SpanContext().TraceID() != remote.TraceID() {
		t.Errorf("child of sampled remote = %v, want sampled in trace %s", child.SpanContext(), remote.TraceID())
	}
}

// collector is a minimal OTLP trace receiver for TestOTLPExport.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
	svc   []string
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				c.svc = append(c.svc, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.names = append(c.names, s.GetName())
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func TestOTLPExport(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	for _, endpoint := range []string{lis.Addr().String(), "http://" + lis.Addr().String()} {
		tel, err := New(testContext(t), Config{ServiceName: "exporter-test", OTLPEndpoint: endpoint, OTLPInsecure: true})
		if err != nil {
			t.Fatalf("New(%q): %v", endpoint, err)
		}
		_, span := tel.TracerProvider().Tracer("test").Start(t.Context(), "exported "+endpoint)
		if !span.IsRecording() {
			t.Errorf("span not recording with an OTLP endpoint %q", endpoint)
		}
		span.End()
		// Shutdown flushes the batch processor.
		if err := tel.Shutdown(testContext(t)); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if err := tel.Shutdown(testContext(t)); err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	want := []string{"exported " + lis.Addr().String(), "exported http://" + lis.Addr().String()}
	if strings.Join(col.names, "|") != strings.Join(want, "|") {
		t.Errorf("collector got spans %q, want %q", col.names, want)
	}
	for _, s := range col.svc {
		if s != "exporter-test" {
			t.Errorf("collector got service.name %q, want exporter-test", s)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative ratio", Config{SampleRatio: -0.1}},
		{"ratio above one", Config{SampleRatio: 1.5}},
		{"NaN ratio", Config{SampleRatio: math.NaN()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tel, err := New(t.Context(), tt.cfg); err == nil {
				_ = tel.Shutdown(t.Context())
				t.Errorf("New(%+v) = nil error, want an error", tt.cfg)
			}
		})
	}
}

func TestShutdownTwice(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel, err := New(t.Context(), Config{SpanProcessors: []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(exp)}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := tel.Shutdown(t.Context()); err != nil {
			t.Errorf("Shutdown #%d = %v, want nil", i+1, err)
		}
	}
	_, span := tel.TracerProvider().Tracer("test").Start(t.Context(), "after shutdown")
	span.End()
	if got := len(exp.GetSpans()); got != 0 {
		t.Errorf("%d spans exported after Shutdown, want 0", got)
	}
}

func TestNewDoesNotSetGlobals(t *testing.T) {
	// Propagators do not compare, so their fields are compared instead.
	fields := func() string {
		f := otel.GetTextMapPropagator().Fields()
		slices.Sort(f)
		return strings.Join(f, ",")
	}
	tp, mp, prop, propFields := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator(), fields()
	tel := newTelemetry(t, Config{})
	if otel.GetTracerProvider() != tp || otel.GetMeterProvider() != mp || fields() != propFields {
		t.Fatalf("New changed the OpenTelemetry globals: %T %T %v", otel.GetTracerProvider(), otel.GetMeterProvider(), fields())
	}

	tel.SetGlobal()
	t.Cleanup(func() {
		otel.SetTracerProvider(tp)
		otel.SetMeterProvider(mp)
		otel.SetTextMapPropagator(prop)
	})
	if otel.GetTracerProvider() != tel.TracerProvider() {
		t.Error("SetGlobal did not set the tracer provider")
	}
	if otel.GetMeterProvider() != tel.MeterProvider() {
		t.Error("SetGlobal did not set the meter provider")
	}
	if got := fields(); got != "baggage,traceparent,tracestate" {
		t.Errorf("global propagator fields after SetGlobal = %q, want baggage, traceparent, tracestate", got)
	}
}

func TestOptionsAreCopies(t *testing.T) {
	for _, tc := range []struct {
		name           string
		cfg            Config
		server, dialed int
	}{
		// A unary and a stream interceptor per side.
		{"interceptors", Config{}, 2, 2},
		// Two stats handlers per side, and the client's call duration
		// interceptors.
		{"exact", Config{ExactCallMetrics: true}, 2, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tel := newTelemetry(t, tc.cfg)
			a := tel.ServerOptions()
			a[0] = nil
			if tel.ServerOptions()[0] == nil {
				t.Error("ServerOptions returned its internal slice")
			}
			d := tel.DialOptions()
			d[0] = nil
			if tel.DialOptions()[0] == nil {
				t.Error("DialOptions returned its internal slice")
			}
			if got, want := len(tel.ServerOptions()), tc.server; got != want {
				t.Errorf("got %d server options, want %d", got, want)
			}
			if got, want := len(tel.DialOptions()), tc.dialed; got != want {
				t.Errorf("got %d dial options, want %d", got, want)
			}
		})
	}
}

// BenchmarkSpan compares a span with no exporter configured (non-recording)
// with a recording one.
func BenchmarkSpan(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"no exporter", Config{}},
		{"recording", Config{SpanProcessors: []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tel := newTelemetry(b, bc.cfg)
			tracer := tel.TracerProvider().Tracer("bench")
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				_, span := tracer.Start(ctx, "op")
				span.End()
			}
		})
	}
}
