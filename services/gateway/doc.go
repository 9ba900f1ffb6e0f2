// Package gateway is the shop's REST/JSON front: a grpc-gateway ServeMux
// with every HTTP rule of proto/switchboard/http.yaml, forwarding each
// route to its service over the kit client (mTLS as the service
// "gateway", retries of idempotent methods, deadlines).
//
// # Requests
//
// Bodies and responses are JSON with the field names of the OpenAPI
// document (lowerCamel, gen/openapi/switchboard.swagger.json, served at
// GET /openapi.json); zero values are shown, unknown fields refused. A
// server stream (GET /v1/items, GET /v1/orders/{order_id}:watch, ...) is
// newline-delimited JSON (application/x-ndjson), one {"result": ...} per
// message, flushed as each arrives, and {"error": ...} when it fails.
//
// Every route needs an access token ("Authorization: Bearer <token>"),
// which the gateway verifies against identity's JWKS and forwards, except
// register, login, refresh, the items and the JWKS, which need none and
// never forward one. Only an allow-list of headers reaches the services:
// the token, the request id (X-Request-Id, made when missing or
// malformed, and echoed), the W3C trace context and X-Canary.
//
// # Limits
//
// A body is at most Config.MaxBodyBytes (1 MiB); a unary call has a
// deadline of Config.Timeout, a stream lives at most Config.StreamTimeout;
// Config.Limits rate-limits by method and per client (the token's user,
// else the client's IP address). Cross-origin requests are answered for
// Config.AllowedOrigins only, preflights included.
//
// # Errors
//
// An error is a google.rpc.Status in JSON, {"code", "message", "details"},
// with the HTTP status of its code (grpc-gateway's HTTPStatusFromCode: 400,
// 401, 403, 404, 409, 429, 499, 500, 503, 504...). Details pass as the
// services made them (ErrorInfo, BadRequest field violations,
// PreconditionFailure, ResourceInfo, RetryInfo); a RetryInfo also sets
// Retry-After, and a 401 carries a Bearer WWW-Authenticate challenge.
// INTERNAL, UNKNOWN and DATA_LOSS always reach clients as a bare
// "internal error", and errors of transport or parsing get a generic
// message and an ErrorInfo of domain [Domain]. Malformed JSON is 400
// (MALFORMED_REQUEST), an oversized body 413 (BODY_TOO_LARGE), an unknown
// path 404 and a wrong method 405 with Allow. A service not running in
// the deployment answers 503 (SERVICE_NOT_RUNNING).
//
// # Operations
//
// GET /healthz says the process is alive; GET /readyz is 200 when every
// service the gateway dials reports SERVING over grpc.health.v1, else 503
// with those that do not. Each request logs one access line (method,
// route, status, duration, bytes, peer, request id; never a body, query
// or token) and records http.server.request.duration by method, route and
// status on the telemetry's meter provider.
package gateway
