package events

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
)

// Outbox writes a service's events into its database, in the transaction
// of the state change that caused them, for a Relay to publish. An Outbox
// is safe for concurrent use; one per service process is enough.
type Outbox struct {
	source  string
	dialect Dialect
	added   atomic.Uint64

	// relays are the wake channels of this process's relays, replaced
	// whole under mu so Wake reads them without a lock.
	mu     sync.Mutex
	relays atomic.Pointer[[]chan struct{}]
}

// NewOutbox returns an outbox for the service named source (the envelope
// source) whose database speaks d.
func NewOutbox(source string, d Dialect) *Outbox {
	o := &Outbox{source: source, dialect: d}
	o.relays.Store(&[]chan struct{}{})
	return o
}

// Source returns the service name the outbox stamps on its envelopes.
func (o *Outbox) Source() string { return o.source }

// Add wraps payload in a new envelope about subject (see NewEnvelope; the
// time is now and the trace context that of ctx) and inserts it in tx.
// The event is published once tx commits, and never if it rolls back.
// Call Wake after the commit so the relay need not wait for its next
// poll.
//
// Events with the same subject are published in the order their
// transactions committed, provided a transaction takes its lock on the
// subject (the UPDATE of its row) before it calls Add, so that two
// transactions about one subject cannot insert in one order and commit in
// the other.
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, subject string, payload proto.Message) (*eventsv1.Envelope, error) {
	env, err := NewEnvelope(ctx, o.source, subject, payload, time.Now())
	if err != nil {
		return nil, err
	}
	if err := o.AddEnvelope(ctx, tx, env); err != nil {
		return nil, err
	}
	return env, nil
}

// AddEnvelope inserts an envelope the caller built (with NewEnvelope, to
// choose its time) in tx, like Add.
func (o *Outbox) AddEnvelope(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error {
	m, err := Encode(env)
	if err != nil {
		return err
	}
	created := time.Now().UnixMicro()
	if env.GetTime() != nil {
		created = env.GetTime().AsTime().UnixMicro()
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO events_outbox (id, type, subject, data, created_at) VALUES ($1, $2, $3, $4, $5)`,
		m.ID, m.Type, m.Key, m.Data, created); err != nil {
		return fmt.Errorf("events: outbox add %s: %w", m.Type, err)
	}
	o.added.Add(1)
	return nil
}

// Added returns how many events this outbox has inserted, counting those
// whose transaction later rolled back.
func (o *Outbox) Added() uint64 { return o.added.Load() }

// Wake tells the relays of this process that events were committed. It
// never blocks: a relay already woken is not woken twice. On PostgreSQL,
// a relay so woken that does not hold the lease passes the wake on to the
// one that does, in another process, with a notification; without a
// relay in this process, the lease holder finds the events at its poll.
func (o *Outbox) Wake() {
	for _, ch := range *o.relays.Load() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// register adds a relay's wake channel; the returned func removes it.
func (o *Outbox) register(ch chan struct{}) (unregister func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.relays.Load()
	next := make([]chan struct{}, 0, len(old)+1)
	next = append(append(next, old...), ch)
	o.relays.Store(&next)
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		cur := *o.relays.Load()
		next := make([]chan struct{}, 0, len(cur))
		for _, c := range cur {
			if c != ch {
				next = append(next, c)
			}
		}
		o.relays.Store(&next)
	}
}
