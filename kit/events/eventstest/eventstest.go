// Package eventstest is the contract every events.Transport must keep.
// Each transport's tests call Run with a factory for fresh, isolated
// transports (their own stream, topic or queue prefix), so the brokers
// cannot drift apart in what they promise.
package eventstest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// Factory returns a new transport for one test. Transports from one
// factory call share a namespace: a second call within the same test
// reaches the same broker state (used to check durability across
// reconnects). The factory registers cleanup with t.
type Factory func(t *testing.T) events.Transport

// Wait bounds every wait in the suite.
const Wait = 30 * time.Second

// Run runs the contract suite. newNamespace is called once per subtest
// and returns a Factory bound to a fresh namespace.
func Run(t *testing.T, newNamespace func(t *testing.T) Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f Factory)
	}{
		{"PublishedBeforeSubscribeAfterSetup", testSetupKeepsMessages},
		{"OrderPerKey", testOrderPerKey},
		{"GroupsEachGetEverything", testGroups},
		{"TypeFilter", testTypeFilter},
		{"RetryBeforeLaterSameKey", testRetry},
		{"DeadLetterAfterMaxDeliver", testDeadLetter},
		{"PermanentDeadLettersAtOnce", testPermanent},
		{"UnackedRedeliveredToNextSubscriber", testRedelivery},
		{"AckedNotRedelivered", testAckedNotRedelivered},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newNamespace(t)) })
	}
}

func msg(typ, key string, n int) events.Message {
	id := fmt.Sprintf("%s-%s-%d", typ, key, n)
	return events.Message{ID: id, Type: typ, Key: key, Data: []byte(id)}
}

func publish(t *testing.T, tr events.Transport, msgs ...events.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Wait)
	defer cancel()
	for _, m := range msgs {
		if err := tr.Publish(ctx, m); err != nil {
			t.Fatalf("Publish(%s) = %v", m.ID, err)
		}
	}
}

func setup(t *testing.T, tr events.Transport, sub events.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Wait)
	defer cancel()
	if err := tr.Setup(ctx, sub); err != nil {
		t.Fatalf("Setup(%s) = %v", sub.Group, err)
	}
}

// Collector records deliveries and lets a test wait for them. Its Handle
// is safe for concurrent use.
type Collector struct {
	mu    sync.Mutex
	got   []events.Delivery
	cond  chan struct{}
	after func(d events.Delivery) error
}

// NewCollector returns a Collector whose Handle calls after (when not
// nil) and returns its error.
func NewCollector(after func(d events.Delivery) error) *Collector {
	return &Collector{cond: make(chan struct{}, 1), after: after}
}

// Handle records d; it is an events.Handler.
func (c *Collector) Handle(_ context.Context, d events.Delivery) error {
	var err error
	if c.after != nil {
		err = c.after(d)
	}
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
	select {
	case c.cond <- struct{}{}:
	default:
	}
	return err
}

// Snapshot returns the deliveries so far.
func (c *Collector) Snapshot() []events.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]events.Delivery(nil), c.got...)
}

// WaitFor waits until pred holds over the deliveries so far, failing
// the test after Wait.
func (c *Collector) WaitFor(t *testing.T, what string, pred func([]events.Delivery) bool) []events.Delivery {
	t.Helper()
	deadline := time.NewTimer(Wait)
	defer deadline.Stop()
	for {
		got := c.Snapshot()
		if pred(got) {
			return got
		}
		select {
		case <-c.cond:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("waiting for %s: timed out after %v with %d deliveries", what, Wait, len(got))
		}
	}
}

// Subscribe runs tr.Subscribe in the background until the test ends or the
// returned stop is called; stop waits for Subscribe to return.
func Subscribe(t *testing.T, tr events.Transport, sub events.Subscription, h events.Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Subscribe(ctx, sub, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Subscribe(%s) = %v, want nil after cancel", sub.Group, err)
				}
			case <-time.After(Wait):
				t.Errorf("Subscribe(%s) did not return %v after cancel", sub.Group, Wait)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func ids(ds []events.Delivery) map[string]int {
	m := map[string]int{}
	for _, d := range ds {
		m[d.ID]++
	}
	return m
}

func countAtLeast(n int) func([]events.Delivery) bool {
	return func(ds []events.Delivery) bool { return len(ids(ds)) >= n }
}

func testSetupKeepsMessages(t *testing.T, f Factory) {
	tr := f(t)
	sub := events.Subscription{Group: "early"}
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1), msg("A", "k", 2))
	c := NewCollector(nil)
	Subscribe(t, tr, sub, c.Handle)
	got := c.WaitFor(t, "2 messages published before Subscribe", countAtLeast(2))
	for _, d := range got {
		if string(d.Data) != d.ID {
			t.Errorf("delivery %s: Data = %q, want %q", d.ID, d.Data, d.ID)
		}
		if d.Type != "A" || d.Key != "k" {
			t.Errorf("delivery %s: Type, Key = %q, %q, want A, k", d.ID, d.Type, d.Key)
		}
	}
}

func testOrderPerKey(t *testing.T, f Factory) {
	tr := f(t)
	sub := events.Subscription{Group: "order"}
	setup(t, tr, sub)
	const keys, perKey = 5, 20
	var all []events.Message
	for i := range perKey {
		for k := range keys {
			all = append(all, msg("A", "key"+strconv.Itoa(k), i))
		}
	}
	publish(t, tr, all...)
	c := NewCollector(nil)
	Subscribe(t, tr, sub, c.Handle)
	got := c.WaitFor(t, "all messages", countAtLeast(keys*perKey))
	checkOrder(t, got)
	for _, d := range got {
		if d.Attempt != 1 {
			t.Errorf("delivery %s: Attempt = %d, want 1", d.ID, d.Attempt)
		}
	}
}

// checkOrder checks that per key, first deliveries come in publish order.
func checkOrder(t *testing.T, got []events.Delivery) {
	t.Helper()
	last := map[string]int{}
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		i := strings.LastIndexByte(d.ID, '-')
		n, err := strconv.Atoi(d.ID[i+1:])
		if err != nil {
			t.Fatalf("delivery with foreign id %q", d.ID)
		}
		if prev, ok := last[d.Key]; ok && n < prev {
			t.Errorf("key %s: %s delivered after #%d", d.Key, d.ID, prev)
		}
		last[d.Key] = n
	}
}

func testGroups(t *testing.T, f Factory) {
	tr := f(t)
	a, b := events.Subscription{Group: "a"}, events.Subscription{Group: "b"}
	setup(t, tr, a)
	setup(t, tr, b)
	publish(t, tr, msg("A", "k", 1), msg("B", "k", 2), msg("A", "j", 3))
	ca, cb := NewCollector(nil), NewCollector(nil)
	Subscribe(t, tr, a, ca.Handle)
	Subscribe(t, tr, b, cb.Handle)
	ca.WaitFor(t, "group a", countAtLeast(3))
	cb.WaitFor(t, "group b", countAtLeast(3))
}

func testTypeFilter(t *testing.T, f Factory) {
	tr := f(t)
	sub := events.Subscription{Group: "filtered", Types: []string{"B"}}
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1), msg("B", "k", 2), msg("A", "k", 3), msg("B", "k", 4))
	c := NewCollector(nil)
	Subscribe(t, tr, sub, c.Handle)
	c.WaitFor(t, "both B messages", countAtLeast(2))
	// A message published after the B ones shows the A ones were skipped,
	// not merely slow.
	publish(t, tr, msg("B", "k", 5))
	got := c.WaitFor(t, "the third B message", countAtLeast(3))
	for _, d := range got {
		if d.Type != "B" {
			t.Errorf("group filtered on B got %s of type %s", d.ID, d.Type)
		}
	}
}

func fastRetry(group string, maxDeliver int) events.Subscription {
	return events.Subscription{
		Group:      group,
		MaxDeliver: maxDeliver,
		Backoff:    []time.Duration{20 * time.Millisecond, 50 * time.Millisecond},
	}
}

func testRetry(t *testing.T, f Factory) {
	tr := f(t)
	sub := fastRetry("retry", 5)
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1), msg("A", "k", 2))
	var mu sync.Mutex
	failures := 0
	c := NewCollector(func(d events.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if d.ID == "A-k-1" && failures < 2 {
			failures++
			return errors.New("transient")
		}
		return nil
	})
	Subscribe(t, tr, sub, c.Handle)
	got := c.WaitFor(t, "both messages acknowledged", func(ds []events.Delivery) bool {
		for _, d := range ds {
			if d.ID == "A-k-2" {
				return true
			}
		}
		return false
	})
	var attempts []int
	for _, d := range got {
		if d.ID == "A-k-1" {
			attempts = append(attempts, d.Attempt)
		}
		if d.ID == "A-k-2" && len(attempts) != 3 {
			t.Errorf("A-k-2 delivered after %d deliveries of A-k-1, want 3 (retries come before later messages of the key)", len(attempts))
		}
	}
	for i, a := range attempts {
		if a != i+1 {
			t.Errorf("A-k-1 delivery %d has Attempt %d, want %d", i+1, a, i+1)
		}
	}
}

func testDeadLetter(t *testing.T, f Factory) {
	tr := f(t)
	sub := fastRetry("poison", 3)
	dl := sub
	dl.DeadLetters = true
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1), msg("A", "k", 2))
	c := NewCollector(func(d events.Delivery) error {
		if d.ID == "A-k-1" {
			return errors.New("cannot handle A-k-1")
		}
		return nil
	})
	Subscribe(t, tr, sub, c.Handle)
	got := c.WaitFor(t, "the message after the poison one", func(ds []events.Delivery) bool {
		return ids(ds)["A-k-2"] > 0
	})
	if n := ids(got)["A-k-1"]; n != 3 {
		t.Errorf("poison message handled %d times, want MaxDeliver = 3", n)
	}
	dead := NewCollector(nil)
	Subscribe(t, tr, dl, dead.Handle)
	dls := dead.WaitFor(t, "the dead letter", countAtLeast(1))
	d := dls[0]
	if d.ID != "A-k-1" || string(d.Data) != "A-k-1" {
		t.Errorf("dead letter = %s (%q), want A-k-1", d.ID, d.Data)
	}
	if got := d.Header[events.HeaderError]; got != "cannot handle A-k-1" {
		t.Errorf("dead letter %s = %q, want the handler's error", events.HeaderError, got)
	}
	if got := d.Header[events.HeaderAttempts]; got != "3" {
		t.Errorf("dead letter %s = %q, want 3", events.HeaderAttempts, got)
	}
	if got := d.Header[events.HeaderGroup]; got != "poison" {
		t.Errorf("dead letter %s = %q, want poison", events.HeaderGroup, got)
	}
}

func testPermanent(t *testing.T, f Factory) {
	tr := f(t)
	sub := fastRetry("permanent", 5)
	dl := sub
	dl.DeadLetters = true
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1))
	c := NewCollector(func(events.Delivery) error {
		return fmt.Errorf("decode: %w", events.ErrPermanent)
	})
	Subscribe(t, tr, sub, c.Handle)
	dead := NewCollector(nil)
	Subscribe(t, tr, dl, dead.Handle)
	dead.WaitFor(t, "the dead letter", countAtLeast(1))
	if n := len(c.Snapshot()); n != 1 {
		t.Errorf("permanent failure handled %d times, want 1", n)
	}
}

func testRedelivery(t *testing.T, f Factory) {
	tr := f(t)
	sub := events.Subscription{Group: "crash", AckWait: 2 * time.Second, Backoff: []time.Duration{20 * time.Millisecond}}
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1))
	// The first subscriber dies while handling: its context ends and the
	// handler returns without success.
	entered := make(chan struct{})
	var once sync.Once
	stop := Subscribe(t, tr, sub, func(ctx context.Context, _ events.Delivery) error {
		once.Do(func() { close(entered) })
		<-ctx.Done()
		return ctx.Err()
	})
	select {
	case <-entered:
	case <-time.After(Wait):
		t.Fatal("first subscriber got nothing")
	}
	stop()
	tr2 := f(t)
	c := NewCollector(nil)
	Subscribe(t, tr2, sub, c.Handle)
	got := c.WaitFor(t, "redelivery to the second subscriber", countAtLeast(1))
	if got[0].ID != "A-k-1" {
		t.Errorf("redelivered %s, want A-k-1", got[0].ID)
	}
}

func testAckedNotRedelivered(t *testing.T, f Factory) {
	tr := f(t)
	sub := events.Subscription{Group: "acked"}
	setup(t, tr, sub)
	publish(t, tr, msg("A", "k", 1), msg("A", "k", 2))
	c := NewCollector(nil)
	stop := Subscribe(t, tr, sub, c.Handle)
	c.WaitFor(t, "first two", countAtLeast(2))
	stop()
	tr2 := f(t)
	publish(t, tr2, msg("A", "k", 3))
	c2 := NewCollector(nil)
	Subscribe(t, tr2, sub, c2.Handle)
	got := c2.WaitFor(t, "the third", func(ds []events.Delivery) bool { return ids(ds)["A-k-3"] > 0 })
	for id := range ids(got) {
		if id != "A-k-3" {
			t.Errorf("second subscriber got %s, which the first acknowledged", id)
		}
	}
}
