// Package shipping is the shipping service: it owns shipments (one per
// order) and their tracking events, and runs a simulated carrier that moves
// each released shipment along
//
//	CREATED → PICKED_UP → IN_TRANSIT → OUT_FOR_DELIVERY → DELIVERED
//
// or, before pickup only, to CANCELLED. It serves
// switchboard.shipping.v1.ShippingService.
//
// # Invariants, and how the database keeps them
//
//   - One shipment per order: shipments.order_id is UNIQUE and
//     CreateShipment inserts with ON CONFLICT (order_id) DO NOTHING, so 20
//     concurrent identical calls make one shipment and all return it. A
//     repeat with another address or other items is refused with
//     ALREADY_EXISTS (reason SHIPMENT_ALREADY_EXISTS, ResourceInfo naming
//     the existing shipment): the request is valid in itself but conflicts
//     with the order's existing shipment, which is what ALREADY_EXISTS
//     means. Items are compared as a set: their order does not matter. A
//     repeat after cancellation returns the cancelled shipment.
//   - Status only moves forward, one step at a time: every change is an
//     UPDATE ... WHERE status = <the status it leaves>, and zero rows means
//     someone else (another carrier replica, a cancel) got there first.
//     Cancelling is the UPDATE ... WHERE status = 'CREATED', so a shipment
//     the carrier picked up can never be cancelled and a cancelled one is
//     never picked up.
//   - Tracking events are numbered 1..N without gaps or duplicates: the
//     UPDATE that changes the status also increments shipments.last_sequence
//     and returns it, the event is inserted with that number in the same
//     transaction, and (shipment_id, sequence) is the primary key.
//   - A shipment does not move before it is released: the carrier only
//     selects rows with a due time, and only [Service.Release] (which sets
//     ready and the due time of the pickup) gives a CREATED shipment one;
//     CHECK constraints tie due_us to ready and to a non-terminal status.
//
// # Release
//
// The order saga creates the shipment before it captures the payment and
// may cancel it as a compensation, so a new shipment waits, CREATED, until
// the order service calls [Service.Release] once the order is confirmed;
// the carrier picks it up Config.PickupDelay later.
//
// # The carrier
//
// The carrier works from the database: each shipment's next step has a due
// time (shipments.due_us), and every Config.PollInterval the loop takes at
// most Config.BatchSize due shipments and advances each with one conditional
// UPDATE. State lives only in the database, so a restart (Close, then Open
// on the same database) resumes where the shipments were, and two replicas
// running the loop on one database never advance a shipment twice: the
// second UPDATE finds the status changed and does nothing.
//
// # Track
//
// A Track stream never buffers events: it remembers the last sequence it
// sent and, whenever it wakes, reads the events after it from the database.
// It wakes when this process commits a change to its shipment (an in-process
// broadcaster that only closes a channel, so the carrier never waits on a
// reader), and at least every Config.TrackResync, which picks up changes
// committed by other replicas. Nothing is lost and no buffer can overflow; a
// slow reader only slows its own stream. A stream ends after the DELIVERED
// or CANCELLED event, with UNAVAILABLE when the service is closed, and at
// most Config.MaxTrackStreams are open at once (RESOURCE_EXHAUSTED beyond).
//
// # Status change hook
//
// Config.OnStatusChange is called after each committed status change,
// creation included (from SHIPMENT_STATUS_UNSPECIFIED). It is at most once:
// a crash between the commit and the call loses the call. A transactional
// outbox will replace it for events that must not be lost.
package shipping
