package natsbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

const (
	// fetchWait bounds one pull request, and so how long a stopping
	// subscriber waits for messages already on their way to it.
	fetchWait = 500 * time.Millisecond
	// maxFetchRetryWait caps the wait between failed pull requests.
	maxFetchRetryWait = 5 * time.Second
	// unhandledGrace is how many deliveries beyond MaxDeliver a message may
	// go through without being finished (a stopping subscriber returns the
	// messages it holds) before it is dead-lettered without a further
	// attempt, so a message that kills its subscriber cannot loop for ever.
	unhandledGrace = 16
)

// subscriber runs one Subscribe call: a fetch loop, Lanes handler
// goroutines and a keep-alive loop for messages waiting their turn.
type subscriber struct {
	t    *Transport
	sub  events.Subscription
	spec consumerSpec
	cons jetstream.Consumer
	h    events.Handler
	log  *slog.Logger

	lanes      []chan *inflight
	nlanes     uint32        // len(lanes)
	slots      chan struct{} // one token per fetched, unfinished message
	minBackoff time.Duration
	keepEvery  time.Duration

	mu       sync.Mutex
	tracked  map[*inflight]struct{}
	returned []*inflight // unfinished when ctx ended, returned once fetching stops
}

// inflight is a fetched message until it is acknowledged, returned or
// terminated.
type inflight struct {
	msg       jetstream.Msg
	d         events.Delivery
	seq       uint64 // stream sequence
	delivered int    // the broker's delivery count

	// Guarded by subscriber.mu.
	held      bool      // waiting (queued or backing off): keep it alive
	refreshed time.Time // when the broker's ack timer last started
}

func newSubscriber(t *Transport, sub events.Subscription, spec consumerSpec, cons jetstream.Consumer, h events.Handler) *subscriber {
	s := &subscriber{
		t:          t,
		sub:        sub,
		spec:       spec,
		cons:       cons,
		h:          h,
		log:        t.log.With(slog.String("group", sub.Group), slog.Bool("dead_letters", sub.DeadLetters)),
		lanes:      make([]chan *inflight, t.lanes),
		slots:      make(chan struct{}, t.maxInFlight),
		minBackoff: sub.Backoff[0],
		keepEvery:  max(sub.AckWait/3, 10*time.Millisecond),
		tracked:    map[*inflight]struct{}{},
	}
	for _, b := range sub.Backoff {
		s.minBackoff = max(min(s.minBackoff, b), 0)
	}
	for i := range s.lanes {
		s.lanes[i] = make(chan *inflight, t.maxInFlight)
		s.nlanes++
	}
	return s
}

// run delivers until ctx ends, then waits for the lanes to finish or
// return their messages.
func (s *subscriber) run(ctx context.Context) {
	var lanes sync.WaitGroup
	for _, ch := range s.lanes {
		lanes.Go(func() {
			for f := range ch {
				s.process(ctx, f)
			}
		})
	}
	keepCtx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	var keep sync.WaitGroup
	keep.Go(func() { s.keepAlive(keepCtx) })

	s.fetch(ctx)

	for _, ch := range s.lanes {
		close(ch)
	}
	lanes.Wait()
	stopKeep()
	keep.Wait()
	s.returnUnfinished(ctx)
	// Put the returned messages on the wire before the caller moves on.
	if s.t.nc.IsConnected() {
		if err := s.t.nc.FlushTimeout(s.t.requestTimeout); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "flushing acknowledgements", slog.Any("error", err))
		}
	}
}

// fetch pulls batches of at most the free in-flight slots and hands each
// message to its lane, until ctx ends. A pull request is never abandoned:
// every message the broker sends for it is handed on (and returned if ctx
// has ended), so none waits out its ack timer.
func (s *subscriber) fetch(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		n, ok := s.acquire(ctx)
		if !ok {
			return
		}
		if ctx.Err() != nil {
			s.release(n)
			return
		}
		batch, err := s.cons.Fetch(n, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			s.release(n)
			failures++
			s.fetchFailed(ctx, err, failures)
			continue
		}
		got := 0
		for m := range batch.Messages() {
			got++
			s.dispatch(ctx, m)
		}
		s.release(n - got)
		if err := batch.Error(); err != nil {
			failures++
			s.fetchFailed(ctx, err, failures)
			continue
		}
		failures = 0
	}
}

// acquire takes at least one free slot, waiting for it, and then as many
// more as are free, up to maxBatch.
func (s *subscriber) acquire(ctx context.Context) (int, bool) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, false
	}
	n := 1
	for n < maxBatch {
		select {
		case s.slots <- struct{}{}:
			n++
		default:
			return n, true
		}
	}
	return n, true
}

func (s *subscriber) release(n int) {
	for range n {
		<-s.slots
	}
}

func (s *subscriber) fetchFailed(ctx context.Context, err error, failures int) {
	wait := 100 * time.Millisecond
	for i := 1; i < failures && wait < maxFetchRetryWait; i++ {
		wait *= 2
	}
	wait = min(wait, maxFetchRetryWait)
	level := slog.LevelWarn
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) {
		level = slog.LevelError
	}
	s.log.LogAttrs(ctx, level, "fetching events", slog.Any("error", err), slog.Duration("retry_in", wait))
	sleep(ctx, wait)
}

// dispatch queues m on the lane of its key.
func (s *subscriber) dispatch(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "event without JetStream metadata", slog.String("subject", m.Subject()), slog.Any("error", err))
		s.release(1)
		return
	}
	d := s.decode(m)
	if s.spec.types != nil && !s.spec.types[d.Type] {
		// Not for this group: the server could not filter it out.
		if err := m.Ack(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "acknowledging a filtered event", slog.String("id", d.ID), slog.Any("error", err))
		}
		s.release(1)
		return
	}
	f := &inflight{msg: m, d: d, seq: meta.Sequence.Stream, delivered: int(min(meta.NumDelivered, math.MaxInt32)), held: true, refreshed: time.Now()}
	s.mu.Lock()
	s.tracked[f] = struct{}{}
	s.mu.Unlock()
	// A lane holds up to MaxInFlight messages, so this never blocks.
	s.lanes[int(fnv32(d.Key)%s.nlanes)] <- f
}

func (s *subscriber) decode(m jetstream.Msg) events.Delivery {
	h := m.Headers()
	first := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	d := events.Delivery{Message: events.Message{
		ID:   first(headerID),
		Type: trimBase(m.Subject(), s.spec.base),
		Key:  first(headerKey),
		Data: m.Data(),
	}}
	if d.ID == "" {
		d.ID = first(jetstream.MsgIDHeader)
	}
	for k, v := range h {
		if len(v) == 0 || reservedHeader(k) {
			continue
		}
		if d.Header == nil {
			d.Header = make(map[string]string, len(h))
		}
		d.Header[k] = v[0]
	}
	return d
}

func trimBase(subject, base string) string {
	if len(subject) > len(base)+1 && subject[:len(base)] == base && subject[len(base)] == '.' {
		return subject[len(base)+1:]
	}
	return subject
}

// process handles one message: handler attempts with backoff until
// success, a permanent error or MaxDeliver, then ack or dead-letter. When
// ctx ends first the message is kept to be returned to the broker.
func (s *subscriber) process(ctx context.Context, f *inflight) {
	if ctx.Err() != nil {
		s.keepUnfinished(f)
		return
	}
	if s.handle(ctx, f) {
		s.finish(f)
	} else {
		s.keepUnfinished(f)
	}
}

// handle runs the attempts and reports whether f is finished (false when
// ctx ended first).
func (s *subscriber) handle(ctx context.Context, f *inflight) bool {
	attempt := max(f.delivered, 1)
	if f.delivered > s.sub.MaxDeliver+unhandledGrace {
		s.fail(ctx, f, fmt.Errorf("natsbus: delivered %d times without being acknowledged", f.delivered-1), f.delivered-1)
		return true
	}
	for {
		s.start(f)
		f.d.Attempt = attempt
		err := s.call(ctx, f.d)
		if err == nil {
			s.ack(ctx, f)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, events.ErrPermanent) || attempt >= s.sub.MaxDeliver {
			s.fail(ctx, f, err, attempt)
			return true
		}
		wait := s.sub.BackoffFor(attempt)
		s.log.LogAttrs(ctx, slog.LevelDebug, "event handler failed; retrying",
			slog.String("id", f.d.ID), slog.Int("attempt", attempt), slog.Duration("retry_in", wait), slog.Any("error", err))
		s.hold(f)
		if !sleep(ctx, wait) {
			return false
		}
		attempt++
	}
}

// call runs the handler with the subscription's AckWait as its deadline,
// turning a panic into an error.
func (s *subscriber) call(ctx context.Context, d events.Delivery) (err error) {
	hctx, cancel := context.WithTimeout(ctx, s.sub.AckWait)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("natsbus: handler panicked: %v", r)
			s.log.LogAttrs(ctx, slog.LevelError, "event handler panicked",
				slog.String("id", d.ID), slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
		}
	}()
	return s.h(hctx, d)
}

// start marks f as being handled. The broker's ack timer must not run out
// before the handler's deadline (AckWait from now): the broker allows
// AckWait plus at least minBackoff since the last refresh.
func (s *subscriber) start(f *inflight) {
	s.mu.Lock()
	f.held = false
	refresh := time.Since(f.refreshed) > s.minBackoff/2
	if refresh {
		f.refreshed = time.Now()
	}
	s.mu.Unlock()
	if refresh {
		if err := f.msg.InProgress(); err != nil {
			s.log.LogAttrs(context.Background(), slog.LevelDebug, "extending an event's ack timer", slog.String("id", f.d.ID), slog.Any("error", err))
		}
	}
}

// hold marks f as waiting, so keepAlive extends its ack timer.
func (s *subscriber) hold(f *inflight) {
	s.mu.Lock()
	f.held = true
	s.mu.Unlock()
}

// keepUnfinished sets f aside, still kept alive, to be returned once no
// pull request is open: returned now, the broker would hand it straight
// back to this subscriber's last pull request.
func (s *subscriber) keepUnfinished(f *inflight) {
	s.mu.Lock()
	f.held = true
	s.returned = append(s.returned, f)
	s.mu.Unlock()
}

// returnUnfinished returns the messages set aside in stream order, so the
// next subscriber receives each key's messages in order.
func (s *subscriber) returnUnfinished(ctx context.Context) {
	s.mu.Lock()
	returned := s.returned
	s.returned = nil
	s.mu.Unlock()
	slices.SortFunc(returned, func(a, b *inflight) int { return cmp.Compare(a.seq, b.seq) })
	for _, f := range returned {
		s.nak(ctx, f)
		s.finish(f)
	}
}

func (s *subscriber) finish(f *inflight) {
	s.mu.Lock()
	delete(s.tracked, f)
	s.mu.Unlock()
	s.release(1)
}

// keepAlive tells the broker that waiting messages are still held, so it
// does not redeliver a message merely queued behind others of its key or
// backing off between attempts.
func (s *subscriber) keepAlive(ctx context.Context) {
	tick := time.NewTicker(s.keepEvery)
	defer tick.Stop()
	var due []*inflight
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due = due[:0]
		now := time.Now()
		s.mu.Lock()
		for f := range s.tracked {
			if f.held && now.Sub(f.refreshed) >= s.keepEvery/2 {
				f.refreshed = now
				due = append(due, f)
			}
		}
		s.mu.Unlock()
		for _, f := range due {
			if err := f.msg.InProgress(); err != nil {
				s.log.LogAttrs(ctx, slog.LevelDebug, "extending an event's ack timer", slog.String("id", f.d.ID), slog.Any("error", err))
			}
		}
		clear(due)
	}
}

func (s *subscriber) ack(ctx context.Context, f *inflight) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.t.requestTimeout)
	defer cancel()
	if err := f.msg.DoubleAck(actx); err != nil {
		// The broker will deliver it again; handlers are idempotent.
		s.log.LogAttrs(ctx, slog.LevelWarn, "acknowledging an event", slog.String("id", f.d.ID), slog.Any("error", err))
	}
}

// nak returns f to the broker for prompt redelivery. A nak with a delay,
// unlike a plain one, is written to the server's store, so it holds even
// when the server restarts right after (as an embedded one does when its
// process stops); a plain nak would leave the message to its AckWait.
func (s *subscriber) nak(ctx context.Context, f *inflight) {
	if err := f.msg.NakWithDelay(time.Millisecond); err != nil {
		s.log.LogAttrs(ctx, slog.LevelDebug, "returning an event", slog.String("id", f.d.ID), slog.Any("error", err))
	}
}

// fail dead-letters f after its last failed attempt. A dead letter whose
// own handler fails is terminated: it stays in the dead-letter stream but
// is not delivered to the group again.
func (s *subscriber) fail(ctx context.Context, f *inflight, cause error, attempts int) {
	attrs := []slog.Attr{slog.String("id", f.d.ID), slog.String("type", f.d.Type), slog.Int("attempts", attempts), slog.Any("error", cause)}
	if s.sub.DeadLetters {
		s.log.LogAttrs(ctx, slog.LevelError, "dead-letter handler failed; not delivering it again", attrs...)
		if err := f.msg.Term(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "terminating a dead letter", slog.String("id", f.d.ID), slog.Any("error", err))
		}
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.t.requestTimeout)
	defer cancel()
	if err := s.t.publishDeadLetter(pctx, s.spec.name, s.sub.Group, f.d, cause, attempts); err != nil {
		wait := s.sub.BackoffFor(attempts)
		s.log.LogAttrs(ctx, slog.LevelError, "dead-lettering an event failed; returning it",
			slog.String("id", f.d.ID), slog.Duration("redeliver_in", wait), slog.Any("error", err))
		if err := f.msg.NakWithDelay(wait); err != nil {
			s.log.LogAttrs(ctx, slog.LevelDebug, "returning an event", slog.String("id", f.d.ID), slog.Any("error", err))
		}
		return
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "event dead-lettered", attrs...)
	s.ack(ctx, f)
}

// sleep waits d or until ctx ends, reporting whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
