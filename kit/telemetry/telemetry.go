package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// maxConcurrentScrapes bounds how many /metrics requests are served at
// once; further requests get 503 until one finishes.
const maxConcurrentScrapes = 4

// Config configures [New]. The zero value is valid: no trace export, a fresh
// Prometheus registry, and no service name beyond the OpenTelemetry default
// ("unknown_service:<executable>").
//
// Standard OTEL_* environment variables (OTEL_RESOURCE_ATTRIBUTES,
// OTEL_EXPORTER_OTLP_*) are honoured by the OpenTelemetry SDK; fields set
// here take precedence over them.
type Config struct {
	// ServiceName and ServiceVersion become the service.name and
	// service.version resource attributes of every span and metric.
	ServiceName, ServiceVersion string

	// OTLPEndpoint is where spans are exported with OTLP over gRPC, as
	// "host:port" or a URL such as "https://collector:4317". Empty means
	// spans are not exported.
	OTLPEndpoint string

	// OTLPInsecure sends OTLP without TLS. Use only on loopback or in tests.
	OTLPInsecure bool

	// SampleRatio is the fraction of new traces sampled, in [0, 1], applied
	// through a parent-based sampler (a caller's sampling decision is kept).
	// 0 means 1.0 when spans are exported. When nothing is exported (no
	// OTLPEndpoint and no SpanProcessors) it is ignored: traces this process
	// starts are never sampled, so their spans are non-recording and cheap,
	// while spans under a caller's sampled span still record so that the
	// sampled flag reaches services further down the call.
	SampleRatio float64

	// Registry receives the metrics. Nil means a new registry with the Go
	// runtime and process collectors. A registry must be given to at most
	// one live Telemetry: two would export the same series twice.
	Registry *prometheus.Registry

	// ExactCallMetrics records the gRFC A66 call metrics and the stream
	// metrics with grpc stats handlers even when no spans are exported, as
	// grpc-go's OpenTelemetry plugin does: per attempt of a retried call,
	// with compressed message sizes, and for calls grpc rejects before any
	// interceptor runs. It costs grpc's per-call stats events, about 33
	// allocations per unary call (server and client together) and a few per
	// streamed message. When false (the default) and no spans are exported,
	// interceptors record them instead; the package documentation says what
	// differs. When spans are exported, stats handlers are installed for
	// the spans anyway and the metrics always use them.
	ExactCallMetrics bool

	// SpanProcessors are added to the TracerProvider, which owns them from
	// then on: Shutdown shuts them down. Mainly for tests, which pass a
	// SimpleSpanProcessor over a tracetest.InMemoryExporter. When non-empty,
	// spans count as exported for SampleRatio.
	SpanProcessors []sdktrace.SpanProcessor
}

// Telemetry holds the OpenTelemetry tracer and meter providers, the
// propagator and the Prometheus registry of one process, and the gRPC
// options that wire them into servers and clients. Its methods are safe for
// concurrent use. The caller of [New] owns it and must call Shutdown, after
// the servers and clients using it have stopped, to flush spans and stop the
// exporter.
type Telemetry struct {
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider
	prop    propagation.TextMapPropagator
	reg     *prometheus.Registry
	handler http.Handler
	srvOpts []grpc.ServerOption
	// exporting is true when spans go anywhere (an OTLP endpoint or span
	// processors); otherwise calls only propagate trace context.
	exporting bool
	dialOpts  []grpc.DialOption

	shutdownOnce sync.Once
	shutdownErr  error
}

// New builds a Telemetry from cfg. It installs nothing globally (see
// SetGlobal). ctx bounds only the construction (resource detection); it is
// not retained. New does not connect to the OTLP endpoint: the exporter
// connects lazily and drops spans it cannot deliver.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if math.IsNaN(cfg.SampleRatio) || cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
		return nil, fmt.Errorf("telemetry: sample ratio %v is outside [0, 1]", cfg.SampleRatio)
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}

	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		if err := reg.Register(collectors.NewGoCollector()); err != nil {
			return nil, fmt.Errorf("telemetry: register Go collector: %w", err)
		}
		if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return nil, fmt.Errorf("telemetry: register process collector: %w", err)
		}
	}

	tp, err := newTracerProvider(ctx, cfg, res)
	if err != nil {
		return nil, err
	}

	mp, err := newMeterProvider(reg, res)
	if err != nil {
		return nil, errors.Join(err, tp.Shutdown(ctx))
	}

	t := &Telemetry{
		tp:   tp,
		mp:   mp,
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		reg:  reg,

		exporting: cfg.OTLPEndpoint != "" || len(cfg.SpanProcessors) > 0,
	}
	t.handler = promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: maxConcurrentScrapes,
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
	}))
	if err := t.buildGRPCOptions(t.exporting || cfg.ExactCallMetrics); err != nil {
		return nil, errors.Join(err, t.Shutdown(ctx))
	}
	return t, nil
}

func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	var attrs []resource.Option
	if cfg.ServiceName != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)))
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(cfg.ServiceVersion)))
	}
	opts := append([]resource.Option{
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithService(),
		resource.WithFromEnv(),
	}, attrs...) // Later options win: Config beats the environment.
	res, err := resource.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// newMeterProvider returns an SDK meter provider exporting to reg.
func newMeterProvider(reg prometheus.Registerer, res *resource.Resource) (*sdkmetric.MeterProvider, error) {
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	return sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exporter)), nil
}

func newTracerProvider(ctx context.Context, cfg Config, res *resource.Resource) (*sdktrace.TracerProvider, error) {
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporting := cfg.OTLPEndpoint != "" || len(cfg.SpanProcessors) > 0
	if exporting {
		ratio := cfg.SampleRatio
		if ratio == 0 {
			ratio = 1
		}
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
	} else {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	if cfg.OTLPEndpoint != "" {
		exp, err := otlptracegrpc.New(ctx, otlpOptions(cfg)...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	for _, sp := range cfg.SpanProcessors {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func otlpOptions(cfg Config) []otlptracegrpc.Option {
	var opts []otlptracegrpc.Option
	if strings.Contains(cfg.OTLPEndpoint, "://") {
		opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint))
	} else {
		opts = append(opts, otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint))
	}
	if cfg.OTLPInsecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	return opts
}

// buildGRPCOptions makes the server and dial options: with stats handlers
// when statsHandlers is true, else with interceptors alone.
func (t *Telemetry) buildGRPCOptions(statsHandlers bool) error {
	// otelgrpc records traces only: its metrics would duplicate the gRFC A66
	// ones, so it gets a no-op MeterProvider.
	otelgrpcOpts := []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
	// The gRFC A66 metrics and the stream metrics, one recorder per side
	// (see the package documentation for why not grpc-go's plugin).
	serverCalls, err := newCallMetrics(t.mp, SideServer)
	if err != nil {
		return err
	}
	clientCalls, err := newCallMetrics(t.mp, SideClient)
	if err != nil {
		return err
	}
	trace := &tracePropagation{prop: t.prop}
	if !statsHandlers {
		// Nothing needs grpc's stats events: interceptors record the
		// metrics and carry the caller's trace context through (without
		// an exporter, spans would be made only to be dropped).
		serverCalls.trace, clientCalls.trace = trace, trace
		t.srvOpts = serverCalls.interceptorServerOptions()
		t.dialOpts = clientCalls.interceptorDialOptions()
		return nil
	}
	serverTrace := stats.Handler(&propagationHandler{trace: trace})
	clientTrace := stats.Handler(&propagationHandler{trace: trace, client: true})
	if t.exporting {
		serverTrace = otelgrpc.NewServerHandler(otelgrpcOpts...)
		clientTrace = otelgrpc.NewClientHandler(otelgrpcOpts...)
	}
	t.srvOpts = []grpc.ServerOption{
		grpc.StatsHandler(serverTrace),
		grpc.StatsHandler(serverCalls),
	}
	t.dialOpts = append([]grpc.DialOption{grpc.WithStatsHandler(clientTrace)}, clientCalls.dialOptions()...)
	return nil
}

// TracerProvider returns the SDK tracer provider. It is shut down by
// Shutdown, not by its users.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the SDK meter provider, which exports through the
// Prometheus registry. It is shut down by Shutdown, not by its users.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// Propagator returns the W3C trace context and baggage propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.prop }

// Registry returns the Prometheus registry the metrics are exported to.
// Callers may register their own collectors in it.
func (t *Telemetry) Registry() *prometheus.Registry { return t.reg }

// MetricsHandler returns the /metrics handler for Registry: Prometheus text
// or OpenMetrics by content negotiation, at most 4 scrapes served at once
// (more get 503), partial results rather than errors when a collector fails
// (counted in promhttp_metric_handler_errors_total). The same handler is
// returned on every call and is safe for concurrent use.
func (t *Telemetry) MetricsHandler() http.Handler { return t.handler }

// ServerOptions returns the options that instrument a grpc.Server with the
// gRFC A66 server metrics (grpc.server.call.*), the stream metrics
// (side="server") and tracing. When spans are exported they are otelgrpc
// server spans (this TracerProvider and Propagator) and a stats handler
// recording the metrics; otherwise a unary and a stream interceptor that
// record the metrics and put the caller's trace context in the call's
// context (or, with Config.ExactCallMetrics, two stats handlers doing so).
// Give these options to grpc.NewServer before any interceptor of one's
// own, so that the metrics see the calls those interceptors reject and
// their logs see the trace context. It returns a new slice on each call;
// the options may be shared by several servers.
func (t *Telemetry) ServerOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption(nil), t.srvOpts...)
}

// DialOptions returns the client-side equivalents of ServerOptions: the
// gRFC A66 client metrics (grpc.client.attempt.* and
// grpc.client.call.duration, labelled with the ClientConn's canonical
// target), the stream metrics (side="client"), and otelgrpc client spans
// with trace context injected into outgoing metadata, or the trace context
// alone. Without exported spans (or Config.ExactCallMetrics) they are a
// unary and a stream interceptor; otherwise a stats handler per concern
// plus the interceptors that measure grpc.client.call.duration across a
// call's attempts. Placed after one's own interceptors, they measure what
// those send. It returns a new slice on each call; the options may be
// shared by several ClientConns.
func (t *Telemetry) DialOptions() []grpc.DialOption {
	return append([]grpc.DialOption(nil), t.dialOpts...)
}

// SetGlobal installs the tracer provider, meter provider and propagator as
// the OpenTelemetry globals, for main programs whose libraries use them. A
// library must never call it. Shutdown does not undo it.
func (t *Telemetry) SetGlobal() {
	otel.SetTracerProvider(t.tp)
	otel.SetMeterProvider(t.mp)
	otel.SetTextMapPropagator(t.prop)
}

// Shutdown flushes pending spans to the exporter and stops the tracer and
// meter providers, their span processors and exporters. Call it after the
// servers and clients using t have stopped; afterwards spans and
// measurements are dropped and /metrics serves only the Prometheus
// collectors. ctx bounds the flush. Calling it again returns the first
// call's result without doing anything.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errs []error
		if err := t.tp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: shut down tracer provider: %w", err))
		}
		if err := t.mp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: shut down meter provider: %w", err))
		}
		t.shutdownErr = errors.Join(errs...)
	})
	return t.shutdownErr
}
