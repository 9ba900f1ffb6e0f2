package events

import (
	"context"
	"errors"
	"time"
)

// Message is an event as a transport carries it: the marshalled Envelope
// and the attributes a broker routes, orders and deduplicates by.
type Message struct {
	// ID is the envelope id. Brokers that deduplicate (JetStream's
	// Nats-Msg-Id, Kafka's idempotent producer per session) use it.
	ID string
	// Type is the envelope type, for example
	// "switchboard.events.v1.OrderPlaced". Subscriptions filter on it.
	Type string
	// Key is the envelope subject (an order, item or user id). Messages
	// with the same key are delivered to a group in the order they were
	// published.
	Key string
	// Data is the marshalled Envelope.
	Data []byte
	// Header carries transport attributes; on a dead letter, HeaderError
	// and HeaderAttempts say why it was dead-lettered.
	Header map[string]string
}

// Header keys set on dead letters.
const (
	HeaderError    = "Switchboard-Error"
	HeaderAttempts = "Switchboard-Attempts"
	HeaderGroup    = "Switchboard-Group"
)

// Subscription says which messages a consumer group receives and how
// failures are retried. Every group receives every matching message at
// least once, whatever other groups do.
type Subscription struct {
	// Group is the durable consumer name. Instances with the same group
	// share its messages; state survives restarts.
	Group string
	// Types filters by Message.Type; empty means every type.
	Types []string
	// MaxDeliver is how many times a message is handed to the handler
	// before it is dead-lettered; 0 means DefaultMaxDeliver.
	MaxDeliver int
	// Backoff is the wait before each redelivery (the last entry repeats);
	// empty means DefaultBackoff.
	Backoff []time.Duration
	// AckWait bounds how long a handler may hold a message before the
	// broker redelivers it; 0 means DefaultAckWait.
	AckWait time.Duration
	// DeadLetters subscribes to the group's dead-letter destination
	// instead of its live messages.
	DeadLetters bool
}

// Defaults for Subscription fields left zero.
var (
	DefaultMaxDeliver = 5
	DefaultBackoff    = []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second}
	DefaultAckWait    = 30 * time.Second
)

// Normalize returns s with zero fields set to their defaults.
func (s Subscription) Normalize() Subscription {
	if s.MaxDeliver <= 0 {
		s.MaxDeliver = DefaultMaxDeliver
	}
	if len(s.Backoff) == 0 {
		s.Backoff = DefaultBackoff
	}
	if s.AckWait <= 0 {
		s.AckWait = DefaultAckWait
	}
	return s
}

// BackoffFor returns the wait before delivery attempt+1 after attempt
// failed (attempt counts from 1).
func (s Subscription) BackoffFor(attempt int) time.Duration {
	b := s.Normalize().Backoff
	if attempt < 1 {
		attempt = 1
	}
	if attempt > len(b) {
		return b[len(b)-1]
	}
	return b[attempt-1]
}

// Delivery is one delivery of a message to a handler.
type Delivery struct {
	Message
	// Attempt counts deliveries of this message to this group, from 1.
	Attempt int
}

// Handler processes one delivery. Returning nil acknowledges it. An error
// has it redelivered after the subscription's backoff; once MaxDeliver
// attempts have failed, the message goes to the group's dead-letter
// destination with the error recorded and is acknowledged. An error
// wrapping ErrPermanent is dead-lettered at once.
type Handler func(ctx context.Context, d Delivery) error

// ErrPermanent marks a handler error that no retry can fix (an event that
// cannot be decoded, say): the message is dead-lettered at once.
var ErrPermanent = errors.New("events: permanent failure")

// Transport publishes and delivers messages through a broker. Every
// implementation passes the suite in kit/events/eventstest.
// Implementations are safe for concurrent use.
type Transport interface {
	// Publish returns nil only once the broker has durably accepted msg.
	Publish(ctx context.Context, msg Message) error
	// Setup creates the group's durable state (consumer, queue,
	// dead-letter destination) if missing, so every message published
	// from then on is kept for the group even before it subscribes. It is
	// idempotent; Subscribe calls it too.
	Setup(ctx context.Context, sub Subscription) error
	// Subscribe delivers matching messages to h until ctx ends, then
	// returns nil once no handler is running; it returns an error only
	// if the subscription cannot be set up. Within one subscriber,
	// deliveries with the same Key are sequential and in publish order,
	// and a failed delivery is retried before any later message with its
	// Key is delivered. Handlers for different keys may run concurrently.
	Subscribe(ctx context.Context, sub Subscription, h Handler) error
	// Close releases the broker connection. Subscriptions end first.
	Close() error
}
