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
// Deliveries a consumer handles at the same time share a transaction
// (WithGroupCommit), so its commits shrink as its load grows; a handler
// that fails there is rolled back and fails alone.
//
// Transports live in subpackages (natsbus, kafkabus, rabbitbus); each
// passes the contract suite in eventstest.
//
// # Tables
//
// Migrate creates three tables, on PostgreSQL or SQLite: events_outbox
// (unsent events, ordered by an auto-increment seq), events_inbox (the
// event ids each consumer group has handled, purged after a retention)
// and events_relay_lease (the one row saying which relay publishes).
//
// # Producing
//
//	o := events.NewOutbox("order", events.Dialect(db.Dialect))
//	err := db.Tx(ctx, func(tx *sql.Tx) error {
//		// ... UPDATE the order's row first, then:
//		_, err := o.Add(ctx, tx, orderID, &eventsv1.OrderPlaced{OrderId: orderID})
//		return err
//	})
//	if err == nil {
//		o.Wake()
//	}
//
// and, for the life of the service, one relay:
//
//	r := events.NewRelay(db.DB, events.Dialect(db.Dialect), o, transport, events.WithLogger(log))
//	go r.Run(ctx)
//	// on shutdown, after Run returned:
//	err := r.Drain(shutdownCtx)
//
// Wake reaches the relays of the same process. On PostgreSQL, a relay
// woken so that does not hold the lease passes the wake on with a
// notification (NOTIFY), which the relays of every process listen for; a
// poll (one second by default) catches anything else. Producing
// transactions never notify themselves: a NOTIFY in a transaction takes
// a lock, global to the PostgreSQL cluster, from its commit to its end,
// which would serialize every producer's commits.
//
// # Guarantees
//
// Delivery is at least once. The relay deletes an outbox row only after
// the broker acknowledged it, so a crash in between publishes the row
// again; a consumer group handles an event id once, because the inbox row
// and the handler's effects commit together.
//
// Order holds per subject: the relay publishes rows in seq order, stops
// at the first failure and retries it before anything later, and only
// the relay holding the lease publishes. Two transactions about one
// subject must take a lock on it (update its row) before they call Add,
// so their inserts happen in their commit order.
//
// # Tracing
//
// Envelopes carry the W3C trace context of the span that produced them.
// A Consumer starts a span of kind consumer per event, named
// "<group> process <type>", linked to (not a child of) the producer's
// span, with the handler's context inside it.
package events
