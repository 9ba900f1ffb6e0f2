// Package events benchmarks the event pipeline of kit/events end to end,
// once per broker and once without one, on the same machine in the same
// run.
//
// Each event is written with Outbox.Add in a SQLite transaction of its
// own (the producing service's database), published by a Relay, delivered
// by the transport to a Consumer whose inbox lives in a second SQLite
// database (the consuming service's), and counted once the consumer's
// transaction has committed. At most 64 events are in flight (written
// and not yet committed by the consumer), so the pipeline runs at full
// speed while the latencies do not grow with the number of events.
//
// BenchmarkEndToEnd has one sub-benchmark per transport:
//
//   - bare: a transport that hands each message to the consumer's handler
//     synchronously, in the relay's goroutine: the cost of the outbox,
//     the relay and the inbox without any broker, the baseline;
//   - nats: natsbus on an embedded NATS server with JetStream, storing in
//     a temporary directory;
//   - kafka: kafkabus on kfake, an in-process Kafka cluster;
//   - rabbitmq: rabbitbus on the machine's RabbitMQ
//     (amqp://guest:guest@127.0.0.1:5672/, or SWITCHBOARD_TEST_RABBITMQ),
//     skipped when it cannot be reached.
//
// Each reports events/s (events over the wall time from the first Add to
// the last consumer commit) and the 50th and 99th percentile of the
// delivery latency in milliseconds (consumer commit time minus envelope
// time). bench/cmd/benchratio prints every broker next to bare as a
// ratio; see README.md in this directory.
package events
