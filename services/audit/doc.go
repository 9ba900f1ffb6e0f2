// Package audit is the audit service: it consumes every event into an
// append-only, hash-chained log, and serves switchboard.audit.v1.AuditService
// to read it (Query, Tail) and to prove that nobody changed it (Verify).
//
// # Consuming events
//
// The event consumer calls [Service.HandleEvent] inside its own database
// transaction, after recording the event id in its inbox in the same
// transaction; [Service.EventTypes] is nil: the log wants every type.
// HandleEvent appends one record per event and touches the database only
// through that transaction, so a rollback leaves no trace and the call may
// simply run again. An event id already in the log is a no-op. The
// consumer calls [Service.Wake] once the transaction has committed, so
// that Tail streams send the record at once. An envelope that cannot be
// recorded (no id or type, a field over MaxFieldLen bytes, more than
// MaxEnvelopeBytes marshalled) fails with an error wrapping
// events.ErrPermanent, so that it is dead-lettered instead of retried.
//
// # The chain, and how the database keeps it
//
// Each record has a sequence number 1, 2, 3... without gaps, the hash of
// the record before it (prev_hash; 32 zero bytes for the first) and its
// own hash:
//
//	hash = SHA-256(prev_hash || canonical record bytes)
//
// where the canonical bytes are those of [Canonical]: the tag
// "switchboard.audit.v1", then the sequence number (8 bytes), the event
// id, type, source and subject (each a 4-byte length and its UTF-8
// bytes), the event time and the record time (8 bytes each, Unix
// microseconds, 0 for an event without a time) and the marshalled
// switchboard.events.v1.Envelope (a 4-byte length and its bytes), with
// every integer in big-endian order. The length prefixes make the
// encoding unambiguous. The stored payload is the envelope exactly as it
// was marshalled when appended, so the hash never depends on how a later
// version of the code would marshal it.
//
// A one-row table, audit_head, holds the newest sequence number and hash.
// An append first runs UPDATE audit_head SET seq = seq + 1 ... RETURNING
// seq, hash, which on PostgreSQL holds the row's lock until the
// transaction ends (SQLite has a single writer), so concurrent appends
// serialize: each takes the next number and links to the record committed
// just before it. It then inserts the record and stores its hash in the
// head. Because the head only moves in the transaction that inserts the
// record, every record up to a committed head is committed, which Tail
// relies on.
//
// # Verify
//
// Verify reads the range VerifyBatch records at a time and recomputes
// every hash. It reports the first record that is missing (a deleted
// row: a gap in the numbers, or a head beyond the last record), does not
// link to the record before it, or does not match its own hash (its
// content or hash was changed), with ok false, its sequence number and
// the reason. Otherwise it returns ok, the number of records checked and
// the hash of the last one, which a client can keep and compare later:
// rewriting the whole chain from some record on changes every hash after
// it.
//
// # Tail
//
// A Tail stream never buffers records: it remembers the position it has
// examined and, whenever it wakes, reads the chain head and the records
// up to it from the database, TailBatch at a time. It wakes on
// [Service.Wake] (an in-process broadcaster that only closes a channel,
// so the consumer never waits on a reader) and at least every
// Config.TailResync, which picks up records that other replicas appended.
// Nothing is missed, nothing is repeated and no buffer can overflow. A
// stream that has caught up with the log and then falls more than
// Config.MaxTailLag records behind it again (its client reads too slowly)
// ends with RESOURCE_EXHAUSTED, reason TAIL_TOO_SLOW, whose ErrorInfo
// metadata resume_after_sequence says where to resume. A stream ends with
// UNAVAILABLE when the service is closed, with the stream's own status
// when its context ends, and at most Config.MaxTailStreams are open at
// once (RESOURCE_EXHAUSTED beyond). The server's stream limits apply as
// well (kit/server: a stream on which nothing was sent for its idle limit,
// or that reached its maximum lifetime, ends): a client that follows the
// log for long resumes with after_sequence set to the last record it
// received, and misses nothing.
//
// # Query
//
// Query filters by event type, subject and event time (start inclusive,
// end exclusive) and pages in sequence order; its page token holds the
// last sequence number returned and a digest of the filter, so a token is
// refused with another filter. A page holds at most page_size records
// (at most 1,000) and at most MaxPageBytes of payload JSON.
//
// # Who may call
//
// Only the operator certificate may call Query, Tail and Verify: the log
// holds every event of every user.
package audit
