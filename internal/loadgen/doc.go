// Package loadgen drives the shop with the flows its users make: signed-in
// users reading items and placing orders with unique idempotency keys, in
// a closed loop (N workers) or an open loop (a target rate, paced by
// vegeta's constant pacer, with latency measured from when each call was
// due), straight over gRPC or through the REST gateway. Latencies go into
// HDR histograms (github.com/HdrHistogram/hdrhistogram-go) per worker,
// merged at the end; the Report gives p50, p90, p99 and p99.9 per
// operation, as a table or as JSON.
package loadgen
