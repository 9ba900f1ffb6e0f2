package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-rpc/switchboard/kit/requestid"
)

var (
	testTraceID = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	testSpanID  = trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
)

func spanContext(t testing.TB) context.Context {
	t.Helper()
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: testTraceID, SpanID: testSpanID, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

func TestLogHandler(t *testing.T) {
	const traceHex, spanHex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	withSpan := spanContext(t)
	tests := []struct {
		name string
		ctx  context.Context
		log  func(l *slog.Logger, ctx context.Context)
		want map[string]any // the line without time, level and msg
	}{
		{
			name: "no span, no request id",
			ctx:  context.Background(),
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m", "a", 1) },
			want: map[string]any{"a": 1.0},
		},
		{
			name: "span only",
			ctx:  withSpan,
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m", "a", 1) },
			want: map[string]any{"a": 1.0, "trace_id": traceHex, "span_id": spanHex},
		},
		{
			name: "request id only",
			ctx:  requestid.NewContext(context.Background(), "r-1"),
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			want: map[string]any{"request_id": "r-1"},
		},
		{
			name: "span and request id",
			ctx:  requestid.NewContext(withSpan, "r-2"),
			log:  func(l *slog.Logger, ctx context.Context) { l.WarnContext(ctx, "m", "a", "x") },
			want: map[string]any{"a": "x", "trace_id": traceHex, "span_id": spanHex, "request_id": "r-2"},
		},
		{
			name: "invalid span context is ignored",
			ctx:  trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}),
			log:  func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			want: map[string]any{},
		},
		{
			name: "no context, no ids",
			ctx:  withSpan,
			log:  func(l *slog.Logger, _ context.Context) { l.Info("m") },
			want: map[string]any{},
		},
		{
			name: "attrs before a group stay top level",
			ctx:  requestid.NewContext(withSpan, "r-3"),
			log:  func(l *slog.Logger, ctx context.Context) { l.With("svc", "orders").InfoContext(ctx, "m", "a", 1) },
			want: map[string]any{"svc": "orders", "a": 1.0, "trace_id": traceHex, "span_id": spanHex, "request_id": "r-3"},
		},
		{
			name: "ids stay top level inside a group",
			ctx:  requestid.NewContext(withSpan, "r-4"),
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("svc", "orders").WithGroup("db").With("table", "t").InfoContext(ctx, "m", "rows", 3)
			},
			want: map[string]any{
				"svc": "orders", "trace_id": traceHex, "span_id": spanHex, "request_id": "r-4",
				"db": map[string]any{"table": "t", "rows": 3.0},
			},
		},
		{
			name: "nested groups",
			ctx:  withSpan,
			log: func(l *slog.Logger, ctx context.Context) {
				l.WithGroup("a").With("x", 1).WithGroup("b").InfoContext(ctx, "m", "y", 2)
			},
			want: map[string]any{
				"trace_id": traceHex, "span_id": spanHex,
				"a": map[string]any{"x": 1.0, "b": map[string]any{"y": 2.0}},
			},
		},
		{
			name: "empty groups are dropped",
			ctx:  withSpan,
			log:  func(l *slog.Logger, ctx context.Context) { l.WithGroup("a").WithGroup("b").InfoContext(ctx, "m") },
			want: map[string]any{"trace_id": traceHex, "span_id": spanHex},
		},
		{
			name: "empty group name is ignored",
			ctx:  withSpan,
			log:  func(l *slog.Logger, ctx context.Context) { l.WithGroup("").InfoContext(ctx, "m", "a", 1) },
			want: map[string]any{"a": 1.0, "trace_id": traceHex, "span_id": spanHex},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := NewLogger(&buf, "json", slog.LevelDebug)
			tt.log(l, tt.ctx)
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("line %q: %v", buf.String(), err)
			}
			delete(got, slog.TimeKey)
			delete(got, slog.LevelKey)
			delete(got, slog.MessageKey)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("line mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewLoggerFormats(t *testing.T) {
	ctx := requestid.NewContext(spanContext(t), "r-9")
	tests := []struct {
		format string
		level  slog.Leveler
		want   string // substring of the line; "" means no line
	}{
		{"text", nil, "level=INFO msg=m trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7 request_id=r-9"},
		{"json", nil, `"msg":"m","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","request_id":"r-9"`},
		{"", nil, `"msg":"m"`}, // anything but "text" is JSON
		{"json", slog.LevelWarn, ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		NewLogger(&buf, tt.format, tt.level).InfoContext(ctx, "m")
		if got := buf.String(); tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("NewLogger(%q, %v) logged %q, want it to contain %q", tt.format, tt.level, got, tt.want)
		}
	}
}

// TestLogHandlerSlogtest runs the standard library's handler conformance
// tests, which exercise WithAttrs and WithGroup.
func TestLogHandlerSlogtest(t *testing.T) {
	var buf bytes.Buffer
	newHandler := func(*testing.T) slog.Handler {
		buf.Reset()
		return NewLogHandler(slog.NewJSONHandler(&buf, nil))
	}
	result := func(t *testing.T) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", buf.String(), err)
		}
		return m
	}
	slogtest.Run(t, newHandler, result)
}

func BenchmarkLogHandler(b *testing.B) {
	ctx := requestid.NewContext(spanContext(b), "req-123")
	b.Run("plain", func(b *testing.B) {
		l := slog.New(slog.NewJSONHandler(io.Discard, nil))
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(ctx, slog.LevelInfo, "m", slog.Int("n", 1))
		}
	})
	b.Run("with ids", func(b *testing.B) {
		l := slog.New(NewLogHandler(slog.NewJSONHandler(io.Discard, nil)))
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(ctx, slog.LevelInfo, "m", slog.Int("n", 1))
		}
	})
	b.Run("with ids in a group", func(b *testing.B) {
		l := slog.New(NewLogHandler(slog.NewJSONHandler(io.Discard, nil))).WithGroup("g")
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(ctx, slog.LevelInfo, "m", slog.Int("n", 1))
		}
	})
	b.Run("disabled", func(b *testing.B) {
		l := slog.New(NewLogHandler(slog.NewJSONHandler(io.Discard, nil)))
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(ctx, slog.LevelDebug, "m", slog.Int("n", 1))
		}
	})
}
