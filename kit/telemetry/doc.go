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
// with the gRFC A66 call metrics, the stream metrics (switchboard_rpc_stream_*,
// as [NewStreamMetrics] records them, for streaming calls) and tracing, in
// one of two ways:
//
//   - When spans are exported (Config.OTLPEndpoint or SpanProcessors), with
//     stats handlers: otelgrpc's (spans only) and, per side, one that records
//     the metrics. Once any stats handler is installed, grpc-go pays for its
//     per-call events, and the metrics handler costs little beside it.
//   - Otherwise, by default, with interceptors and stream wrappers alone: a
//     unary and a stream interceptor per side record the metrics and carry
//     W3C trace context and baggage from incoming to outgoing calls (no span
//     is made just to be dropped). No stats handler is installed, which saves
//     grpc-go's per-call stats events: about 33 allocations of a unary call
//     (server and client together) and several per streamed message.
//     Config.ExactCallMetrics chooses the stats handlers instead, for
//     metrics exact in the cases listed under "Interceptor mode" below.
//
// On a server the options should come before any interceptor of one's own
// (kit/server puts them first), so that the metrics count the calls those
// interceptors reject and logs see the trace context.
//
// # gRFC A66 metrics
//
// The kit emits the gRFC A66 metrics itself rather than through grpc-go's
// OpenTelemetry plugin (google.golang.org/grpc/stats/opentelemetry). With
// stats handlers it exports exactly what that plugin (grpc-go v1.85,
// default metric set) does, and with interceptors the same series but for
// the differences listed under "Interceptor mode": the same names, units,
// descriptions, attributes, bucket boundaries and instrumentation scope
// ("grpc-go" and grpc-go's version), so that dashboards and alerts see the
// same series:
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
// with atomics and allocates nothing per message. Its interceptor mode
// allocates nothing per unary call and saves grpc-go's 33 as well.
//
// What differs, in both modes: a server with a grpc.UnknownServiceHandler
// hands every unregistered method to it, and the kit, which cannot ask the
// server which methods it registered, labels those calls with their method
// (bounded as above) where grpc-go says "other". With stats handlers, a
// server call counts as started, and its duration runs, from the moment the
// server begins processing it, a few microseconds after its headers arrive,
// where the plugin starts on the headers. The metrics grpc-go's plugin
// records only when asked (grpc.subchannel.*, load balancer metrics,
// optional labels) are not available.
//
// # Interceptor mode
//
// Interceptors see calls, not grpc's transport events, so without stats
// handlers the metrics are exact in names, units, descriptions,
// attributes, bucket bounds, status codes and counts of the calls that reach
// the interceptors, and differ from the plugin's (and from
// Config.ExactCallMetrics) as follows; TestA66ConformanceInterceptors holds
// the interceptors to exactly this:
//
//   - Message sizes are the encoded protobuf sizes (proto.Size) of the
//     messages the interceptors see: equal to the plugin's
//     *_compressed_message_size for uncompressed messages, the default of
//     kit/client, and the size before compression for a compressed call.
//     Messages of another codec than protobuf count 0 bytes. A request
//     counts as sent even if the call failed before sending it.
//   - A client call is its own single attempt: grpc.client.attempt.* and
//     the client stream metrics count one attempt per call, with the call's
//     final status and duration, and a call grpc retried (a retry policy in
//     the service config, or a transparent retry) counts once. The server
//     still counts every attempt that reached it.
//   - A server sees only the calls that reach its interceptors: a call of a
//     method it does not serve (grpc-go's "other") and a unary request grpc
//     rejects before the interceptors (too large, undecodable, badly
//     compressed) are not counted by the server metrics; the client's
//     metrics still count them. grpc.status is the status the handler chain
//     returned, which differs from the one sent only when grpc cannot send
//     the response (a response above the send limit).
//   - Durations run from the interceptor's start to the handler's return on
//     the server (reading the request and writing the response are outside),
//     and from the interceptor's start until grpc finishes the call on the
//     client.
//
// Recording a unary call or a streamed message in interceptor mode
// allocates nothing once the method has been seen: attribute sets are made
// once per method (and target), and a stream costs one wrapper. In both
// modes a streamed message costs an atomic add: the stream message
// counters observe the totals when the metrics are collected.
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
