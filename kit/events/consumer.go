package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
)

// tracerName is the instrumentation scope of consumer spans.
const tracerName = "github.com/switchboard-rpc/switchboard/kit/events"

// TxHandler handles one event inside the transaction that records it as
// handled. Its effects and the record commit together: if it returns an
// error, both roll back and the event is delivered again. It must do its
// work through tx only, and may be called again for the same event after
// an error.
type TxHandler func(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) error

// Consumer is an idempotent event consumer: it runs a TxHandler for each
// event its subscription delivers, exactly once per event id and
// consumer group, by recording the id in the inbox table in the same
// transaction as the handler's effects. The inbox remembers ids for the
// inbox retention (WithInboxRetention) and is purged while Run runs.
// A Consumer is safe for concurrent use.
type Consumer struct {
	db        *sql.DB
	tr        Transport
	sub       Subscription
	h         TxHandler
	log       *slog.Logger
	tp        trace.TracerProvider
	tracer    trace.Tracer
	retention time.Duration
	// afterCommit, if set, runs after each committed handler.
	afterCommit func(ctx context.Context, env *eventsv1.Envelope)
	// group bounds the deliveries one transaction handles.
	group int

	// mu guards queue and leading: the group commit's waiting jobs and
	// whether a job is writing a transaction.
	mu      sync.Mutex
	queue   []*job
	leading bool

	handled    atomic.Uint64
	duplicates atomic.Uint64
	failures   atomic.Uint64
}

// NewConsumer returns a consumer of sub's events from tr that runs h in a
// transaction of db (PostgreSQL or SQLite, with the tables of Migrate).
// The caller keeps ownership of db and tr.
func NewConsumer(db *sql.DB, tr Transport, sub Subscription, h TxHandler, opts ...ConsumerOption) *Consumer {
	c := &Consumer{
		db:        db,
		tr:        tr,
		sub:       sub,
		h:         h,
		log:       discard,
		tp:        noop.NewTracerProvider(),
		retention: DefaultInboxRetention,
		group:     DefaultGroupCommit,
	}
	for _, opt := range opts {
		opt.applyConsumer(c)
	}
	c.tracer = c.tp.Tracer(tracerName)
	return c
}

// ConsumerStats are a consumer's counters since it was created.
type ConsumerStats struct {
	// Handled counts events whose handler committed.
	Handled uint64
	// Duplicates counts deliveries of events already handled.
	Duplicates uint64
	// Failures counts deliveries that returned an error.
	Failures uint64
}

// Stats returns the consumer's counters. It is cheap and safe to call at
// any time.
func (c *Consumer) Stats() ConsumerStats {
	return ConsumerStats{
		Handled:    c.handled.Load(),
		Duplicates: c.duplicates.Load(),
		Failures:   c.failures.Load(),
	}
}

// Setup creates the consumer group's durable state in the broker, so
// events published from then on are kept for it even before Run starts. A
// service calls it before it starts serving.
func (c *Consumer) Setup(ctx context.Context) error {
	if err := c.tr.Setup(ctx, c.sub); err != nil {
		return fmt.Errorf("events: consumer %s: setup: %w", c.sub.Group, err)
	}
	return nil
}

// Run subscribes and handles events until ctx ends, then returns nil once
// no handler is running. It returns an error only if the subscription
// cannot be set up. While it runs it purges inbox rows older than the
// retention, at start and then every half retention (at most hourly).
func (c *Consumer) Run(ctx context.Context) error {
	purgeCtx, stopPurge := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.purgeLoop(purgeCtx) })
	defer func() {
		stopPurge()
		wg.Wait()
	}()
	if err := c.tr.Subscribe(ctx, c.sub, c.Handle); err != nil {
		return fmt.Errorf("events: consumer %s: %w", c.sub.Group, err)
	}
	return nil
}

// Handle processes one delivery; it is the Handler Run subscribes with,
// exported for callers that drive their own subscription. It decodes the
// envelope (an undecodable one fails with an error wrapping
// ErrPermanent), starts a consumer span linked to the producer's span,
// and in one transaction records the event id in the inbox and runs the
// handler. An event already in the inbox is acknowledged without running
// the handler. A handler error rolls everything back and is returned, so
// the transport retries the delivery.
func (c *Consumer) Handle(ctx context.Context, d Delivery) error {
	env, err := Decode(d.Message)
	if err != nil {
		c.failures.Add(1)
		c.log.LogAttrs(ctx, slog.LevelError, "events: undecodable event",
			slog.String("group", c.sub.Group), slog.String("message_id", d.ID),
			slog.String("type", d.Type), slog.Any("error", err))
		return fmt.Errorf("events: consumer %s: %w", c.sub.Group, err)
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.consumer.group.name", c.sub.Group),
			attribute.String("messaging.message.id", env.GetId()),
			attribute.String("switchboard.event.type", env.GetType()),
			attribute.String("switchboard.event.source", env.GetSource()),
			attribute.Int("switchboard.event.attempt", d.Attempt),
		),
	}
	if link := producerLink(env); link.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: link}))
	}
	ctx, span := c.tracer.Start(ctx, c.sub.Group+" process "+env.GetType(), opts...)
	defer span.End()

	dup, err := c.handleTx(ctx, env)
	if err != nil {
		c.failures.Add(1)
		span.RecordError(err)
		span.SetStatus(codes.Error, "handler failed")
		c.log.LogAttrs(ctx, slog.LevelWarn, "events: handler failed",
			slog.String("group", c.sub.Group), slog.String("event_id", env.GetId()),
			slog.String("type", env.GetType()), slog.Int("attempt", d.Attempt), slog.Any("error", err))
		return fmt.Errorf("events: consumer %s: %s %s: %w", c.sub.Group, env.GetType(), env.GetId(), err)
	}
	if dup {
		c.duplicates.Add(1)
		span.SetAttributes(attribute.Bool("switchboard.event.duplicate", true))
		return nil
	}
	c.handled.Add(1)
	if c.afterCommit != nil {
		c.afterCommit(ctx, env)
	}
	return nil
}

// job is one delivery waiting for the group commit.
type job struct {
	ctx context.Context
	env *eventsv1.Envelope
	// wake says true when the job is to write the next transaction
	// itself, false when another job's transaction has handled it.
	wake chan bool
	dup  bool
	err  error
}

// handleTx records env in the inbox and runs the handler in a
// transaction, which it may share with deliveries handled at the same
// time (WithGroupCommit). It reports a duplicate if env was handled
// already.
//
// The group commit has one leader at a time: a delivery that finds no
// transaction being written writes one for itself and whatever queued
// meanwhile (up to the group size); deliveries that find one being
// written queue and wait. A leader that is done hands the lead to the
// first queued delivery, so no delivery waits for more than the
// transaction in progress and its own.
func (c *Consumer) handleTx(ctx context.Context, env *eventsv1.Envelope) (dup bool, err error) {
	if c.group <= 1 {
		return c.handleOne(ctx, env)
	}
	j := &job{ctx: ctx, env: env, wake: make(chan bool, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, j)
	if c.leading {
		c.mu.Unlock()
		if lead := <-j.wake; !lead {
			return j.dup, j.err
		}
		c.mu.Lock()
	}
	c.leading = true
	// j is first in the queue: it was alone in it, or was handed the lead
	// as its first.
	n := min(len(c.queue), c.group)
	batch := make([]*job, n)
	copy(batch, c.queue)
	c.queue = append(c.queue[:0], c.queue[n:]...)
	c.mu.Unlock()
	c.lead(batch)
	return j.dup, j.err
}

// errLeaderPanicked fails the deliveries of a group whose transaction
// ended in a panic (the transport redelivers them).
var errLeaderPanicked = errors.New("the group's transaction panicked")

// lead handles batch, then hands the lead to the first queued delivery
// and wakes the rest of batch, even if a handler panics.
func (c *Consumer) lead(batch []*job) {
	finished := false
	defer func() {
		if !finished {
			for _, o := range batch[1:] {
				o.err = errLeaderPanicked
			}
		}
		c.mu.Lock()
		if len(c.queue) > 0 {
			c.queue[0].wake <- true
		} else {
			c.leading = false
		}
		c.mu.Unlock()
		for _, o := range batch[1:] {
			o.wake <- false
		}
	}()
	c.handleGroup(batch)
	finished = true
}

// handleGroup handles batch, batch[0] the leader's own job, in one
// transaction. If a job fails there, everything rolls back: that job
// fails with its error, and each of the others is handled again in a
// transaction of its own. If the transaction itself fails (begin or
// commit), each job is handled again on its own.
func (c *Consumer) handleGroup(batch []*job) {
	if len(batch) == 1 {
		batch[0].dup, batch[0].err = c.handleOne(batch[0].ctx, batch[0].env)
		return
	}
	var failed *job
	err := c.inTx(batch[0].ctx, func(tx *sql.Tx) error {
		for _, j := range batch {
			dup, err := c.record(j.ctx, tx, j.env)
			if err != nil {
				failed, j.err = j, err
				return err
			}
			j.dup = dup
		}
		return nil
	})
	if err == nil {
		return
	}
	for _, j := range batch {
		if j != failed {
			j.dup, j.err = c.handleOne(j.ctx, j.env)
		}
	}
}

// handleOne records env in the inbox and runs the handler in a
// transaction of its own.
func (c *Consumer) handleOne(ctx context.Context, env *eventsv1.Envelope) (dup bool, err error) {
	err = c.inTx(ctx, func(tx *sql.Tx) error {
		dup, err = c.record(ctx, tx, env)
		return err
	})
	return dup, err
}

// inTx runs fn in a transaction and commits it if fn returns nil; it
// rolls back on an error or a panic.
func (c *Consumer) inTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	return nil
}

// record records env in the inbox and, unless it was there already (a
// duplicate), runs the handler, both in tx.
func (c *Consumer) record(ctx context.Context, tx *sql.Tx, env *eventsv1.Envelope) (dup bool, err error) {
	res, err := tx.ExecContext(ctx,
		`INSERT INTO events_inbox (group_name, event_id, handled_at) VALUES ($1, $2, $3)
		ON CONFLICT (group_name, event_id) DO NOTHING`,
		c.sub.Group, env.GetId(), time.Now().UnixMicro())
	if err != nil {
		return false, fmt.Errorf("inbox: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox: %w", err)
	}
	if n == 0 {
		// Handled before (or by a concurrent delivery that committed
		// first, or earlier in this group): nothing to do.
		return true, nil
	}
	return false, c.h(ctx, tx, env)
}

// PurgeInbox deletes the group's inbox rows older than the retention, in
// bounded batches, and returns how many it deleted. Run calls it
// periodically.
func (c *Consumer) PurgeInbox(ctx context.Context) (int64, error) {
	cutoff := time.Now().Add(-c.retention).UnixMicro()
	var total int64
	for {
		res, err := c.db.ExecContext(ctx,
			`DELETE FROM events_inbox WHERE group_name = $1 AND event_id IN (
				SELECT event_id FROM events_inbox WHERE group_name = $1 AND handled_at < $2 LIMIT $3)`,
			c.sub.Group, cutoff, purgeBatch)
		if err != nil {
			return total, fmt.Errorf("events: consumer %s: purge inbox: %w", c.sub.Group, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("events: consumer %s: purge inbox: %w", c.sub.Group, err)
		}
		total += n
		if n < purgeBatch {
			return total, nil
		}
	}
}

// purgeLoop purges the inbox until ctx ends.
func (c *Consumer) purgeLoop(ctx context.Context) {
	every := min(c.retention/2, maxPurgeInterval)
	for {
		if _, err := c.PurgeInbox(ctx); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			c.log.LogAttrs(ctx, slog.LevelWarn, "events: inbox purge failed", slog.Any("error", err))
		}
		if !sleep(ctx, every) {
			return
		}
	}
}
