package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

const (
	// maxPollRecords bounds the records taken from the client at once.
	maxPollRecords = 500
	// rebalanceMargin is added to AckWait for the rebalance timeout.
	rebalanceMargin = 10 * time.Second
	// pollErrorBackoff is the pause after a poll that brought only errors.
	pollErrorBackoff = time.Second
	// commitRetry is the wait before a failed commit is tried again.
	commitRetry = time.Second
)

// A partition whose queue of records waiting for its handler reaches
// queueHigh stops being fetched until the queue is down to queueLow, so a
// slow or failing handler cannot fill memory. Variables only so that a
// test can make them small.
var (
	queueHigh = 1000
	queueLow  = 250
)

type topicPartition struct {
	topic     string
	partition int32
}

// Subscribe joins the Kafka consumer group sub.Group (or, with
// sub.DeadLetters, the group sub.Group+DeadLetterSuffix on the dead-letter
// topic, which sees only sub.Group's dead letters) and hands it the
// matching messages until ctx ends or the transport closes.
//
// Each partition the group assigns to this member has a goroutine that
// hands its records to h one at a time in offset order, so messages with
// one key, which share a partition, are handled in publish order; records
// of different partitions are handled concurrently. A failed delivery is
// retried after sub.BackoffFor(attempt), holding back the rest of its
// partition, until sub.MaxDeliver attempts have failed or the error wraps
// events.ErrPermanent; the message is then written to the dead-letter
// topic with the error, the attempt count and the group in its headers,
// and the partition moves on. Messages of types the subscription does not
// want are passed over. A handler's context ends after sub.AckWait, and
// when its partition is lost or the subscription ends.
//
// Offsets are committed only past records whose handling has finished,
// acknowledged or dead-lettered, so whatever this member has not finished
// is delivered again to the member that takes its partitions over.
// Attempts are counted by the member handling a record: a record handed
// over after failing here starts again at attempt 1. When partitions move
// to another member, this member finishes the delivery in progress on
// them (no new attempt starts), commits, and then lets them go.
//
// When ctx ends, polling stops, running handlers see their context end,
// finished records are committed, the member leaves the group and
// Subscribe returns nil. It returns an error only if the subscription
// cannot be set up.
func (t *Transport) Subscribe(ctx context.Context, sub events.Subscription, h events.Handler) error {
	if h == nil {
		return errors.New("kafkabus: subscribe: nil handler")
	}
	if sub.Group == "" {
		return errors.New("kafkabus: subscribe: subscription without a group")
	}
	sub = sub.Normalize()
	ctx, done, err := t.track(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := t.Setup(ctx, sub); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kafkabus: subscribe %s: %w", sub.Group, err)
	}

	c := &consumer{
		t:          t,
		sub:        sub,
		h:          h,
		log:        t.log.With(slog.String("group", sub.Group)),
		workers:    make(map[topicPartition]*worker),
		pending:    make(map[topicPartition]kgo.EpochOffset),
		commitWake: make(chan struct{}, 1),
	}
	if len(sub.Types) > 0 {
		c.types = make(map[string]struct{}, len(sub.Types))
		for _, typ := range sub.Types {
			c.types[typ] = struct{}{}
		}
	}
	topic, group := t.opts.Topic, sub.Group
	if sub.DeadLetters {
		topic, group = t.dlq, sub.Group+DeadLetterSuffix
		c.log = c.log.With(slog.Bool("dead_letters", true))
	}
	cl, err := kgo.NewClient(t.clientOpts(
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		// Callbacks never run between a poll and AllowRebalance, so
		// records handed to a partition's goroutine always belong to
		// the assignment that goroutine serves.
		kgo.BlockRebalanceOnPoll(),
		// Setup gives a group a position on every partition; a
		// partition without one was added since, so all of it is new
		// to the group. A position lost to offset expiry or to
		// retention also restarts from the oldest record: at least
		// once, never skipped.
		kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(t.opts.SessionTimeout),
		kgo.HeartbeatInterval(t.opts.HeartbeatInterval),
		kgo.RebalanceTimeout(max(t.opts.RebalanceTimeout, sub.AckWait+rebalanceMargin)),
		kgo.FetchMaxWait(t.opts.FetchMaxWait),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
			c.assigned(ctx, cl, assigned)
		}),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
	)...)
	if err != nil {
		return fmt.Errorf("kafkabus: subscribe %s: client: %w", sub.Group, err)
	}
	c.run(ctx, cl)
	return nil
}

// consumer is one subscription's member of its consumer group.
type consumer struct {
	t     *Transport
	sub   events.Subscription
	h     events.Handler
	log   *slog.Logger
	types map[string]struct{} // nil: every type

	mu      sync.Mutex
	workers map[topicPartition]*worker
	// pending holds, per partition, the offset after the last finished
	// record that is not yet committed.
	pending map[topicPartition]kgo.EpochOffset
	closing bool
	wg      sync.WaitGroup // worker goroutines

	// commitMu orders commits with taking partitions away, so that no
	// commit for a partition is sent once it has been given up.
	commitMu   sync.Mutex
	commitWake chan struct{}
}

// run polls until ctx ends, then shuts the member down.
func (c *consumer) run(ctx context.Context, cl *kgo.Client) {
	stopCommits, commitsDone := make(chan struct{}), make(chan struct{})
	go c.commitLoop(ctx, cl, stopCommits, commitsDone)

	c.poll(ctx, cl)

	c.mu.Lock()
	c.closing = true
	ws := slices.Collect(maps.Values(c.workers))
	clear(c.workers)
	c.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
	}
	close(stopCommits) // the commit loop commits what is left, then ends
	<-commitsDone
	cl.CloseAllowingRebalance()
	c.wg.Wait()
}

// poll hands polled records to their partitions' workers until ctx ends.
func (c *consumer) poll(ctx context.Context, cl *kgo.Client) {
	for {
		fs := cl.PollRecords(ctx, maxPollRecords)
		if ctx.Err() != nil || fs.IsClientClosed() {
			cl.AllowRebalance()
			return
		}
		failed := false
		fs.EachError(func(topic string, partition int32, err error) {
			failed = true
			c.log.LogAttrs(ctx, slog.LevelWarn, "kafkabus: fetch failed",
				slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("error", err))
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				c.dispatch(ctx, topicPartition{p.Topic, p.Partition}, p.Records)
			}
		})
		cl.AllowRebalance()
		if failed && fs.NumRecords() == 0 && !sleep(ctx, pollErrorBackoff) {
			return
		}
	}
}

func (c *consumer) dispatch(ctx context.Context, tp topicPartition, recs []*kgo.Record) {
	c.mu.Lock()
	w := c.workers[tp]
	c.mu.Unlock()
	if w == nil {
		// Cannot happen while rebalances wait for AllowRebalance; were
		// it to, dropping is safe: nothing past them is committed.
		c.log.LogAttrs(ctx, slog.LevelError, "kafkabus: records for a partition not assigned",
			slog.String("topic", tp.topic), slog.Int("partition", int(tp.partition)))
		return
	}
	w.push(recs)
}

// assigned starts a worker for every newly assigned partition.
func (c *consumer) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	for topic, ps := range assigned {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			if c.workers[tp] != nil {
				continue
			}
			wctx, cancel := context.WithCancel(ctx)
			w := &worker{
				tp:     tp,
				cl:     cl,
				cancel: cancel,
				stop:   make(chan struct{}),
				wake:   make(chan struct{}, 1),
				done:   make(chan struct{}),
			}
			c.workers[tp] = w
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.work(wctx, w)
			}()
		}
	}
	c.mu.Unlock()
	// A partition paused by an earlier worker stays paused in the client.
	cl.ResumeFetchPartitions(assigned)
	if len(assigned) > 0 {
		c.log.LogAttrs(ctx, slog.LevelDebug, "kafkabus: partitions assigned", slog.Any("partitions", assigned))
	}
}

// revoked lets the workers of revoked partitions finish their current
// delivery, then commits what they finished.
func (c *consumer) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ws := c.detach(revoked)
	for _, w := range ws {
		w.halt()
	}
	for _, w := range ws {
		<-w.done
	}
	ctx, cancel := context.WithTimeout(ctx, c.t.opts.CommitTimeout)
	defer cancel()
	if err := c.flush(ctx, cl, revoked); err != nil {
		c.log.LogAttrs(ctx, slog.LevelWarn, "kafkabus: commit on revoke failed; the next owner repeats what was finished",
			slog.Any("error", err))
	}
	if len(revoked) > 0 {
		c.log.LogAttrs(ctx, slog.LevelDebug, "kafkabus: partitions revoked", slog.Any("partitions", revoked))
	}
}

// lost stops the workers of partitions taken away without a revoke (the
// member was removed from the group); nothing of them can be committed.
func (c *consumer) lost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	ws := c.detach(lost)
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
	}
	c.commitMu.Lock()
	c.mu.Lock()
	for _, w := range ws {
		delete(c.pending, w.tp)
	}
	c.mu.Unlock()
	c.commitMu.Unlock()
	if len(ws) > 0 {
		c.log.LogAttrs(ctx, slog.LevelWarn, "kafkabus: partitions lost; their unfinished records go to the next owner",
			slog.Any("partitions", lost))
	}
}

// detach removes and returns the workers of parts.
func (c *consumer) detach(parts map[string][]int32) []*worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ws []*worker
	for topic, ps := range parts {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			if w := c.workers[tp]; w != nil {
				ws = append(ws, w)
				delete(c.workers, tp)
			}
		}
	}
	return ws
}

// finished records that rec's handling is over.
func (c *consumer) finished(tp topicPartition, rec *kgo.Record) {
	c.mu.Lock()
	c.pending[tp] = kgo.EpochOffset{Epoch: rec.LeaderEpoch, Offset: rec.Offset + 1}
	c.mu.Unlock()
	select {
	case c.commitWake <- struct{}{}:
	default:
	}
}

// commitLoop commits finished records soon after they finish, batching
// whatever finishes while a commit is in flight. Once stop closes it
// commits what is left and returns.
func (c *consumer) commitLoop(ctx context.Context, cl *kgo.Client, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	// The last commit runs after ctx has ended.
	base := context.WithoutCancel(ctx)
	again := time.NewTimer(commitRetry)
	again.Stop()
	defer again.Stop()
	for {
		last := false
		select {
		case <-c.commitWake:
		case <-again.C:
		case <-stop:
			last = true
		}
		cctx, cancel := context.WithTimeout(base, c.t.opts.CommitTimeout)
		err := c.flush(cctx, cl, nil)
		cancel()
		if err != nil {
			c.log.LogAttrs(ctx, slog.LevelWarn, "kafkabus: commit failed", slog.Any("error", err))
			if !last {
				again.Reset(commitRetry)
			}
		}
		if last {
			return
		}
	}
}

// flush commits every pending offset. On failure the offsets are kept for
// the next try, except those of partitions in gone, which this member is
// giving up.
func (c *consumer) flush(ctx context.Context, cl *kgo.Client, gone map[string][]int32) error {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	c.mu.Lock()
	offsets := c.pending
	c.pending = make(map[topicPartition]kgo.EpochOffset, len(offsets))
	c.mu.Unlock()
	if len(offsets) == 0 {
		return nil
	}
	req := make(map[string]map[int32]kgo.EpochOffset)
	for tp, o := range offsets {
		if req[tp.topic] == nil {
			req[tp.topic] = make(map[int32]kgo.EpochOffset)
		}
		req[tp.topic][tp.partition] = o
	}
	var cerr error
	cl.CommitOffsetsSync(ctx, req, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					cerr = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, err)
					return
				}
			}
		}
	})
	if cerr == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for tp, o := range offsets {
		if slices.Contains(gone[tp.topic], tp.partition) {
			continue
		}
		if _, newer := c.pending[tp]; !newer {
			c.pending[tp] = o
		}
	}
	return fmt.Errorf("commit: %w", cerr)
}

// work hands w's records to the handler in order until w stops.
func (c *consumer) work(ctx context.Context, w *worker) {
	defer close(w.done)
	defer w.cancel()
	for {
		rec, ok := w.next(ctx)
		if !ok {
			return
		}
		if !c.process(ctx, w, rec) {
			return
		}
		c.finished(w.tp, rec)
	}
}

// process delivers rec until it is acknowledged or dead-lettered, which
// finish it, or w stops first, which does not.
func (c *consumer) process(ctx context.Context, w *worker, rec *kgo.Record) bool {
	msg := message(rec)
	if !c.wants(msg) {
		return true
	}
	for attempt := 1; ; attempt++ {
		err := c.call(ctx, msg, attempt)
		if err == nil {
			return true
		}
		if ctx.Err() != nil || w.halted() {
			return false
		}
		if errors.Is(err, events.ErrPermanent) || attempt >= c.sub.MaxDeliver {
			return c.deadLetter(ctx, w, msg, attempt, err)
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "kafkabus: delivery failed; retrying",
			slog.String("id", msg.ID), slog.Int("attempt", attempt), slog.Any("error", err))
		if !w.sleep(ctx, c.sub.BackoffFor(attempt)) {
			return false
		}
	}
}

// wants reports whether the subscription takes msg.
func (c *consumer) wants(msg events.Message) bool {
	if c.sub.DeadLetters && msg.Header[events.HeaderGroup] != c.sub.Group {
		return false
	}
	if c.types == nil {
		return true
	}
	_, ok := c.types[msg.Type]
	return ok
}

// call runs the handler once, within AckWait; a panic is a failure.
func (c *consumer) call(ctx context.Context, msg events.Message, attempt int) (err error) {
	ctx, cancel := context.WithTimeout(ctx, c.sub.AckWait)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kafkabus: handler panicked: %v", r)
		}
	}()
	msg.Header = maps.Clone(msg.Header)
	return c.h(ctx, events.Delivery{Message: msg, Attempt: attempt})
}

// deadLetter writes msg to the dead-letter topic, trying until it is
// written or w stops. A dead letter that fails again in the dead-letter
// subscription goes back to the end of the dead-letter topic.
func (c *consumer) deadLetter(ctx context.Context, w *worker, msg events.Message, attempts int, cause error) bool {
	rec := deadLetter(c.t.dlq, msg, c.sub.Group, attempts, cause)
	for try := 1; ; try++ {
		err := c.t.produce(ctx, rec)
		if err == nil {
			c.log.LogAttrs(ctx, slog.LevelWarn, "kafkabus: dead-lettered",
				slog.String("id", msg.ID), slog.String("type", msg.Type), slog.String("key", msg.Key),
				slog.Int("attempts", attempts), slog.Any("error", cause))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.log.LogAttrs(ctx, slog.LevelError, "kafkabus: writing dead letter failed",
			slog.String("id", msg.ID), slog.Any("error", err))
		if !w.sleep(ctx, c.sub.BackoffFor(try)) {
			return false
		}
	}
}

// worker runs the records of one assigned partition in order.
type worker struct {
	tp     topicPartition
	cl     *kgo.Client
	cancel context.CancelFunc // ends the handler's context
	stop   chan struct{}      // closed to stop after the current delivery
	once   sync.Once
	wake   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	queue  []*kgo.Record
	paused bool
}

// push queues records, pausing the partition's fetches when the queue is
// long.
func (w *worker) push(recs []*kgo.Record) {
	w.mu.Lock()
	w.queue = append(w.queue, recs...)
	if !w.paused && len(w.queue) >= queueHigh {
		w.paused = true
		w.cl.PauseFetchPartitions(map[string][]int32{w.tp.topic: {w.tp.partition}})
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// next waits for the next record; false means the worker must stop.
func (w *worker) next(ctx context.Context) (*kgo.Record, bool) {
	for {
		if w.halted() || ctx.Err() != nil {
			return nil, false
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			rec := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			if len(w.queue) == 0 {
				w.queue = nil
			}
			if w.paused && len(w.queue) <= queueLow {
				w.paused = false
				w.cl.ResumeFetchPartitions(map[string][]int32{w.tp.topic: {w.tp.partition}})
			}
			w.mu.Unlock()
			return rec, true
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-w.stop:
		case <-ctx.Done():
		}
	}
}

// halt stops the worker once its current delivery ends.
func (w *worker) halt() { w.once.Do(func() { close(w.stop) }) }

func (w *worker) halted() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// sleep waits d; false means the worker stopped first.
func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// sleep waits d; false means ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
