package events

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
)

// RelayOption configures NewRelay.
type RelayOption interface{ applyRelay(*Relay) }

// ConsumerOption configures NewConsumer.
type ConsumerOption interface{ applyConsumer(*Consumer) }

// Option configures both a Relay and a Consumer.
type Option interface {
	RelayOption
	ConsumerOption
}

type relayOption func(*Relay)

func (f relayOption) applyRelay(r *Relay) { f(r) }

type consumerOption func(*Consumer)

func (f consumerOption) applyConsumer(c *Consumer) { f(c) }

type loggerOption struct{ log *slog.Logger }

func (o loggerOption) applyRelay(r *Relay)       { r.log = o.log }
func (o loggerOption) applyConsumer(c *Consumer) { c.log = o.log }

// WithLogger sets the logger failures are reported to. The default
// discards them.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		l = discard
	}
	return loggerOption{log: l}
}

// discard is the default logger.
var discard = slog.New(slog.DiscardHandler)

// Relay defaults.
const (
	DefaultPollInterval = time.Second
	DefaultBatchSize    = 100
	DefaultLeaseTTL     = 10 * time.Second
	// MaxBatchSize bounds the rows a relay reads at once (each up to
	// MaxEventSize).
	MaxBatchSize = 1000
	// minLeaseTTL keeps a lease long enough to publish one event.
	minLeaseTTL = time.Second
)

// WithPollInterval sets how often the relay looks for events when nothing
// wakes it (default DefaultPollInterval). Outbox.Wake and PostgreSQL
// notifications make it publish at once; the poll is the fallback for
// events written by other processes on SQLite or by processes running no
// relay, and for missed notifications.
func WithPollInterval(d time.Duration) RelayOption {
	return relayOption(func(r *Relay) {
		if d > 0 {
			r.poll = d
		}
	})
}

// WithBatchSize sets how many outbox rows the relay reads per query
// (default DefaultBatchSize, at most MaxBatchSize).
func WithBatchSize(n int) RelayOption {
	return relayOption(func(r *Relay) {
		if n > 0 {
			r.batch = min(n, MaxBatchSize)
		}
	})
}

// WithLeaseTTL sets how long a relay's lease lasts without renewal
// (default DefaultLeaseTTL, at least one second). A relay that dies holds
// up publishing for at most this long; a longer TTL means fewer lease
// writes. The instances' clocks must agree to well within it.
func WithLeaseTTL(d time.Duration) RelayOption {
	return relayOption(func(r *Relay) {
		if d > 0 {
			r.leaseTTL = max(d, minLeaseTTL)
		}
	})
}

// WithInstance names the relay in its lease (default the host name and a
// random suffix). Names must differ between the relays of one database.
func WithInstance(name string) RelayOption {
	return relayOption(func(r *Relay) {
		if name != "" {
			r.instance = name
		}
	})
}

// Consumer defaults.
const (
	// DefaultInboxRetention is how long a handled event id is remembered.
	DefaultInboxRetention = 7 * 24 * time.Hour
	// maxPurgeInterval bounds the time between two inbox purges.
	maxPurgeInterval = time.Hour
	// purgeBatch bounds the rows one purge statement deletes, so a purge
	// never holds a long write lock.
	purgeBatch = 1000
	// DefaultGroupCommit is how many concurrent deliveries one transaction
	// may handle.
	DefaultGroupCommit = 32
	// MaxGroupCommit bounds WithGroupCommit.
	MaxGroupCommit = 1024
)

// WithGroupCommit sets how many deliveries handled at the same time may
// share one transaction (default DefaultGroupCommit, at most
// MaxGroupCommit; 1 gives every event a transaction of its own). Events
// that arrive while a transaction is being written wait for it and then
// go together in the next one, each with its own inbox row, so the
// commits (and, on PostgreSQL, the WAL flushes) a consumer makes shrink
// as its load grows, with no wait added when it is idle. If one handler
// of a group fails, the group is rolled back and each of its events is
// handled again in a transaction of its own, so one failure never holds
// back or fails the others.
func WithGroupCommit(n int) ConsumerOption {
	return consumerOption(func(c *Consumer) {
		if n > 0 {
			c.group = min(n, MaxGroupCommit)
		}
	})
}

// WithTracerProvider sets where consumer spans go (default a no-op
// provider).
func WithTracerProvider(tp trace.TracerProvider) ConsumerOption {
	return consumerOption(func(c *Consumer) {
		if tp != nil {
			c.tp = tp
		}
	})
}

// WithInboxRetention sets how long the consumer remembers a handled event
// id (default DefaultInboxRetention). A redelivery later than that is
// handled again, so it must exceed the longest time a broker may hold and
// redeliver a message.
func WithInboxRetention(d time.Duration) ConsumerOption {
	return consumerOption(func(c *Consumer) {
		if d > 0 {
			c.retention = d
		}
	})
}

// WithAfterCommit sets a function the consumer calls after a handler's
// transaction committed (not for duplicates), for work that must follow
// the commit, such as waking a loop that reads what the handler wrote. It
// runs on the delivery's goroutine, so it must be quick.
func WithAfterCommit(fn func(ctx context.Context, env *eventsv1.Envelope)) ConsumerOption {
	return consumerOption(func(c *Consumer) { c.afterCommit = fn })
}
