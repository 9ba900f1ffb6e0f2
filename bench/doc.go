// Package bench holds the benchmarks that compare the kit against bare
// grpc-go on the same machine in the same run. `make bench` runs them
// through bench/cmd/benchratio, which prints each kit result next to its
// bare baseline as a ratio.
//
// BenchmarkUnary (SayHello) and BenchmarkServerStream (StreamGreetings,
// per message received, on streams opened before the clock starts) run
// one greeter server and client per mode, over the same mutual TLS, with
// 64 concurrent callers:
//
//   - bare: grpc-go alone, the baseline;
//   - kit: kit/server and kit/client with telemetry (no span exporter, so
//     the gRFC A66 and stream metrics are recorded by interceptors and
//     trace context is carried through), the access log (successes at
//     Debug, so not written), request ids, the deadline policy, validation,
//     retries of SayHello and the circuit breaker;
//   - kit-notelemetry: the same without telemetry, what the chain alone
//     costs;
//   - kit-security: kit plus a verified user token (cached after the first
//     call), authorization and per-caller rate limits.
//
// The targets (issue #3): unary at least 0.85x the bare calls/s with at
// most 30 more allocs/op, server stream at least 0.9x the bare msgs/s.
// benchratio runs go test once per round (-rounds, 3 by default) so that
// the modes interleave, and prints medians: allocs/op compare exactly,
// throughput only as ratios to the bare run of the same round, since the
// machines are shared and noisy. Each benchmark also reports cpu-ns/op,
// the CPU time of the process (server and client) per operation, which
// other work on the machine disturbs far less than throughput: its ratio
// to bare ("cpu vs bare") is the steadier figure. To profile one mode:
//
//	go test -run '^$' -bench 'Unary/kit$' -benchmem -memprofile mem.out ./bench/
//	go tool pprof -sample_index=alloc_objects -top bench.test mem.out
package bench
