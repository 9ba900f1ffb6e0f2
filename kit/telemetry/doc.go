// Package telemetry wires OpenTelemetry traces, gRFC A66 gRPC metrics,
// stream metrics, Prometheus export and structured logs into a process.
//
// [New] builds a [Telemetry] from a [Config]: an SDK TracerProvider (spans
// exported with OTLP over gRPC through a batch span processor when
// Config.OTLPEndpoint is set), the W3C trace context and baggage
// propagator, and an SDK MeterProvider exported to a Prometheus registry
// served by MetricsHandler. Nothing is installed globally unless the main
// program calls SetGlobal. The caller owns the Telemetry and calls Shutdown
// once its servers and clients have stopped.
//
// ServerOptions and DialOptions instrument grpc.Server and grpc.ClientConn
// with otelgrpc stats handlers (spans only) when spans are exported, or,
// when they are not, with a handler that only carries W3C trace context
// from incoming to outgoing calls (no span is made just to be dropped); and
// with the grpc-go OpenTelemetry
// plugin (gRFC A66 metrics such as grpc_server_call_duration_seconds) and
// [NewStreamMetrics] (switchboard_rpc_stream_* for streaming calls).
//
// [NewLogHandler] adds trace_id, span_id and request_id to slog records, and
// [AccessLog] returns server interceptors that log one line per call.
//
// A typical main program:
//
//	tel, err := telemetry.New(ctx, telemetry.Config{ServiceName: "orders", OTLPEndpoint: endpoint})
//	if err != nil { ... }
//	defer tel.Shutdown(context.WithoutCancel(ctx))
//	logger := telemetry.NewLogger(os.Stderr, "json", slog.LevelInfo)
//	unary, stream := telemetry.AccessLog(logger, telemetry.AccessLogOptions{SampleEvery: 100})
//	srv := grpc.NewServer(append(tel.ServerOptions(),
//		grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))...)
//	http.Handle("/metrics", tel.MetricsHandler())
package telemetry
