// Package server builds production gRPC servers: one interceptor chain for
// unary and streaming calls alike, health, reflection, keepalive, message
// size limits, compression and graceful shutdown, all with safe defaults.
//
//	srv, err := server.New(
//		server.WithCredentials(creds), // or server.WithInsecure() on purpose
//		server.WithLogger(logger),
//		server.WithTelemetry(tel),
//		server.WithValidator(rules),
//	)
//	greeterv1.RegisterGreeterServer(srv, &greeter{})
//	go srv.Serve(lis)
//	...
//	srv.Shutdown(ctx)
//
// # The chain
//
// Telemetry (WithTelemetry) runs first, so that its metrics count the calls
// the chain rejects and the chain's logs carry the caller's trace: as the
// first interceptors when it records with interceptors (its default when it
// exports no spans), as stats handlers, which see every call, when it
// exports spans. Then, for a unary call and for a stream when it opens:
//
//  1. request id: taken from x-request-id when well formed, else made, put
//     in the context, so everything after can log it, and echoed in the
//     trailer of a failed call for the caller to quote (a header would commit
//     the call and stop grpc's transparent retries);
//  2. access log: one line per call (kit/telemetry), outside recovery so a
//     panic shows up as the INTERNAL it became;
//  3. stream guard (streams only): the idle timeout and maximum lifetime
//     clocks, which run the rest of the chain in the handler goroutine they
//     watch and end the stream with a clear status when one runs out;
//  4. recovery: a panic becomes INTERNAL with a generic message, its stack
//     is logged with the request id, and the server keeps serving;
//  5. deadline policy (unary only): a call without a deadline gets the
//     method's default, one asking for more than the method's maximum is cut
//     to it. Streams are bounded by 3 instead;
//  6. authentication, then authorization: once per call or stream, before
//     any message is read, so an unauthorised caller costs no parsing.
//     grpc.health.v1 skips 6 and 7: probes and balancers carry no user
//     credentials;
//  7. rate limit: after identity is known, so limits can be per caller;
//  8. validation: the request of a unary call, and every message a stream
//     receives;
//  9. the handler.
//
// A Server is safe for concurrent use. Register services before Serve;
// Shutdown stops it, and Serve returns once it has.
package server
