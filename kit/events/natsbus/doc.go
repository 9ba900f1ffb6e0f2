// Package natsbus is the NATS JetStream implementation of events.Transport.
//
// Messages live in one file-backed stream (Options.Stream, "SWITCHBOARD" by
// default) under the subjects "<prefix>.<type>", where the prefix is
// Options.Subject ("switchboard.events" by default) and the type is the
// message type used as is: the dots of a protobuf full name become subject
// tokens, and a type with a wildcard, a space or an empty token is rejected
// with ErrInvalid. The message id is sent as Nats-Msg-Id, so a message that
// an outbox relay publishes again within the stream's duplicates window is
// stored once. The key and the message headers travel as NATS headers.
//
// Each consumer group is a durable pull consumer named after the group
// (characters outside [A-Za-z0-9_-] replaced, with a hash of the original
// name appended so that different groups never share a consumer). A
// subscriber fetches at most Options.MaxInFlight unfinished messages at a
// time and hands them to Options.Lanes goroutines by a hash of the key, so
// messages with the same key are handled one after another in stream order
// while different keys run concurrently. A failed delivery is retried in
// process after the subscription's backoff, ahead of later messages with its
// key; once MaxDeliver attempts have failed, or at once when the error wraps
// events.ErrPermanent, the message is published to the dead-letter stream
// ("<Stream>_DLQ", subjects "<prefix>-dlq.<group>.<type>") with the error,
// the attempt count and the group as headers, and acknowledged.
//
// Delivery.Attempt starts at the broker's delivery count and grows with
// each retry in process, so it keeps growing across subscribers. A handler
// runs with the subscription's AckWait as its deadline; a message waiting
// its turn or backing off is kept alive with progress acknowledgements.
//
// When a subscriber stops, every message it fetched but did not finish is
// negatively acknowledged once its last pull request has ended, in stream
// order, so the next subscriber of the group receives it at once and each
// key's messages in order. A subscriber that dies without saying so leaves
// its messages to the broker, which redelivers them after the
// subscription's AckWait plus its backoff for that delivery. The broker
// counts returned messages as deliveries, so its own MaxDeliver is set well
// above the subscription's: a message delivered that many times without
// being finished (one that kills its subscriber, say) is dead-lettered
// without another attempt.
//
// A known limit: when the server restarts, messages it had sent to a
// subscriber that never arrived are redelivered only after AckWait, by
// which time the subscriber may have handled later messages with the same
// key. Every message is still delivered, and an idempotent consumer
// (events.Consumer) acts on each once, but per-key order is not kept
// across a server restart. The Kafka transport keeps it.
//
// Embedded runs a NATS server with JetStream inside the process, listening
// on loopback only; it is the broker "switchboard up" uses.
package natsbus
