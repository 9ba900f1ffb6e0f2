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
// with one metrics handler per side that records both the gRFC A66 call
// metrics and the stream metrics (switchboard_rpc_stream_*, as
// [NewStreamMetrics] records them, for streaming calls).
//
// # gRFC A66 metrics
//
// The kit emits the gRFC A66 metrics itself rather than through grpc-go's
// OpenTelemetry plugin (google.golang.org/grpc/stats/opentelemetry), and
// exports exactly what that plugin (grpc-go v1.85, default metric set)
// does: the same names, units, descriptions, attributes, bucket boundaries
// and instrumentation scope ("grpc-go" and grpc-go's version), so that
// dashboards and alerts see the same series:
//
//   - server: grpc.server.call.started, grpc.server.call.duration,
//     grpc.server.call.sent_total_compressed_message_size and
//     grpc.server.call.rcvd_total_compressed_message_size, with
//     grpc.method (and grpc.status at the end of a call);
//   - client: grpc.client.attempt.started, grpc.client.attempt.duration,
//     grpc.client.attempt.sent_total_compressed_message_size and
//     grpc.client.attempt.rcvd_total_compressed_message_size per attempt,
//     and grpc.client.call.duration per call across its retries (for a
//     stream, until the stream ends), with grpc.method, grpc.target (the
//     ClientConn's canonical target) and grpc.status.
//
// In Prometheus they are grpc_server_call_duration_seconds,
// grpc_client_attempt_started_total and so on. As in grpc-go, grpc.method
// is "other" for a method the server does not serve and for a client call
// made without grpc.StaticMethod (generated clients pass it). The kit
// bounds the label values: at most [MaxStreamMethods] methods per server,
// or per client target, and [MaxTargets] targets per Telemetry; the rest
// are "other".
//
// Why: the plugin builds an attribute set (attribute.NewSet, which sorts
// and hashes) and an option slice for every measurement, and keeps its
// per-call state in several context values and interceptor wrappers. On a
// unary loopback call, server and client (BenchmarkCallMetrics), it costs
// 34 allocations beyond the 33 that grpc-go spends on calling any stats
// handler at all (its events and metadata copies), and its code took 12 to
// 15% of the call's CPU in profiles. The kit's handler costs 2 allocations
// beyond those 33 and about 5% of the CPU: it makes each method's
// attribute sets and option slices once, keeps one small struct per call
// (and per retry attempt) that is also the context node, adds message sizes
// with atomics and allocates nothing per message.
//
// What differs: a server with a grpc.UnknownServiceHandler hands every
// unregistered method to it, and the kit, which cannot ask the server which
// methods it registered, labels those calls with their method (bounded as
// above) where grpc-go says "other". A server call counts as started, and
// its duration runs, from the moment the server begins processing it, a
// few microseconds after its headers arrive, where the plugin starts on
// the headers. The metrics grpc-go's plugin records only when asked
// (grpc.subchannel.*, load balancer metrics, optional labels) are not
// available.
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
