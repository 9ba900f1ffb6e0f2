package rabbitbus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// errConsumerEnded means the delivery stream stopped without the
// subscriber asking: the channel or connection closed, or the broker
// cancelled the consumer (its queue was deleted).
var errConsumerEnded = errors.New("rabbitbus: the broker ended the consumer")

// Subscribe consumes the group's queue (or, with sub.DeadLetters, its
// dead-letter queue) with manual acknowledgements and Options.Prefetch
// deliveries in flight. Deliveries are spread over Options.Lanes by a
// hash of their key: one key's messages are handled one at a time in
// queue order, different keys concurrently.
//
// Attempt is the queue's x-delivery-count plus one, plus the retries made
// in this process. A failed delivery is retried in the same lane after
// sub.BackoffFor(attempt), so no later message with its key overtakes
// it; handlers get a context that ends after sub.AckWait. Once MaxDeliver
// attempts have failed, or at once for an error wrapping
// events.ErrPermanent, the message is published, with a confirm, to the
// group's dead-letter queue carrying events.HeaderError, HeaderAttempts
// and HeaderGroup, and then acknowledged. On the dead-letter queue itself
// nothing is discarded: a failed dead letter is retried with the backoff
// until its handler succeeds.
//
// A lost connection or channel is re-established with backoff for as
// long as ctx lasts; unacknowledged messages go back to the queue and
// are delivered again. When ctx ends, the consumer is cancelled, running
// handlers see their context end, whatever did not finish is returned to
// the queue, and Subscribe returns nil once no handler is running. It
// returns an error only if the first setup fails for a reason a retry
// cannot fix (an invalid subscription, a queue declared with other
// arguments, refused permissions).
func (t *Transport) Subscribe(ctx context.Context, sub events.Subscription, h events.Handler) error {
	if h == nil {
		return fmt.Errorf("rabbitbus: subscribe: %w: nil handler", ErrInvalid)
	}
	sub, err := t.checkSubscription(sub)
	if err != nil {
		return err
	}
	ctx, done, err := t.register(ctx)
	if err != nil {
		return err
	}
	defer done()
	live, dead := t.Queues(sub.Group)
	s := &subscriber{
		t:     t,
		sub:   sub,
		h:     h,
		queue: live,
		dlKey: live,
		log:   t.log.With(slog.String("group", sub.Group), slog.Bool("dead_letters", sub.DeadLetters)),
	}
	if sub.DeadLetters {
		s.queue = dead
	}
	everStarted, failures := false, 0
	for {
		started, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !everStarted && !started && !transient(err) {
			return fmt.Errorf("rabbitbus: subscribe %q: %w", sub.Group, err)
		}
		if started {
			everStarted, failures = true, 0
		}
		failures++
		wait := backoff(t.opts.MinReconnect, t.opts.MaxReconnect, failures)
		s.log.LogAttrs(ctx, slog.LevelWarn, "rabbitbus: subscription interrupted; resuming",
			slog.String("error", err.Error()), slog.Duration("after", wait))
		if !sleep(ctx.Done(), wait) {
			return nil
		}
	}
}

// register records a subscription for Close to end; done unregisters it.
func (t *Transport) register(ctx context.Context) (context.Context, func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	id := t.nextID
	t.nextID++
	t.subs[id] = cancel
	t.subWG.Add(1)
	return ctx, func() {
		t.mu.Lock()
		delete(t.subs, id)
		t.mu.Unlock()
		cancel()
		t.subWG.Done()
	}, nil
}

// subscriber is one Subscribe call.
type subscriber struct {
	t     *Transport
	sub   events.Subscription
	h     events.Handler
	queue string // consumed
	dlKey string // routing key of the group's dead letters
	log   *slog.Logger
}

// session consumes on one channel until ctx ends or the channel is lost.
// started reports whether the consumer was registered.
func (s *subscriber) session(ctx context.Context) (started bool, err error) {
	conn, err := s.t.con.get(ctx)
	if err != nil {
		return false, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("opening a channel: %w", err)
	}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	defer func() { _ = ch.Close() }()
	if err := s.t.declare(ch, s.sub); err != nil {
		return false, err
	}
	if err := ch.Qos(s.t.opts.Prefetch, 0, false); err != nil {
		return false, fmt.Errorf("setting the prefetch: %w", err)
	}
	tag := s.t.opts.Name + "." + rand.Text()
	deliveries, err := ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("consuming %q: %w", s.queue, err)
	}

	// Handlers run under hctx, which also ends when the channel is lost:
	// their acknowledgements could no longer reach the broker, which is
	// delivering their messages again.
	hctx, stopHandlers := context.WithCancel(ctx)
	defer stopHandlers()
	ls := s.startLanes(hctx, ch)
	err = nil
consume:
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				err = errConsumerEnded
				// A lost channel has reported why before it ended the
				// deliveries; a consumer the broker cancelled has not.
				select {
				case e, ok := <-closes:
					if ok && e != nil {
						err = fmt.Errorf("%w: %w", errConsumerEnded, e)
					}
				default:
				}
				break consume
			}
			ls.dispatch(d)
		case <-ctx.Done():
			// Stop deliveries first; those already on their way are
			// handed to the lanes, which return them unhandled.
			if cerr := ch.Cancel(tag, false); cerr != nil {
				_ = ch.Close()
			}
			for d := range deliveries {
				ls.dispatch(d)
			}
			break consume
		}
	}
	stopHandlers()
	unfinished := ls.stop()
	// Returned in delivery order, so the queue keeps each key's order for
	// the next consumer. On a lost channel the broker has done this
	// already and the first failure ends the loop.
	for _, tag := range unfinished {
		if nerr := ch.Nack(tag, false, true); nerr != nil {
			break
		}
	}
	return true, err
}

// lanes run the handler: one goroutine per lane, each handling its
// deliveries one at a time.
type lanes struct {
	in []chan amqp.Delivery
	wg sync.WaitGroup

	mu         sync.Mutex
	unfinished []uint64 // delivery tags neither acknowledged nor dead-lettered
}

func (s *subscriber) startLanes(ctx context.Context, ch *amqp.Channel) *lanes {
	ls := &lanes{in: make([]chan amqp.Delivery, s.t.opts.Lanes)}
	for i := range ls.in {
		// A lane never holds more than the prefetch, so dispatch does not
		// wait unless the broker overshoots it.
		c := make(chan amqp.Delivery, s.t.opts.Prefetch)
		ls.in[i] = c
		ls.wg.Go(func() {
			for d := range c {
				if ctx.Err() != nil || !s.handle(ctx, ch, &d) {
					ls.mu.Lock()
					ls.unfinished = append(ls.unfinished, d.DeliveryTag)
					ls.mu.Unlock()
				}
			}
		})
	}
	return ls
}

// dispatch hands d to the lane of its key.
func (ls *lanes) dispatch(d amqp.Delivery) {
	key, _ := headerString(d.Headers[HeaderKey])
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	ls.in[h.Sum32()%uint32(len(ls.in))] <- d //nolint:gosec // len is at most MaxLanes
}

// stop closes the lanes, waits for their handlers and returns the
// unfinished delivery tags in ascending order.
func (ls *lanes) stop() []uint64 {
	for _, c := range ls.in {
		close(c)
	}
	ls.wg.Wait()
	slices.Sort(ls.unfinished)
	return ls.unfinished
}

// handle runs the handler on d until it succeeds, is dead-lettered, or
// ctx ends. It reports whether d was settled (acknowledged after success
// or dead-lettering); an unsettled delivery goes back to the queue.
func (s *subscriber) handle(ctx context.Context, ch *amqp.Channel, d *amqp.Delivery) bool {
	msg := message(d, s.sub.Group)
	for attempt := deliveryCount(d) + 1; ; attempt++ {
		err := s.call(ctx, events.Delivery{Message: msg, Attempt: attempt})
		if err == nil {
			s.ack(ctx, ch, d)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		attrs := []slog.Attr{
			slog.String("id", msg.ID), slog.String("type", msg.Type),
			slog.Int("attempt", attempt), slog.String("error", err.Error()),
		}
		if !s.sub.DeadLetters && (attempt >= s.sub.MaxDeliver || errors.Is(err, events.ErrPermanent)) {
			if !s.deadLetter(ctx, msg, attempt, err) {
				return false
			}
			s.log.LogAttrs(ctx, slog.LevelError, "rabbitbus: handler failed; message dead-lettered", attrs...)
			s.ack(ctx, ch, d)
			return true
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "rabbitbus: handler failed; retrying", attrs...)
		if !sleep(ctx.Done(), s.sub.BackoffFor(attempt)) {
			return false
		}
	}
}

// call runs the handler within AckWait, turning a panic into an error so
// that one bad message cannot take the process down.
func (s *subscriber) call(ctx context.Context, d events.Delivery) (err error) {
	ctx, cancel := context.WithTimeout(ctx, s.sub.AckWait)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rabbitbus: handler panicked: %v", r)
		}
	}()
	return s.h(ctx, d)
}

// deadLetter publishes msg to the group's dead-letter queue, retrying
// until the broker confirms or ctx ends; it reports whether it was
// confirmed.
func (s *subscriber) deadLetter(ctx context.Context, msg events.Message, attempts int, cause error) bool {
	p := deadLetter(msg, s.sub.Group, attempts, cause)
	for try := 1; ; try++ {
		err := s.t.publish(ctx, s.t.opts.DeadLetterExchange, s.dlKey, p)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "rabbitbus: dead-lettering failed; retrying",
			slog.String("id", msg.ID), slog.String("error", err.Error()))
		if !sleep(ctx.Done(), backoff(s.t.opts.MinReconnect, s.t.opts.MaxReconnect, try)) {
			return false
		}
	}
}

// ack acknowledges d alone; deliveries on other lanes are settled in
// their own time, which AMQP allows with multiple=false. If the channel
// is gone the broker delivers d again.
func (s *subscriber) ack(ctx context.Context, ch *amqp.Channel, d *amqp.Delivery) {
	if err := ch.Ack(d.DeliveryTag, false); err != nil {
		s.log.LogAttrs(ctx, slog.LevelDebug, "rabbitbus: acknowledgement lost; the message will be delivered again",
			slog.String("id", d.MessageId), slog.String("error", err.Error()))
	}
}
