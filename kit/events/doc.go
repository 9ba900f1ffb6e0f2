// Package events carries the shop's events from the transaction that
// caused them to every consumer, at least once and in order per subject.
//
// A service writes an event to its outbox table in the same database
// transaction as the state change (Outbox.Add). A Relay publishes outbox
// rows through a Transport in commit order, marks a row sent only after
// the broker acknowledged it, and is safe with several instances running.
// A Consumer records each event id in an inbox table in the same
// transaction as the handler's effects, so a redelivered event is a
// no-op; failures are retried with backoff and then dead-lettered.
//
// Transports live in subpackages (natsbus, kafkabus, rabbitbus); each
// passes the contract suite in eventstest.
package events
