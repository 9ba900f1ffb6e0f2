// Package client builds gRPC client connections with the kit's defaults:
// transport security, round-robin balancing with client-side health
// checking, retries of idempotent methods on UNAVAILABLE with backoff and
// retry throttling, deadline propagation, propagation of the request id,
// W3C trace context and the caller's credentials, a circuit breaker per
// target, and keepalive that matches kit/server's policy.
//
//	conn, err := client.Dial("dns:///inventory:7102",
//		client.WithCredentials(creds),
//		client.WithTelemetry(tel),
//		client.WithIdempotentMethods("/switchboard.inventory.v1.InventoryService/GetItem"),
//	)
//	defer conn.Close()
//	inv := inventoryv1.NewInventoryServiceClient(conn)
//
// # Deadlines
//
// A call made while serving another (its context comes from a handler)
// gets the incoming deadline minus the margin, so the answer can still make
// it back in time; a unary call also gets at most the per-call default from
// now. A call whose remaining time is already below the margin fails at once
// with DEADLINE_EXCEEDED instead of being sent. A program's own deadline is
// used as it is: it has no caller waiting on it. Streams get the margin but
// no default: they live as long as the caller's context.
//
// # Retries
//
// Methods named with WithIdempotentMethods (or found idempotent in their
// descriptors by IdempotentMethods) are retried by grpc on UNAVAILABLE,
// with exponential backoff and grpc's retry throttling so retries cannot
// multiply load on a struggling server. Other methods are never retried.
//
// # Circuit breaker
//
// Each connection has one breaker (github.com/sony/gobreaker/v2). Calls that
// fail with UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS or DEADLINE_EXCEEDED
// count as failures; when they pass the threshold the breaker opens and
// calls fail fast with UNAVAILABLE and ErrorInfo reason CIRCUIT_OPEN, with
// RetryInfo saying when it will let a probe through.
//
// A ClientConn is safe for concurrent use; the caller closes it.
package client
