package kafkabus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/eventstest"
	"github.com/switchboard-rpc/switchboard/kit/events/kafkabus"
)

func TestContract(t *testing.T) {
	eventstest.Run(t, func(t *testing.T) eventstest.Factory {
		c := startCluster(t)
		return func(t *testing.T) events.Transport {
			return newTransport(t, options(t, c))
		}
	})
}

// TestRebalance has a member stall mid-stream, another join and take
// over partitions, and the first leave: every message is handled, and
// per key the first successful deliveries stay in publish order.
func TestRebalance(t *testing.T) {
	c := startCluster(t)
	opts := options(t, c)
	opts.Partitions = 6
	trA, trB := newTransport(t, opts), newTransport(t, opts)
	// A stalled delivery fails at AckWait; MaxDeliver is high so that
	// nothing is dead-lettered however long the handover takes.
	sub := events.Subscription{
		Group:      "rebalance",
		AckWait:    time.Second,
		MaxDeliver: 1000,
		Backoff:    []time.Duration{10 * time.Millisecond},
	}
	setup(t, trA, sub)
	keys := keyNames(12)
	const perKey = 30
	publishKeys(t, trA, keys, 0, perKey)

	rec := newRecorder()
	var handledA atomic.Int64
	const beforeStall = 60
	stopA := eventstest.Subscribe(t, trA, sub, func(ctx context.Context, d events.Delivery) error {
		for {
			n := handledA.Load()
			if n >= beforeStall {
				<-ctx.Done() // stalled until AckWait or until A stops
				return ctx.Err()
			}
			if handledA.CompareAndSwap(n, n+1) {
				break
			}
		}
		rec.add("a", d)
		return nil
	})
	rec.waitFor(t, "A to stall", func() bool { return handledA.Load() >= beforeStall })

	countB := func() int {
		_, by := rec.snapshot()
		n := 0
		for _, m := range by {
			if m == "b" {
				n++
			}
		}
		return n
	}
	eventstest.Subscribe(t, trB, sub, func(_ context.Context, d events.Delivery) error {
		rec.add("b", d)
		return nil
	})
	rec.waitFor(t, "B to take over partitions from stalled A", func() bool { return countB() > 0 })
	stopA()

	publishKeys(t, trB, keys, perKey, perKey)
	total := len(keys) * 2 * perKey
	rec.waitFor(t, "every message", func() bool { return rec.distinct() >= total })

	got, _ := rec.snapshot()
	if n := checkOrder(t, got); n != total {
		t.Errorf("distinct deliveries = %d, want %d", n, total)
	}
	if n := handledA.Load(); n != beforeStall {
		t.Errorf("A handled %d, want %d", n, beforeStall)
	}
	if n := countB(); n < total-beforeStall {
		t.Errorf("B handled %d, want at least %d", n, total-beforeStall)
	}
}

// TestOrderPerKeyAcrossPartitions sends 1,000 messages over ten keys and
// six partitions.
func TestOrderPerKeyAcrossPartitions(t *testing.T) {
	c := startCluster(t)
	opts := options(t, c)
	opts.Partitions = 6
	tr := newTransport(t, opts)
	sub := events.Subscription{Group: "order"}
	setup(t, tr, sub)
	keys := keyNames(10)
	const perKey = 100
	publishKeys(t, tr, keys, 0, perKey)

	rec := newRecorder()
	eventstest.Subscribe(t, tr, sub, func(_ context.Context, d events.Delivery) error {
		rec.add("", d)
		return nil
	})
	total := len(keys) * perKey
	rec.waitFor(t, "every message", func() bool { return rec.distinct() >= total })
	got, _ := rec.snapshot()
	if n := checkOrder(t, got); n != total {
		t.Errorf("distinct deliveries = %d, want %d", n, total)
	}
	for _, d := range got {
		if d.Attempt != 1 {
			t.Errorf("delivery %s: Attempt = %d, want 1", d.ID, d.Attempt)
		}
	}
	if n := usedPartitions(t, opts, opts.Topic); n < 2 {
		t.Errorf("messages on %d partitions, want them spread over several", n)
	}
}

// usedPartitions counts the partitions of topic that hold records.
func usedPartitions(t *testing.T, opts kafkabus.Options, topic string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(opts.Brokers...))
	if err != nil {
		t.Fatalf("kgo.NewClient() = %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("ListEndOffsets(%s) = %v", topic, err)
	}
	n := 0
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			n++
		}
	})
	return n
}

// TestPartitionsConcurrent holds one key's delivery until messages of
// other keys, on other partitions, have been handled.
func TestPartitionsConcurrent(t *testing.T) {
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	sub := events.Subscription{Group: "concurrent"}
	setup(t, tr, sub)
	publishKeys(t, tr, []string{"slow"}, 0, 1)
	others := keyNames(20)
	publishKeys(t, tr, others, 0, 1)

	rec := newRecorder()
	release := make(chan struct{})
	eventstest.Subscribe(t, tr, sub, func(ctx context.Context, d events.Delivery) error {
		if d.Key == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		rec.add("", d)
		return nil
	})
	// Keys on the slow key's partition wait behind it; the others do not.
	rec.waitFor(t, "another key while one is held", func() bool { return rec.distinct() > 0 })
	close(release)
	rec.waitFor(t, "every message", func() bool { return rec.distinct() >= 1+len(others) })
}

// TestPausedPartitionResumes holds a partition's handler while its queue
// overflows, so that fetching the partition pauses; records published
// meanwhile are fetched once the queue drains and fetching resumes.
func TestPausedPartitionResumes(t *testing.T) {
	restore := kafkabus.SetQueueLimits(20, 5)
	t.Cleanup(restore)
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	sub := events.Subscription{Group: "paused"}
	setup(t, tr, sub)
	const before, during = 100, 200
	publishKeys(t, tr, []string{"k"}, 0, before)

	rec := newRecorder()
	release := make(chan struct{})
	var once sync.Once
	entered := make(chan struct{})
	eventstest.Subscribe(t, tr, sub, func(ctx context.Context, d events.Delivery) error {
		once.Do(func() { close(entered) })
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		rec.add("", d)
		return nil
	})
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatal("no delivery")
	}
	publishKeys(t, tr, []string{"k"}, before, during)
	close(release)
	rec.waitFor(t, "every message", func() bool { return rec.distinct() >= before+during })
	got, _ := rec.snapshot()
	if n := checkOrder(t, got); n != before+during {
		t.Errorf("distinct deliveries = %d, want %d", n, before+during)
	}
}

// TestDeadLettersPerGroup checks that a dead-letter subscription sees its
// own group's dead letters only, with the failure recorded.
func TestDeadLettersPerGroup(t *testing.T) {
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	a := events.Subscription{Group: "a", Backoff: []time.Duration{10 * time.Millisecond}}
	b := events.Subscription{Group: "b", Backoff: []time.Duration{10 * time.Millisecond}}
	setup(t, tr, a)
	setup(t, tr, b)
	dlA, dlB := a, b
	dlA.DeadLetters, dlB.DeadLetters = true, true

	eventstest.Subscribe(t, tr, a, func(context.Context, events.Delivery) error {
		return fmt.Errorf("a cannot: %w", events.ErrPermanent)
	})
	eventstest.Subscribe(t, tr, b, func(_ context.Context, d events.Delivery) error {
		if d.ID == "A-k-0" {
			return fmt.Errorf("b cannot: %w", events.ErrPermanent)
		}
		return nil
	})
	deadB := newRecorder()
	eventstest.Subscribe(t, tr, dlB, func(_ context.Context, d events.Delivery) error {
		deadB.add("b", d)
		return nil
	})
	publishKeys(t, tr, []string{"k"}, 0, 1)
	deadB.waitFor(t, "b's dead letter", func() bool { return deadB.distinct() >= 1 })
	// b's dead letter for A-k-0 is written; a's for A-k-1 comes after it
	// on the same dead-letter partition.
	publishKeys(t, tr, []string{"k"}, 1, 1)

	deadA := newRecorder()
	eventstest.Subscribe(t, tr, dlA, func(_ context.Context, d events.Delivery) error {
		deadA.add("a", d)
		return nil
	})
	deadA.waitFor(t, "a's second dead letter", func() bool {
		got, _ := deadA.snapshot()
		for _, d := range got {
			if d.ID == "A-k-1" {
				return true
			}
		}
		return false
	})

	check := func(got []events.Delivery, group string, want map[string]bool) {
		t.Helper()
		seen := map[string]bool{}
		for _, d := range got {
			seen[d.ID] = true
			if g := d.Header[events.HeaderGroup]; g != group {
				t.Errorf("%s's dead letter %s: %s = %q, want %q", group, d.ID, events.HeaderGroup, g, group)
			}
			if e, want := d.Header[events.HeaderError], group+" cannot: "+events.ErrPermanent.Error(); e != want {
				t.Errorf("%s's dead letter %s: %s = %q, want %q", group, d.ID, events.HeaderError, e, want)
			}
			if n := d.Header[events.HeaderAttempts]; n != "1" {
				t.Errorf("%s's dead letter %s: %s = %q, want 1", group, d.ID, events.HeaderAttempts, n)
			}
			if d.Key != "k" || d.Type != "A" || string(d.Data) != d.ID {
				t.Errorf("%s's dead letter %s: Key, Type, Data = %q, %q, %q, want k, A, %q", group, d.ID, d.Key, d.Type, d.Data, d.ID)
			}
		}
		for id := range want {
			if !seen[id] {
				t.Errorf("%s's dead letters lack %s", group, id)
			}
		}
		for id := range seen {
			if !want[id] {
				t.Errorf("%s's dead letters have %s, want only %v", group, id, want)
			}
		}
	}
	gotA, _ := deadA.snapshot()
	check(gotA, "a", map[string]bool{"A-k-0": true, "A-k-1": true})
	gotB, _ := deadB.snapshot()
	check(gotB, "b", map[string]bool{"A-k-0": true})
}

// TestSetupKeepsPosition calls Setup again after a publish: the message
// published between the two calls is still delivered.
func TestSetupKeepsPosition(t *testing.T) {
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	sub := events.Subscription{Group: "twice"}
	setup(t, tr, sub)
	publishKeys(t, tr, []string{"k"}, 0, 1)
	setup(t, tr, sub)
	publishKeys(t, tr, []string{"k"}, 1, 1)
	rec := newRecorder()
	eventstest.Subscribe(t, tr, sub, func(_ context.Context, d events.Delivery) error {
		rec.add("", d)
		return nil
	})
	rec.waitFor(t, "both messages", func() bool { return rec.distinct() >= 2 })
}

// TestHeadersRoundTrip checks that a message arrives as published.
func TestHeadersRoundTrip(t *testing.T) {
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	sub := events.Subscription{Group: "headers"}
	setup(t, tr, sub)
	want := events.Message{
		ID:     "id-1",
		Type:   "switchboard.events.v1.OrderPlaced",
		Key:    "order-7",
		Data:   []byte{0, 1, 2, 0xff},
		Header: map[string]string{"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Empty": ""},
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := tr.Publish(ctx, want); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	rec := newRecorder()
	eventstest.Subscribe(t, tr, sub, func(_ context.Context, d events.Delivery) error {
		rec.add("", d)
		return nil
	})
	rec.waitFor(t, "the message", func() bool { return rec.distinct() >= 1 })
	got, _ := rec.snapshot()
	d := got[0]
	if d.ID != want.ID || d.Type != want.Type || d.Key != want.Key || string(d.Data) != string(want.Data) {
		t.Errorf("delivered %q %q %q %x, want %q %q %q %x", d.ID, d.Type, d.Key, d.Data, want.ID, want.Type, want.Key, want.Data)
	}
	if len(d.Header) != len(want.Header) {
		t.Errorf("Header = %v, want %v", d.Header, want.Header)
	}
	for k, v := range want.Header {
		if g, ok := d.Header[k]; !ok || g != v {
			t.Errorf("Header[%q] = %q, %v, want %q", k, g, ok, v)
		}
	}
}

// TestClose ends a running subscription and refuses calls after.
func TestClose(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	tr, err := kafkabus.New(ctx, options(t, c))
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	sub := events.Subscription{Group: "closing"}
	setup(t, tr, sub)
	publishKeys(t, tr, []string{"k"}, 0, 1)
	handled := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- tr.Subscribe(ctx, sub, func(context.Context, events.Delivery) error {
			select {
			case handled <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	select {
	case <-handled:
	case <-time.After(wait):
		t.Fatal("no delivery")
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Subscribe() after Close = %v, want nil", err)
		}
	default:
		t.Error("Close returned before Subscribe")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	for name, err := range map[string]error{
		"Publish":   tr.Publish(ctx, msg("k", 9)),
		"Setup":     tr.Setup(ctx, sub),
		"Subscribe": tr.Subscribe(ctx, sub, func(context.Context, events.Delivery) error { return nil }),
	} {
		if !errors.Is(err, kafkabus.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestNewInvalidOptions(t *testing.T) {
	long := make([]byte, 246)
	for i := range long {
		long[i] = 'a'
	}
	base := kafkabus.Options{Brokers: []string{"127.0.0.1:1"}}
	tests := []struct {
		name   string
		modify func(*kafkabus.Options)
	}{
		{"no brokers", func(o *kafkabus.Options) { o.Brokers = nil }},
		{"topic with a slash", func(o *kafkabus.Options) { o.Topic = "a/b" }},
		{"topic dot", func(o *kafkabus.Options) { o.Topic = "." }},
		{"topic too long for its dead letters", func(o *kafkabus.Options) { o.Topic = string(long) }},
		{"negative partitions", func(o *kafkabus.Options) { o.Partitions = -1 }},
		{"replication factor below -1", func(o *kafkabus.Options) { o.ReplicationFactor = -2 }},
		{"negative timeout", func(o *kafkabus.Options) { o.CommitTimeout = -time.Second }},
		{"heartbeat not under session timeout", func(o *kafkabus.Options) { o.HeartbeatInterval = time.Minute }},
		{"produce timeout under a second", func(o *kafkabus.Options) { o.ProduceTimeout = time.Millisecond }},
		{"linger over a minute", func(o *kafkabus.Options) { o.Linger = time.Hour }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := base
			tc.modify(&opts)
			tr, err := kafkabus.New(t.Context(), opts)
			if err == nil {
				_ = tr.Close()
				t.Fatalf("New(%s) = nil error, want one", tc.name)
			}
		})
	}
}

func TestSubscribeInvalid(t *testing.T) {
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	ok := func(context.Context, events.Delivery) error { return nil }
	tests := []struct {
		name string
		sub  events.Subscription
		h    events.Handler
	}{
		{"no group", events.Subscription{}, ok},
		{"no handler", events.Subscription{Group: "g"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tr.Subscribe(t.Context(), tc.sub, tc.h); err == nil {
				t.Errorf("Subscribe(%s) = nil, want an error", tc.name)
			}
		})
	}
}

// TestFailedAttempts checks kinds of failure that are retried like a
// returned error.
func TestFailedAttempts(t *testing.T) {
	tests := []struct {
		name  string
		first func(ctx context.Context) error // the first attempt
		// wantCtxErr, if set, is how the first attempt's context must end.
		wantCtxErr error
	}{
		{name: "error", first: func(context.Context) error { return errors.New("transient") }},
		{name: "panic", first: func(context.Context) error { panic("handler bug") }},
		{name: "AckWait", first: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}, wantCtxErr: context.DeadlineExceeded},
	}
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub := events.Subscription{
				Group:   "failed-" + tc.name,
				AckWait: 200 * time.Millisecond,
				Backoff: []time.Duration{10 * time.Millisecond},
			}
			setup(t, tr, sub)
			publishKeys(t, tr, []string{"k" + strconv.Itoa(i)}, 0, 1)
			rec := newRecorder()
			ctxErr := make(chan error, 1)
			eventstest.Subscribe(t, tr, sub, func(ctx context.Context, d events.Delivery) error {
				if d.Attempt == 1 {
					defer func() {
						select {
						case ctxErr <- ctx.Err():
						default:
						}
					}()
					return tc.first(ctx)
				}
				rec.add("", d)
				return nil
			})
			rec.waitFor(t, "the second attempt", func() bool { return rec.distinct() >= 1 })
			got, _ := rec.snapshot()
			if got[0].Attempt != 2 {
				t.Errorf("succeeded at Attempt %d, want 2", got[0].Attempt)
			}
			if err := <-ctxErr; tc.wantCtxErr != nil && !errors.Is(err, tc.wantCtxErr) {
				t.Errorf("first attempt's context ended with %v, want %v", err, tc.wantCtxErr)
			}
		})
	}
}

// TestDeadLetterFailingAgain has a dead-letter handler fail: the dead
// letter goes back to the dead-letter topic and comes round again.
func TestDeadLetterFailingAgain(t *testing.T) {
	c := startCluster(t)
	tr := newTransport(t, options(t, c))
	sub := events.Subscription{Group: "again", Backoff: []time.Duration{10 * time.Millisecond}}
	dl := sub
	dl.DeadLetters = true
	setup(t, tr, sub)
	eventstest.Subscribe(t, tr, sub, func(context.Context, events.Delivery) error {
		return fmt.Errorf("live: %w", events.ErrPermanent)
	})
	publishKeys(t, tr, []string{"k"}, 0, 1)

	var calls atomic.Int64
	rec := newRecorder()
	eventstest.Subscribe(t, tr, dl, func(_ context.Context, d events.Delivery) error {
		if calls.Add(1) == 1 {
			return fmt.Errorf("dead: %w", events.ErrPermanent)
		}
		rec.add("", d)
		return nil
	})
	rec.waitFor(t, "the dead letter's second round", func() bool { return rec.distinct() >= 1 })
	got, _ := rec.snapshot()
	d := got[0]
	if d.ID != "A-k-0" || string(d.Data) != "A-k-0" {
		t.Errorf("dead letter = %s (%q), want A-k-0", d.ID, d.Data)
	}
	want := map[string]string{
		events.HeaderError:    "dead: " + events.ErrPermanent.Error(),
		events.HeaderAttempts: "1",
		events.HeaderGroup:    "again",
	}
	for k, v := range want {
		if d.Header[k] != v {
			t.Errorf("dead letter %s = %q, want %q", k, d.Header[k], v)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("dead-letter handler called %d times, want 2", n)
	}
}
