package rabbitbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Errors Publish returns besides context and connection errors.
var (
	// ErrClosed is returned once Close was called.
	ErrClosed = errors.New("rabbitbus: transport closed")
	// ErrNacked means the broker refused a message it could not store.
	ErrNacked = errors.New("rabbitbus: broker nacked the message")
	// ErrBlocked means the broker stopped accepting messages on the
	// publishing connection (a memory or disk alarm); retry later.
	ErrBlocked = errors.New("rabbitbus: broker is blocking publishers")
)

// Transport is the RabbitMQ events.Transport. It keeps two connections,
// one for publishing and one for consuming, so that broker flow control
// on publishers never holds up acknowledgements, and re-establishes
// either when it is lost. It is safe for concurrent use; Close releases
// it.
type Transport struct {
	opts Options
	log  *slog.Logger
	pub  *connector
	con  *connector

	// pubSem guards pubCh: a confirm-mode channel shared by all
	// publishes, each matched to its confirm by delivery tag.
	pubSem chan struct{}
	pubCh  *pubChannel

	mu     sync.Mutex
	closed bool
	subs   map[uint64]context.CancelFunc
	nextID uint64
	subWG  sync.WaitGroup // running Subscribe calls
	bg     sync.WaitGroup // Setup declarations still waiting on the broker
}

var _ events.Transport = (*Transport)(nil)

// New connects to the broker and declares the exchange and the
// dead-letter exchange. It fails if the broker cannot be reached within
// ctx and Options.DialTimeout; later losses are repaired in the
// background.
func New(ctx context.Context, opts Options) (*Transport, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		opts:   o,
		log:    o.Logger,
		pubSem: make(chan struct{}, 1),
		subs:   make(map[uint64]context.CancelFunc),
	}
	pubConn, err := dialContext(ctx, &t.opts, "publish")
	if err != nil {
		return nil, err
	}
	conConn, err := dialContext(ctx, &t.opts, "consume")
	if err != nil {
		_ = pubConn.Close()
		return nil, err
	}
	t.pub = newConnector(pubConn, "publish", &t.opts)
	t.con = newConnector(conConn, "consume", &t.opts)
	dctx, cancel := context.WithTimeout(ctx, t.opts.OpTimeout)
	defer cancel()
	if err := t.withChannel(dctx, t.declareExchanges); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("rabbitbus: declaring exchanges: %w", err)
	}
	return t, nil
}

// dialContext dials, giving up when ctx ends first; a connection that
// opens after that is closed.
func dialContext(ctx context.Context, opts *Options, role string) (*amqp.Connection, error) {
	type result struct {
		conn *amqp.Connection
		err  error
	}
	// Unbuffered: a result nobody takes any more is closed, not left behind.
	res := make(chan result)
	go func() {
		conn, err := dial(opts, role)
		select {
		case res <- result{conn, err}:
		case <-ctx.Done():
			if conn != nil {
				_ = conn.Close()
			}
		}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("rabbitbus: connecting (%s): %w", role, r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("rabbitbus: connecting (%s): %w", role, context.Cause(ctx))
	}
}

// Queues returns the names of group's queue and dead-letter queue.
func (t *Transport) Queues(group string) (live, dead string) {
	live = t.opts.Prefix + group
	return live, live + ".dlq"
}

// Exchanges returns the names of the events exchange and the dead-letter
// exchange.
func (t *Transport) Exchanges() (exchange, deadLetters string) {
	return t.opts.Exchange, t.opts.DeadLetterExchange
}

// Close ends the subscriptions, waits for their handlers, and closes the
// connections. It is idempotent; Publish, Setup and Subscribe return
// ErrClosed after it.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, cancel := range t.subs {
		cancel()
	}
	t.mu.Unlock()
	t.subWG.Wait()
	t.pub.close()
	t.con.close()
	t.bg.Wait()
	return nil
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Publish sends msg to the exchange with its type as the routing key and
// returns once the broker confirmed it stored the message in every queue
// it routes to (none, if no group set up for its type). A connection or
// channel lost before the confirm is retried on the next one, so the
// broker may hold the message twice; consumers deduplicate by ID. It is
// bounded by ctx and Options.PublishWait.
func (t *Transport) Publish(ctx context.Context, msg events.Message) error {
	if err := checkMessage(msg); err != nil {
		return fmt.Errorf("rabbitbus: publish %q: %w", msg.ID, err)
	}
	if err := t.publish(ctx, t.opts.Exchange, msg.Type, publishing(msg)); err != nil {
		return fmt.Errorf("rabbitbus: publish %q: %w", msg.ID, err)
	}
	return nil
}

// publish sends p and waits for its confirm, retrying on a new channel
// when the connection or channel is lost first.
func (t *Transport) publish(ctx context.Context, exchange, key string, p amqp.Publishing) error {
	ctx, cancel := context.WithTimeout(ctx, t.opts.PublishWait)
	defer cancel()
	for attempt := 1; ; attempt++ {
		retry, err := t.publishOnce(ctx, exchange, key, p)
		if err == nil {
			return nil
		}
		if t.isClosed() {
			return ErrClosed
		}
		// A channel error closes the channel for every publish on it, so
		// one caused by another message is worth one more try; a second
		// is this message's own.
		var ae *amqp.Error
		if !retry || (attempt > 1 && errors.As(err, &ae) && ae.Recover) {
			return err
		}
		if !sleep(ctx.Done(), backoff(t.opts.MinReconnect, t.opts.MaxReconnect, attempt)) {
			return errors.Join(err, context.Cause(ctx))
		}
	}
}

// publishOnce publishes p once; retry says whether a failure is worth
// another try on a new channel.
func (t *Transport) publishOnce(ctx context.Context, exchange, key string, p amqp.Publishing) (retry bool, err error) {
	if t.pub.blocked.Load() {
		return false, ErrBlocked
	}
	pc, err := t.pubChannel(ctx)
	if err != nil {
		return transient(err) && ctx.Err() == nil, err
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p)
	if err != nil {
		return transient(err) && ctx.Err() == nil, err
	}
	acked, err := dc.WaitContext(ctx)
	switch {
	case err != nil:
		return false, fmt.Errorf("waiting for the broker's confirm: %w", err)
	case acked:
		return false, nil
	case !pc.ch.IsClosed():
		return false, ErrNacked
	}
	// The channel closed before the confirm came: the connection was lost,
	// or the broker closed the channel over a publish (to an exchange that
	// does not exist, or over its size limit), perhaps this one.
	if reason := pc.closeReason(); reason != nil && reason.Recover {
		return true, fmt.Errorf("broker closed the publishing channel: %w", reason)
	}
	return true, errors.New("publishing channel closed before the broker's confirm")
}

// pubChannel is a confirm-mode channel with the reason it closed.
type pubChannel struct {
	ch     *amqp.Channel
	closes chan *amqp.Error

	mu     sync.Mutex
	reason *amqp.Error
}

func (p *pubChannel) closeReason() *amqp.Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case e, ok := <-p.closes:
		if ok && e != nil {
			p.reason = e
		}
	default:
	}
	return p.reason
}

// pubChannel returns the shared publishing channel, opening a new one in
// confirm mode when there is none or it closed.
func (t *Transport) pubChannel(ctx context.Context) (*pubChannel, error) {
	select {
	case t.pubSem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-t.pubSem }()
	if pc := t.pubCh; pc != nil && !pc.ch.IsClosed() {
		return pc, nil
	}
	conn, err := t.pub.get(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("opening the publishing channel: %w", err)
	}
	pc := &pubChannel{ch: ch, closes: ch.NotifyClose(make(chan *amqp.Error, 1))}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enabling publisher confirms: %w", err)
	}
	t.pubCh = pc
	return pc, nil
}

// transient reports whether err comes from a lost connection or channel,
// which another try on a new one may not meet.
func transient(err error) bool {
	if errors.Is(err, amqp.ErrClosed) || errors.Is(err, errConnecting) {
		return true
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		// Hard errors close the connection; soft ones (Recover) are
		// answers about this request: not found, access refused,
		// inequivalent arguments.
		return !ae.Recover
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// Setup declares the exchanges, group's quorum queue bound to the
// subscribed types and its dead-letter queue. It is idempotent, bounded
// by ctx and Options.OpTimeout, and retries a connection lost meanwhile.
func (t *Transport) Setup(ctx context.Context, sub events.Subscription) error {
	sub, err := t.checkSubscription(sub)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.opts.OpTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := t.withChannel(ctx, func(ch *amqp.Channel) error { return t.declare(ch, sub) })
		if err == nil {
			return nil
		}
		if !transient(err) || ctx.Err() != nil || t.isClosed() {
			return fmt.Errorf("rabbitbus: setup %q: %w", sub.Group, err)
		}
		if !sleep(ctx.Done(), backoff(t.opts.MinReconnect, t.opts.MaxReconnect, attempt)) {
			return fmt.Errorf("rabbitbus: setup %q: %w", sub.Group, errors.Join(err, context.Cause(ctx)))
		}
	}
}

// withChannel runs fn on a new channel of the consuming connection and
// closes the channel after. If ctx ends first it returns at once; fn's
// round trips then end when the broker answers or the connection is
// found dead by its heartbeat, and Close waits for them.
func (t *Transport) withChannel(ctx context.Context, fn func(*amqp.Channel) error) error {
	conn, err := t.con.get(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	t.bg.Add(1)
	t.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer t.bg.Done()
		ch, err := conn.Channel()
		if err == nil {
			err = fn(ch)
			_ = ch.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (t *Transport) declareExchanges(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(t.opts.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %q: %w", t.opts.Exchange, err)
	}
	if err := ch.ExchangeDeclare(t.opts.DeadLetterExchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %q: %w", t.opts.DeadLetterExchange, err)
	}
	return nil
}

// declare creates sub's topology. Both queues are durable, replicated
// quorum queues with a single active consumer, so that one instance of
// the group at a time receives them and per-key order holds. Messages
// the broker dead-letters itself (its delivery limit ran out) take the
// dead-letter exchange with the group's queue name as routing key, the
// same route the subscriber's own dead letters take.
func (t *Transport) declare(ch *amqp.Channel, sub events.Subscription) error {
	if err := t.declareExchanges(ch); err != nil {
		return err
	}
	live, dead := t.Queues(sub.Group)
	if _, err := ch.QueueDeclare(dead, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:            amqp.QueueTypeQuorum,
		amqp.SingleActiveConsumerArg: true,
	}); err != nil {
		return fmt.Errorf("queue %q: %w", dead, err)
	}
	if err := ch.QueueBind(dead, live, t.opts.DeadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("binding queue %q: %w", dead, err)
	}
	if _, err := ch.QueueDeclare(live, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:            amqp.QueueTypeQuorum,
		amqp.SingleActiveConsumerArg: true,
		"x-delivery-limit":           int64(t.opts.DeliveryLimit),
		"x-dead-letter-exchange":     t.opts.DeadLetterExchange,
		"x-dead-letter-routing-key":  live,
		// The broker's own dead-lettering keeps the message until the
		// dead-letter queue confirmed it, which needs reject-publish.
		"x-dead-letter-strategy": "at-least-once",
		amqp.QueueOverflowArg:    amqp.QueueOverflowRejectPublish,
	}); err != nil {
		return fmt.Errorf("queue %q: %w", live, err)
	}
	keys := sub.Types
	if len(keys) == 0 {
		keys = []string{"#"}
	}
	for _, k := range keys {
		if err := ch.QueueBind(live, k, t.opts.Exchange, false, nil); err != nil {
			return fmt.Errorf("binding queue %q to %q: %w", live, k, err)
		}
	}
	return nil
}

// checkSubscription validates sub and fills in its defaults.
func (t *Transport) checkSubscription(sub events.Subscription) (events.Subscription, error) {
	if err := checkName(sub.Group); err != nil {
		return sub, fmt.Errorf("rabbitbus: %w group: %w", ErrInvalid, err)
	}
	if _, dead := t.Queues(sub.Group); len(dead) > maxName {
		return sub, fmt.Errorf("rabbitbus: %w group %q: queue name %q is over %d bytes", ErrInvalid, sub.Group, dead, maxName)
	}
	for _, typ := range sub.Types {
		if err := checkType(typ); err != nil {
			return sub, fmt.Errorf("rabbitbus: group %q: %w", sub.Group, err)
		}
	}
	return sub.Normalize(), nil
}
