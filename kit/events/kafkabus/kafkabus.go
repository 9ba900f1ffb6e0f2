package kafkabus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// ErrClosed is returned by calls on a closed Transport.
var ErrClosed = errors.New("kafkabus: transport closed")

// Transport is the Kafka events.Transport. It is safe for concurrent use.
// Close ends its subscriptions and releases its connections.
type Transport struct {
	opts Options
	log  *slog.Logger
	dlq  string
	// cl produces, and runs administration; each subscription has a
	// client of its own for its consumer group.
	cl  *kgo.Client
	adm *kadm.Client

	mu     sync.Mutex
	closed bool
	subs   map[uint64]context.CancelFunc
	nextID uint64
	wg     sync.WaitGroup
}

var _ events.Transport = (*Transport)(nil)

// New connects to the brokers and creates the topic and its dead-letter
// topic if they are missing. ctx bounds only this setup.
func New(ctx context.Context, opts Options) (*Transport, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		opts: opts,
		log:  opts.Logger,
		dlq:  opts.Topic + DeadLetterSuffix,
		subs: make(map[uint64]context.CancelFunc),
	}
	t.cl, err = kgo.NewClient(t.clientOpts(
		// Idempotent writes (the default, kept) need acks from all in-sync
		// replicas; say so rather than rely on it.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(opts.Linger),
		kgo.RecordDeliveryTimeout(opts.ProduceTimeout),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafkabus: client: %w", err)
	}
	t.adm = kadm.NewClient(t.cl)
	t.adm.SetTimeoutMillis(millis(opts.AdminTimeout))
	if err := t.ensureTopics(ctx); err != nil {
		t.cl.Close()
		return nil, err
	}
	return t, nil
}

// clientOpts returns the options every client of t shares, then extra.
func (t *Transport) clientOpts(extra ...kgo.Opt) []kgo.Opt {
	o := []kgo.Opt{
		kgo.SeedBrokers(t.opts.Brokers...),
		kgo.ClientID(t.opts.ClientID),
		kgo.DialTimeout(t.opts.DialTimeout),
		kgo.WithLogger(newKgoLogger(t.log)),
	}
	if t.opts.TLS != nil {
		o = append(o, kgo.DialTLSConfig(t.opts.TLS.Clone()))
	}
	if t.opts.SASL != nil {
		o = append(o, kgo.SASL(t.opts.SASL))
	}
	return append(o, extra...)
}

// Publish writes msg to the topic and returns once every in-sync replica
// has it. The record's key is msg.Key, so messages with one key land on
// one partition, in order. It gives up when ctx ends or after
// Options.ProduceTimeout; the write may still land then, as it may for
// any failed publish, and a retry may deliver the message twice.
func (t *Transport) Publish(ctx context.Context, msg events.Message) error {
	if t.isClosed() {
		return ErrClosed
	}
	if err := t.produce(ctx, newRecord(t.opts.Topic, msg, nil)); err != nil {
		return fmt.Errorf("kafkabus: publish %s: %w", msg.ID, err)
	}
	return nil
}

// produce writes rec and waits for its acknowledgement, ctx or
// Options.ProduceTimeout, whichever comes first.
func (t *Transport) produce(ctx context.Context, rec *kgo.Record) error {
	ctx, cancel := context.WithTimeout(ctx, t.opts.ProduceTimeout)
	defer cancel()
	// The idempotent producer does not abandon a record already sent, so
	// that a retry cannot duplicate it; the wait is bounded here instead.
	done := make(chan error, 1)
	t.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Setup creates the topics if missing and, for a group that has never
// committed a position on the topic, commits the current end of every
// partition, so that the group receives every message published from
// now on and none from before. A group with positions keeps them. The
// dead-letter consumer group needs no position: it reads the dead-letter
// topic from its start.
//
// Setup takes no position while members of the group are consuming: the
// brokers refuse commits from outside an active group, and its members
// already have positions.
func (t *Transport) Setup(ctx context.Context, sub events.Subscription) error {
	if t.isClosed() {
		return ErrClosed
	}
	if sub.Group == "" {
		return errors.New("kafkabus: setup: subscription without a group")
	}
	if err := t.ensureTopics(ctx); err != nil {
		return err
	}
	if sub.DeadLetters {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.opts.AdminTimeout)
	defer cancel()
	if err := retry(ctx, func(ctx context.Context) error { return t.startGroup(ctx, sub.Group) }); err != nil {
		return fmt.Errorf("kafkabus: setup group %s: %w", sub.Group, err)
	}
	return nil
}

// startGroup commits the end offsets of the topic for group unless the
// group has a committed offset on it.
func (t *Transport) startGroup(ctx context.Context, group string) error {
	// The end offsets are read before the group's offsets: if another
	// Setup commits between the two reads, these ends are no later than
	// its, so committing them cannot skip a message published after the
	// other Setup returned. At worst a few are delivered twice.
	ends, err := t.adm.ListEndOffsets(ctx, t.opts.Topic)
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	committed, err := t.adm.FetchOffsets(ctx, group)
	switch {
	case errors.Is(err, kerr.GroupIDNotFound):
	case err != nil:
		return fmt.Errorf("fetch offsets: %w", err)
	default:
		has := false
		committed.Each(func(o kadm.OffsetResponse) {
			if o.Topic == t.opts.Topic && o.Err == nil && o.At >= 0 {
				has = true
			}
		})
		if has {
			return nil
		}
	}
	resp, err := t.adm.CommitOffsets(ctx, group, ends.Offsets())
	if err != nil {
		return fmt.Errorf("commit offsets: %w", err)
	}
	err = resp.Error()
	switch {
	case err == nil:
		t.log.LogAttrs(ctx, slog.LevelInfo, "kafkabus: group starts at the end of the topic",
			slog.String("group", group), slog.String("topic", t.opts.Topic))
		return nil
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration),
		errors.Is(err, kerr.RebalanceInProgress), errors.Is(err, kerr.StaleMemberEpoch):
		// The group has members, which consume from positions of their
		// own: from the start of any partition without a commit.
		return nil
	default:
		return fmt.Errorf("commit offsets: %w", err)
	}
}

// ensureTopics creates the topic and the dead-letter topic if missing.
func (t *Transport) ensureTopics(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.opts.AdminTimeout)
	defer cancel()
	err := retry(ctx, func(ctx context.Context) error {
		details, err := t.adm.ListTopics(ctx, t.opts.Topic, t.dlq)
		if err != nil {
			return fmt.Errorf("list topics: %w", err)
		}
		var missing []string
		for _, name := range []string{t.opts.Topic, t.dlq} {
			d, ok := details[name]
			switch {
			case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
				missing = append(missing, name)
			case d.Err != nil && !kerr.IsRetriable(d.Err):
				// A retriable error (no leader yet, say) still means the
				// topic exists.
				return fmt.Errorf("describe topic %s: %w", name, d.Err)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		created, err := t.adm.CreateTopics(ctx, t.opts.Partitions, t.opts.ReplicationFactor, nil, missing...)
		if err != nil {
			return fmt.Errorf("create topics: %w", err)
		}
		for _, c := range created {
			if c.Err != nil && !errors.Is(c.Err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("create topic %s: %w %s", c.Topic, c.Err, c.ErrMessage)
			}
			if c.Err == nil {
				t.log.LogAttrs(ctx, slog.LevelInfo, "kafkabus: created topic",
					slog.String("topic", c.Topic), slog.Int("partitions", int(c.NumPartitions)))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kafkabus: topics: %w", err)
	}
	return nil
}

// retry runs op until it succeeds, fails with an error Kafka does not call
// retriable, or ctx ends.
func retry(ctx context.Context, op func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	for {
		err := op(ctx)
		if err == nil || !kerr.IsRetriable(err) {
			return err
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// millis returns d in milliseconds, as Kafka's int32 fields take it.
func millis(d time.Duration) int32 {
	ms := d.Milliseconds()
	switch {
	case ms > math.MaxInt32:
		return math.MaxInt32
	case ms < 0:
		return 0
	}
	return int32(ms)
}

// track registers a subscription so that Close can end it. The returned
// context ends with ctx or at Close; done must be called when the
// subscription has ended.
func (t *Transport) track(ctx context.Context) (_ context.Context, done func(), _ error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	id := t.nextID
	t.nextID++
	t.subs[id] = cancel
	t.wg.Add(1)
	return ctx, func() {
		cancel()
		t.mu.Lock()
		delete(t.subs, id)
		t.mu.Unlock()
		t.wg.Done()
	}, nil
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Close ends every subscription, waits for them to return, and closes the
// connections. Records still being published fail. Close is idempotent.
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
	t.wg.Wait()
	t.cl.Close()
	return nil
}
